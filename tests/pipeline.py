"""End-to-end pipeline pieces shared by the equality and reliability tests.

A simulated history is written to files (`kpimon simulate`), computed in batch (`kpimon reference`),
replayed through real Kafka (`kpimon replay`) to real `kpimon worker` processes, and the published
`kpimon-kpis` are compared with the reference by the contract's rule (reference/compare.py).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from kpimon.agents.exporter.kpi_collector import CI_HIGH, CI_LOW, COHORT, KPI_METRICS, gauge_day
from kpimon.reference.compare import compare, parse_records
from kpimon.streams.output import KpiRecord, day_number, decode
from tests.helpers import KPIMON, poll
from tests.workers import WorkerProcess

Series = tuple[str, frozenset[tuple[str, str]]]

#: Every metric name of a global KPI series (the ones exactly one worker may export).
KPI_SERIES_METRICS = frozenset(
    {spec.metric for spec in KPI_METRICS.values()} | {CI_LOW.metric, CI_HIGH.metric, COHORT.metric}
)


def kpimon(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    """Run the real `kpimon` command; fail with its stderr unless it exits 0."""
    result = subprocess.run([KPIMON, *args], capture_output=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result


@dataclass(frozen=True)
class History:
    """Simulated input files and the reference's records for them."""

    clicks: Path
    surveys: Path
    expected: list[KpiRecord]
    lateness: int
    #: Lines the reference rejected: the dead letters a worker writes for this history.
    rejected: int = 0

    @property
    def messages(self) -> int:
        """Lines (messages) in both files."""
        return line_count(self.clicks, self.surveys)


#: The simulated week of the reliability and cluster tests (test_reliability.py, test_cluster.py; one
#: session fixture, tests/integration/conftest.py): about 12,500 messages, invalid lines, duplicates and
#: late events included, seconds of work for a worker. A backfill: the whole week is within the lateness
#: bound.
WEEK_USERS, WEEK_DAYS, WEEK_SEED = 1000, 7, 23
WEEK_LATENESS = WEEK_DAYS + 10


def simulate_history(out: Path, users: int, days: int, seed: int, lateness: int) -> History:
    """Simulate `users` over `days` into `out` and compute the reference (lateness bound `lateness`)."""
    now = str(int(time.time() * 1000))
    kpimon(
        "simulate",
        *("--users", str(users), "--days", str(days), "--seed", str(seed), "--now", now),
        # Every user carries signup_ts: without it, an event's stage depends on arrival order
        # (docs/architecture.md, "What is not guaranteed").
        *("--no-signup-fraction", "0", "--out-dir", str(out)),
    )
    clicks, surveys = out / "clicks.jsonl", out / "surveys.jsonl"
    summary = kpimon(
        "reference",
        *("--clicks", str(clicks), "--surveys", str(surveys), "--now", now),
        *("--max-lateness-days", str(lateness), "--out", str(out / "reference.jsonl")),
    ).stderr.decode()
    # "clicks: 12507 accepted, 48 rejected (...)", one line per file.
    rejected = sum(int(n) for n in re.findall(r"^\w+: \d+ accepted, (\d+) rejected", summary, re.MULTILINE))
    expected = parse_records((out / "reference.jsonl").read_bytes())
    return History(clicks, surveys, expected, lateness, rejected)


def replay_args(history: History, bootstrap: str, prefix: str, partitions: int) -> list[str]:
    """The `kpimon replay` command line that sends `history` to the topics prefixed `prefix`."""
    return [
        KPIMON,
        "replay",
        *("--clicks", str(history.clicks), "--surveys", str(history.surveys)),
        *("--broker", bootstrap, "--topic-prefix", prefix, "--partitions", str(partitions), "--quiet"),
    ]


def replay(history: History, bootstrap: str, prefix: str, partitions: int) -> None:
    """Send every line of `history` and wait until Kafka acknowledged them."""
    kpimon(*replay_args(history, bootstrap, prefix, partitions)[1:])


def line_count(*paths: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in paths)


def events_total(worker: WorkerProcess, outcome: str | None = None) -> float:
    """The worker's kpimon_events_total, over all topics, for one outcome or all."""
    return sum(
        value
        for (name, labels), value in worker.samples().items()
        if name == "kpimon_events_total" and (outcome is None or ("outcome", outcome) in labels)
    )


def processed(workers: list[WorkerProcess]) -> float:
    """Input messages processed by `workers` since they started (any outcome)."""
    return sum(events_total(worker) for worker in workers)


def read_kpis(bootstrap: str, prefix: str, tmp: Path) -> list[KpiRecord]:
    """The current content of kpimon-kpis (`kpimon kpis`)."""
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


def kpi_series(worker: WorkerProcess) -> dict[Series, float]:
    """The global KPI series a worker exports right now."""
    return {key: value for key, value in worker.samples().items() if key[0] in KPI_SERIES_METRICS}


