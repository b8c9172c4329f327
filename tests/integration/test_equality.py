"""The stream equals the batch reference, exactly: simulated history, replayed through real Kafka.

The commands are the real `kpimon` entry points, as a user runs them: simulate -> replay -> worker(s)
-> kpis, compared with `kpimon reference` on the same files by the contract's rule (KPIS.md).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from agents.kpi_metrics import CI_HIGH, CI_LOW, KPI_METRICS
from reference.compare import compare, parse_records
from streams.output import OUTPUT_KPIS, KpiRecord, day_name, day_number
from tests.helpers import KPIMON, free_port
from tests.workers import WorkerProcess, running_worker

# The pipeline replays ~311,000 messages: minutes on a shared 2-core machine.
pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(1800)]

USERS, DAYS, SEED = 3000, 75, 11
LATENESS = DAYS + 15  # a backfill: the whole history is within the lateness bound


#: Every (kpi, window) of the output table of KPIS.md.
ALL_KPIS = {(kpi, window) for kpi, windows in OUTPUT_KPIS.items() for window in windows}


def kpimon(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([KPIMON, *args], capture_output=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, list[KpiRecord]]]:
    """Simulated files and the reference's records for them (computed once for the module)."""
    out = tmp_path_factory.mktemp("history")
    now = str(int(time.time() * 1000))
    kpimon(
        "simulate",
        "--users",
        str(USERS),
        "--days",
        str(DAYS),
        "--seed",
        str(SEED),
        "--now",
        now,
        # Every user carries signup_ts (KPIS.md: without it, an event's stage depends on arrival order).
        "--no-signup-fraction",
        "0",
        "--out-dir",
        str(out),
    )
    clicks, surveys = out / "clicks.jsonl", out / "surveys.jsonl"
    kpimon(
        "reference",
        "--clicks",
        str(clicks),
        "--surveys",
        str(surveys),
        "--now",
        now,
        "--max-lateness-days",
        str(LATENESS),
        "--out",
        str(out / "reference.jsonl"),
    )
    yield clicks, surveys, parse_records((out / "reference.jsonl").read_bytes())


def line_count(*paths: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in paths)


def processed(workers: list[WorkerProcess]) -> float:
    total = 0.0
    for worker in workers:
        for (name, _), value in worker.samples().items():
            if name == "kpimon_events_total":
                total += value
    return total


def read_kpis(bootstrap: str, prefix: str, tmp: Path) -> list[KpiRecord]:
    out = tmp / "kpis.jsonl"
    kpimon("kpis", "--broker", bootstrap, "--topic-prefix", prefix, "--out", str(out))
    return parse_records(out.read_bytes())


