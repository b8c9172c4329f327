"""The benchmark suite's pure helpers: rates, ratios, percentiles, delay matching, target verdicts, report,
the Faust children's progress counting and the candidates table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import parse_args
from bench.child import Progress, read_status
from bench.faust_variants import VARIANTS
from bench.stats import (
    StageResult,
    Target,
    TimeSplit,
    crossing_delays,
    extrapolate,
    parse_schedstat,
    percentile,
    rate,
    ratio,
    time_split,
)
from bench.worker import gauge_value, sample_value


def test_rate_and_ratio_are_none_when_unknown() -> None:
    assert rate(1000, 2.0) == 500
    assert rate(0, 2.0) is None
    assert rate(10, 0.0) is None
    assert ratio(30.0, 10.0) == 3
    assert ratio(None, 10.0) is None
    assert ratio(3.0, 0.0) is None


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),
        ([float(i) for i in range(1, 101)], 99, 99.01),
        ([1.0, 2.0, math.inf], 99, math.inf),
        ([1.0, math.inf, math.inf], 99, math.inf),
    ],
)
def test_percentile_interpolates_between_closest_ranks(
    values: list[float], q: float, expected: float
) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_and_bad_q() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)


def test_crossing_delays_match_the_ith_event_to_the_first_count_above_it() -> None:
    sent = [0.0, 0.1, 0.2, 0.3]
    # counter was 10 before; it shows 11 at 0.5, 13 at 0.7, never 14
    observations = [(0.05, 10.0), (0.5, 11.0), (0.7, 13.0)]
    delays = crossing_delays(sent, observations, baseline=10)
    assert delays[0] == pytest.approx(0.5)
    assert delays[1] == pytest.approx(0.6)
    assert delays[2] == pytest.approx(0.5)
    assert delays[3] is None


def test_targets_verdicts() -> None:
    assert Target("rate", 150_000, 100_000).verdict == "MET"
    assert Target("rate", 2_500, 100_000).verdict == "NOT MET"
    assert Target("p99", 1.5, 2.0, at_least=False).verdict == "MET"
    assert Target("p99", math.inf, 2.0, at_least=False).verdict == "NOT MET"
    assert Target("p99", None, 2.0, at_least=False).verdict == "UNKNOWN"


def test_partial_memory_figures_only_fail() -> None:
    assert Target("rss", 500, 400, at_least=False, partial=True).verdict == "NOT MET"
    assert Target("rss", 300, 400, at_least=False, partial=True).verdict == "UNKNOWN (partial run)"
    assert extrapolate(100.0, 150.0, 100, 1000) == pytest.approx(600.0)
    assert extrapolate(100.0, 150.0, 0, 1000) is None


def test_gauge_value_reads_one_exposition_line() -> None:
    text = (
        "# HELP kpimon_active_users x\n"
        'kpimon_active_users{window="7d",day="current",dimension="all",segment="all"} 9.0\n'
        'kpimon_active_users{day="current",dimension="all",segment="all",window="1d"} 42.0\n'
        'kpimon_active_users{day="current",dimension="plan",segment="free",window="1d"} 40.0\n'
    )
    assert gauge_value(text) == 42.0
    assert gauge_value(text, dimension="plan", segment="free", day="current", window="1d") == 40.0
    assert gauge_value("# nothing\n") is None
    assert (
        sample_value("kpimon_reader_held_max_seconds 0.25\nx 1\n", "kpimon_reader_held_max_seconds") == 0.25
    )
    assert sample_value(text, "kpimon_reader_held_max_seconds") is None


def test_report_shows_rates_ratios_and_targets() -> None:
    results = {
        "ceiling": StageResult.from_count("ceiling", 1_000_000, 4.0),
        "naive": StageResult.from_count("naive", 60_000, 200.0, complete=False, note="capped"),
        "quix": StageResult.from_count("quix", 1_000_000, 100.0),
        "kpimon": StageResult.from_count("kpimon", 1_000_000, 400.0),
        "kpimon2": StageResult.from_count("kpimon2", 1_000_000, 500.0),
        "ceiling-plain": StageResult.from_count("ceiling-plain", 1_000_000, 2.0),
        "ceiling-changing": StageResult.from_count("ceiling-changing", 1_000_000, 10.0),
        "kpimon-changing": StageResult.from_count("kpimon-changing", 1_000_000, 12.5),
        "rss": StageResult(
            "rss", figures={"peak_rss_bytes": [350_000_000], "state_users": 10, "state_bytes": 800}
        ),
        "delay": StageResult("delay", 100, 10.0, figures={"p50_s": 0.4, "p99_s": 2.5, "offered_rate": 10}),
    }
    results["rss"].figures.update(store="rocksdb", changelog="x-user-state-changelog")
    results["ceiling"].figures["cpu_seconds"] = 2.0
    results["kpimon"].figures["cpu_seconds"] = 100.0
    results["kpimon"].figures.update(reader_held_max_s=0.062, reader_held_total_s=12.5)
    results["kpimon-changing"].figures.update(reader_held_max_s=0.25, reader_held_total_s=3.0)
    assert report.cpu_ratios(results)["kpimon/ceiling"] == pytest.approx(0.02)
    assert report.cpu_ratios(results)["kpimon/naive"] is None
    assert report.ratios(results)["kpimon/ceiling"] == pytest.approx(0.01)
    assert report.ratios(results)["kpimon/naive"] == pytest.approx(25 / 3)
    verdicts = {t.name: t.verdict for t in report.targets(results)}
    assert verdicts == {
        "kpimon events/s per worker process": "NOT MET",
        "kpimon/ceiling (the lower of wall and per CPU second)": "NOT MET",
        "kpimon/naive": "NOT MET",
        "kpimon/quix (whole KPI set over the peer's DAU alone)": "NOT MET",
        "state-changing mix: kpimon events/s per worker process": "MET",
        "peak RSS, many users (MB)": "MET",
        "p99 end-to-end delay (s)": "NOT MET",
        "batch path: compiled core / Python engine, the slower mix (identical results)": "UNKNOWN",
        "longest wait of the input for flush/publish, both mixes (s)": "NOT MET",
        "two workers over one worker (events/s; faster: > 1)": "NOT MET",  # 2,000/s against 2,500/s
    }
    text = report.render(results, {"when": "today", "machine": "m", "data_sets": {}})
    assert "250,000" in text  # the ceiling's events/s
    assert "500,000" in text  # its events per CPU second
    assert "80.0 bytes/user" in text
    assert "kpimon/naive = 8.333" in text
    assert "longest wait 0.062 s, all waits 12.5 s of 400.0 s" in text
    assert "peer: Quix Streams" in text and "kpimon/quix = 0.250" in text
    assert "state-changing mix: kpimon, 1 worker" in text and "changing: kpimon/ceiling = 0.800" in text
    assert "ceiling-plain/ceiling = 2.000" in text  # what building ConsumerRecords costs
    assert text.count("NOT MET") == 7
    assert report.to_json(results, {})["targets"][5]["verdict"] == "MET"


def test_parse_schedstat_reads_on_cpu_and_waiting_nanoseconds() -> None:
    assert parse_schedstat("1500000000 250000000 42\n") == (1.5, 0.25)
    with pytest.raises(ValueError, match="schedstat"):
        parse_schedstat("")


def test_time_split_divides_by_the_wall_seconds() -> None:
    split = time_split(
        {"wall_seconds": 10.0, "cpu_seconds": 4.0, "loop_cpu_seconds": 3.0, "loop_wait_seconds": 1.0}
    )
    assert split.process_busy == pytest.approx(0.4)
    assert split.loop_busy == pytest.approx(0.3)
    assert split.loop_waiting == pytest.approx(0.1)
    assert split.loop_asleep == pytest.approx(0.6)
    # No schedstat (loop seconds 0): only the process figure; nothing timed: nothing known.
    assert time_split({"wall_seconds": 2.0, "cpu_seconds": 1.0}) == TimeSplit(process_busy=0.5)
    assert time_split({"cpu_seconds": 1.0}) == TimeSplit()
    # Sampling skew never gives a negative sleep.
    over = time_split({"wall_seconds": 1.0, "loop_cpu_seconds": 0.9, "loop_wait_seconds": 0.2})
    assert over.loop_asleep == 0.0


def test_progress_counts_batches_and_leaves_the_first_delivery_untimed(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    progress = Progress(expected=2500, path=status)
    assert not progress.add(0)
    assert not progress.add(1000)
    assert progress.untimed == 1000
    progress.write()
    assert read_status(status)["count"] == 1000
    assert not read_status(status)["done"]
    assert progress.add(1000) is False
    assert progress.add(1000) is True  # past the expected count: done, once
    assert progress.add(10) is False
    written = read_status(status)
    assert written["done"]
    assert written["untimed"] == 1000
    assert {"cpu", "wall", "loop_cpu", "loop_wait"} <= set(written)
    # Frozen at done: later status writes (the timer's) report the same seconds.
    assert progress.measured() is progress.measured()


def test_progress_ticks_leave_one_message_untimed(tmp_path: Path) -> None:
    progress = Progress(expected=2, path=tmp_path / "status.json")
    assert not progress.tick()
    assert progress.tick()
    assert progress.untimed == 1
    assert read_status(tmp_path / "status.json")["count"] == 2


def test_candidates_stage_is_chosen_by_default_and_alone() -> None:
    assert "candidates" in parse_args([]).stages
    assert parse_args(["--quick", "--only", "candidates"]).stages == ["candidates"]
    assert [v for v in report.CANDIDATES if v != "bare"] == list(VARIANTS)
    assert report.candidate_key("bare") == "bare"
    assert report.candidate_key("take") == "candidate-take"


def test_candidates_rows_are_ratios_to_bare() -> None:
    bare = StageResult.from_count("bare", 10_000, 2.0)  # 5,000/s
    bare.figures.update(
        cpu_seconds=1.0, wall_seconds=2.0, loop_cpu_seconds=0.8, loop_wait_seconds=0.2
    )  # 10,000/CPU-s
    take = StageResult.from_count("candidate-take", 10_000, 1.0)  # 10,000/s
    take.figures.update(cpu_seconds=0.5, wall_seconds=1.0)  # 20,000/CPU-s
    assert report.candidates({"bare": bare}) == []  # bare alone is no side-by-side
    rows = report.candidates({"bare": bare, "candidate-take": take})
    assert [r["variant"] for r in rows] == ["bare", "take"]
    assert rows[0]["rate_over_bare"] == pytest.approx(1.0)
    assert rows[1]["rate_over_bare"] == pytest.approx(2.0)
    assert rows[1]["cpu_rate_over_bare"] == pytest.approx(2.0)
    assert rows[0]["loop_asleep"] == pytest.approx(0.5)
    assert rows[1]["loop_busy"] is None
    text = report.render({"bare": bare, "candidate-take": take}, {"data_sets": {}})
    assert "3 stream.take(1000, within=1)" in text
    assert "2.00" in text
    assert "0.50 CPU-s per wall-s" in text
    assert "on a CPU 40% of the wall time, runnable but waiting for a CPU 10%" in text
    assert "asleep 50%" in text
    assert report.to_json({"bare": bare, "candidate-take": take}, {})["candidates"][1]["variant"] == "take"


@pytest.mark.parametrize(
    ("ts", "day"),
    [
        (1_795_500_000_000, 1_795_500_000_000 // 86_400_000),
        ("2026-11-24T00:00:00Z", 20_781),
        ("2026-11-23T23:59:59.999Z", 20_780),
        ("2026-11-24T01:30:00+02:00", 20_780),  # 23:30 UTC the day before
        ("2026-11-23T22:30:00-02:00", 20_781),
    ],
)
def test_the_quix_peer_finds_the_utc_day_of_both_timestamp_forms(ts: object, day: int) -> None:
    from bench.quix_dau import event_day

    assert event_day(ts) == day


def test_the_quix_peer_writes_its_progress_and_stops_counting_at_the_expected(tmp_path: Path) -> None:
    from bench.quix_dau import Ticker

    progress = Progress(3, tmp_path / "status.json")
    tick = Ticker(progress)
    for _ in range(3):
        tick({})
    status = read_status(tmp_path / "status.json")
    assert status["count"] == 3 and status["done"]


def test_the_batch_target_takes_the_slower_mix_and_needs_identical_results() -> None:
    batch = StageResult("batch", 10, 1.0)
    batch.figures = {
        "repeat": {"ratio": 7.5, "digests_equal": True},
        "changing": {"ratio": 6.5, "digests_equal": True},
    }
    assert report.batch_ratio(batch) == 6.5
    batch.figures["changing"]["digests_equal"] = False
    assert report.batch_ratio(batch) == 0.0
    batch.figures["changing"]["ratio"] = None
    assert report.batch_ratio(batch) is None


def test_the_reader_waits_are_counted_with_those_over_a_tenth_of_a_second() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bench.kpimon_run import reader_held
    from kpimon.agents.pipeline.metrics import PipelineMetrics

    texts = []
    for waits in ((0.01, 0.2, 0.05), (0.3, 0.09)):
        registry = CollectorRegistry()
        metrics = PipelineMetrics(registry, topics=("clicks", "surveys"))
        for seconds in waits:
            metrics.reader_held(seconds)
        texts.append(generate_latest(registry).decode())
    figures = reader_held(texts)  # two workers: the longest of both, the waits of both
    assert figures["reader_held_max_s"] == 0.3
    assert figures["reader_held_waits"] == 5
    assert figures["reader_held_over_100ms"] == 2