def check_gauges(workers: list[WorkerProcess], records: list[KpiRecord]) -> None:
    """Each global series is exported by exactly one worker and equals the kpimon-kpis value of its day."""
    current = max(day_number(r.day) for r in records)
    expected: dict[Series, float] = {}
    for record in records:
        spec = KPI_METRICS.get(record.kpi)
        day = gauge_day(record, current)
        if spec is None or day is None:
            continue
        labels = {
            "window": record.window,
            "day": day,
            "dimension": record.dimension,
            "segment": record.segment,
        }
        if record.value is not None:  # an undefined value has no series
            expected[(spec.metric, frozenset({**labels, **dict(spec.extra_labels)}.items()))] = float(
                record.value
            )
        if record.kpi == "retention_rate" and record.denominator is not None:
            expected[(COHORT.metric, frozenset(labels.items()))] = float(record.denominator)
        if record.ci_low is not None and record.ci_high is not None:
            bounds = {**labels, "kpi": record.kpi}
            expected[(CI_LOW.metric, frozenset(bounds.items()))] = record.ci_low
            expected[(CI_HIGH.metric, frozenset(bounds.items()))] = record.ci_high
    assert expected, "no record of the current or previous day"
    seen: dict[Series, list[float]] = {}
    for worker in workers:
        for key, value in kpi_series(worker).items():
            seen.setdefault(key, []).append(value)
    duplicated = {k: v for k, v in seen.items() if len(v) != 1}
    assert not duplicated, f"series exported by more than one worker: {list(duplicated)[:5]}"
    assert set(seen) == set(expected), (
        f"missing: {sorted(set(expected) - set(seen))[:5]}, extra: {sorted(set(seen) - set(expected))[:5]}"
    )
    wrong = {k: (seen[k][0], v) for k, v in expected.items() if abs(seen[k][0] - v) > 1e-9}
    assert not wrong, f"gauge != kpimon-kpis: {list(wrong.items())[:5]}"


class KpisFollower:
    """Follows kpimon-kpis in a thread from its beginning: every record with the time Kafka stamped it.

    `kpimon kpis` shows the topic's content at one moment; this says when each value arrived, so a test
    can tell how soon after an event the published values were right.
    """

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.topic = f"{prefix}kpimon-kpis"
        #: (Kafka timestamp in seconds, record), in arrival order per partition.
        self.arrivals: list[tuple[float, KpiRecord]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._follow()), daemon=True)
        self._thread.start()

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            partitions: set[int] = set()
            while not self._stop.is_set() and not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic) or set()
                await asyncio.sleep(0.2)
            consumer.assign([TopicPartition(self.topic, p) for p in partitions])
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                arrived = [
                    (message.timestamp / 1000, decode(message.value))
                    for messages in batch.values()
                    for message in messages
                    if message.value is not None
                ]
                with self._lock:
                    self.arrivals.extend(arrived)
        finally:
            await consumer.stop()

    def settled_at(self, expected: list[KpiRecord], days: set[str] | None = None) -> float | None:
        """When kpimon-kpis became equal to `expected` on `days` (every day: None) for good.

        The Kafka timestamp of the arrival that made the last difference disappear; None while the two
        still differ.
        """
        with self._lock:
            arrivals = [(ts, r) for ts, r in self.arrivals if days is None or r.day in days]
        wanted = [r for r in expected if days is None or r.day in days]
        if compare(wanted, [r for _, r in arrivals]):
            return None
        reference = {r.key: r for r in wanted}
        right_since: dict[str, float] = {}  # per key: since when its latest value is right
        for ts, record in arrivals:  # a key's records arrive in order (one partition)
            expected_one = reference.get(record.key)
            if compare([expected_one] if expected_one is not None else [], [record]):
                right_since.pop(record.key, None)
            else:
                right_since.setdefault(record.key, ts)
        return max(right_since.values(), default=0.0)

    def republished(self, since: float, days: set[str]) -> float | None:
        """When every key of `days` had arrived again after `since` (Kafka timestamps); None until then."""
        with self._lock:
            arrivals = [(ts, r.key) for ts, r in self.arrivals if r.day in days]
        first: dict[str, float] = {}
        for ts, key in arrivals:
            if ts >= since:
                first.setdefault(key, ts)
        keys = {key for _, key in arrivals}
        return max(first.values()) if keys and keys <= first.keys() else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def wait_until_followed_equal(
    follower: KpisFollower, bootstrap: str, prefix: str, tmp: Path, expected: list[KpiRecord], timeout: float
) -> tuple[list[KpiRecord], float]:
    """Wait until the follower sees kpimon-kpis equal to `expected`, then check it once with `kpimon kpis`.

    Returns the records `kpimon kpis` read and when kpimon-kpis became equal (Kafka time). Polling the
    follower costs nothing; each `kpimon kpis` is a process of its own (a second of CPU on a loaded
    machine), which slowed the very workers a test was timing. After `timeout` the differences are shown.
    """
    deadline = time.monotonic() + timeout
    settled = follower.settled_at(expected)
    while settled is None and time.monotonic() < deadline:
        time.sleep(1)
        settled = follower.settled_at(expected)
    actual = wait_for_equality(bootstrap, prefix, tmp, expected, 30 if settled is not None else 0)
    if settled is None:  # equal by `kpimon kpis` just now: the follower has it within a poll or two
        settled = poll(lambda: follower.settled_at(expected), lambda t: t is not None, 30)
    assert settled is not None
    return actual, settled