def wait_for_equality(
    bootstrap: str, prefix: str, tmp: Path, expected: list[KpiRecord], timeout: float
) -> list[KpiRecord]:
    """Poll kpimon-kpis until it equals the reference; fail with the differences after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        actual = read_kpis(bootstrap, prefix, tmp)
        differences = compare(expected, actual)
        if not differences:
            return actual
        if time.monotonic() > deadline:
            shown = "\n".join(differences[:40])
            raise AssertionError(f"{len(differences)} differences between reference and stream:\n{shown}")
        time.sleep(3)


def run_pipeline(
    bootstrap: str,
    prefix: str,
    tmp: Path,
    history: tuple[Path, Path, list[KpiRecord]],
    workers: int,
    partitions: int,
    store: str = "memory",
) -> tuple[list[KpiRecord], list[WorkerProcess]]:
    clicks, surveys, expected = history
    extra = ["--partitions", str(partitions), "--max-lateness-days", str(LATENESS), "--store", store]
    with ExitStack() as stack:
        procs = [
            stack.enter_context(running_worker(bootstrap, prefix, free_port(), tmp / f"w{i}", extra))
            for i in range(workers)
        ]
        kpimon(
            "replay",
            "--clicks",
            str(clicks),
            "--surveys",
            str(surveys),
            "--broker",
            bootstrap,
            "--topic-prefix",
            prefix,
            "--partitions",
            str(partitions),
            "--quiet",
        )
        total = line_count(clicks, surveys)
        deadline = time.monotonic() + 900
        while processed(procs) < total:
            assert time.monotonic() < deadline, f"processed {processed(procs)} of {total}"
            for proc in procs:
                assert proc.proc.poll() is None, proc.log_tail()
            time.sleep(2)
        assert processed(procs) == total  # every message counted exactly once across the workers
        actual = wait_for_equality(bootstrap, prefix, tmp, expected, timeout=180)
        check_gauges(procs, actual)
        return actual, procs


def check_gauges(workers: list[WorkerProcess], records: list[KpiRecord]) -> None:
    """Each global series is exported by exactly one worker and equals the kpimon-kpis value of its day."""
    current = max(day_number(r.day) for r in records)
    days = {day_name(current): "current", day_name(current - 1): "previous"}
    expected: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for record in records:
        spec = KPI_METRICS.get(record.kpi)
        if spec is None or record.day not in days:
            continue
        labels = {
            "window": record.window,
            "day": days[record.day],
            "dimension": record.dimension,
            "segment": record.segment,
        }
        if record.value is not None:  # an undefined value has no series
            expected[(spec.metric, frozenset({**labels, **dict(spec.extra_labels)}.items()))] = float(
                record.value
            )
        if record.ci_low is not None and record.ci_high is not None:
            bounds = {**labels, "kpi": record.kpi}
            expected[(CI_LOW.metric, frozenset(bounds.items()))] = record.ci_low
            expected[(CI_HIGH.metric, frozenset(bounds.items()))] = record.ci_high
    assert expected, "no record of the current or previous day"
    metrics = {spec.metric for spec in KPI_METRICS.values()} | {CI_LOW.metric, CI_HIGH.metric}
    seen: dict[tuple[str, frozenset[tuple[str, str]]], list[float]] = {}
    for worker in workers:
        for (name, labels), value in worker.samples().items():
            if name in metrics:
                seen.setdefault((name, labels), []).append(value)
    duplicated = {k: v for k, v in seen.items() if len(v) != 1}
    assert not duplicated, f"series exported by more than one worker: {list(duplicated)[:5]}"
    assert set(seen) == set(expected), (
        f"missing: {sorted(set(expected) - set(seen))[:5]}, extra: {sorted(set(seen) - set(expected))[:5]}"
    )
    wrong = {k: (seen[k][0], v) for k, v in expected.items() if abs(seen[k][0] - v) > 1e-9}
    assert not wrong, f"gauge != kpimon-kpis: {list(wrong.items())[:5]}"


def test_two_workers_on_four_partitions_equal_the_reference(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, history: tuple[Path, Path, list[KpiRecord]]
) -> None:
    records, _ = run_pipeline(kafka_bootstrap, unique_prefix, tmp_path, history, workers=2, partitions=4)
    # The comparison covered every KPI of the contract, in every dimension.
    assert {(r.kpi, r.window) for r in records} == ALL_KPIS
    assert {r.dimension for r in records} == {"all", "platform", "plan", "stage"}
    assert any(r.ci_low is not None for r in records if r.kpi == "nps")
    # The simulator makes `team` satisfied but not promoting, and `android` the other way round.
    last = max(r.day for r in records)
    value = {(r.kpi, r.segment): r.value for r in records if r.day == last and r.window == "30d"}
    assert value[("csat", "team")] > value[("csat", "all")]
    assert value[("nps", "team")] < value[("nps", "all")]
    assert value[("csat", "android")] < value[("csat", "all")]
    assert value[("nps", "android")] > value[("nps", "all")]


def test_one_worker_on_one_partition_gives_the_same_output(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, history: tuple[Path, Path, list[KpiRecord]]
) -> None:
    """Also the RocksDB table store: the state lives on disk, the output is the same."""
    run_pipeline(kafka_bootstrap, unique_prefix, tmp_path, history, workers=1, partitions=1, store="rocksdb")
