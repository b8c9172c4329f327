"""`kpimon history` (issue #20): the recorded series the dashboards read, stamped with their day.

The real load into Prometheus is tests/integration/test_history_prometheus.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from kpimon.agents.cli.history import MAX_BLOCK_DURATION, run_promtool
from kpimon.agents.exporter.history import history_series, openmetrics_lines, sample_count
from kpimon.streams.output import KpiRecord, day_name, day_number

D = day_number("2026-11-10")


def rec(kpi: str, window: str, day: int, value: float | None, **fields: object) -> KpiRecord:
    return KpiRecord(
        kpi=kpi, window=window, dimension="all", segment="all", day=day_name(day), value=value, **fields
    )  # type: ignore[arg-type]


def test_current_on_its_day_previous_on_the_next_within_the_range() -> None:
    records = [rec("active_users", "1d", D + i, 100 + i) for i in range(-1, 4)]
    series = history_series(records, D, D + 2)
    dau = series["kpimon_active_users"]
    current = dau[("1d", "current", "all", "all")]
    previous = dau[("1d", "previous", "all", "all")]
    assert current == {D: 100, D + 1: 101, D + 2: 102}  # D + 3 is after the range
    assert previous == {D: 99, D + 1: 100, D + 2: 101}  # D - 1's value is "previous" on D


def test_undefined_values_and_targets_are_left_out_intervals_kept() -> None:
    records = [
        rec("stickiness", "30d", D, None, numerator=0, denominator=0),
        rec("nps", "7d", D, 12.5, ci_low=-3.0, ci_high=28.0, target=30.0, target_direction="min"),
    ]
    series = history_series(records, D, D)
    assert "kpimon_stickiness_ratio" not in series
    assert "kpimon_kpi_target" not in series
    assert series["kpimon_kpi_ci_low"] == {("nps", "7d", "current", "all", "all"): {D: -3.0}}


def test_openmetrics_is_valid_and_holds_each_value_over_its_day() -> None:
    records = [
        rec("nps", "7d", D, 12.5, ci_low=-3.0, ci_high=28.0),
        rec("nps", "7d", D + 1, 0.1 + 0.2),
        rec("lifecycle_new", "1d", D, 7),
    ]
    series = history_series(records, D, D + 1)
    text = "\n".join(openmetrics_lines(series, 21_600)) + "\n"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {
        "dimension_segment:kpimon_nps_score:max",
        "dimension_segment:kpimon_kpi_ci_low:max",
        "dimension_segment:kpimon_kpi_ci_high:max",
        "dimension_segment:kpimon_lifecycle_users:max",
    }
    samples = [s for f in families.values() for s in f.samples]
    assert len(samples) == sample_count(series, 21_600) == 4 * 9  # 9 series-days (5 current), 4 samples a day
    nps = [
        s for s in families["dimension_segment:kpimon_nps_score:max"].samples if s.labels["day"] == "current"
    ]
    assert [(float(s.timestamp), s.value) for s in nps] == [
        (D * 86_400 + h * 3_600, 12.5) for h in (0, 6, 12, 18)
    ] + [((D + 1) * 86_400 + h * 3_600, 0.1 + 0.2) for h in (0, 6, 12, 18)]  # repr: exact round trip
    new = families["dimension_segment:kpimon_lifecycle_users:max"].samples[0]
    assert new.labels == {
        "status": "new",
        "window": "1d",
        "day": "current",
        "dimension": "all",
        "segment": "all",
    }


def test_the_step_must_divide_a_day() -> None:
    with pytest.raises(ValueError, match="divide a day"):
        list(openmetrics_lines({}, 7_000))
    assert list(openmetrics_lines({}, 3_600)) == ["# EOF"]


def fake_promtool(tmp_path: Path, knows_block_option: bool) -> tuple[Path, Path]:
    """A promtool stand-in that logs its arguments; one without the option refuses it, as promtool does."""
    log = tmp_path / "calls.log"
    script = tmp_path / "promtool"
    refuse = (
        'case "$*" in *--max-block-duration*)'
        " echo \"unknown long flag '--max-block-duration'\" >&2; exit 1;; esac\n"
    )
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n{"" if knows_block_option else refuse}exit 0\n')
    script.chmod(0o755)
    return script, log


@pytest.mark.parametrize("knows_block_option", [True, False])
def test_promtool_makes_day_long_blocks_when_it_knows_the_option(
    tmp_path: Path, knows_block_option: bool
) -> None:
    promtool, log = fake_promtool(tmp_path, knows_block_option)
    days = [tmp_path / f"{day_name(D + i)}.om" for i in range(3)]
    run_promtool(days, tmp_path / "tsdb", str(promtool), show_progress=False)
    calls = [call.split() for call in log.read_text().splitlines()]
    if knows_block_option:
        assert all(MAX_BLOCK_DURATION in call for call in calls)
    else:  # refused once, then promtool's default blocks for every file
        assert MAX_BLOCK_DURATION in calls[0]
        calls = calls[1:]
        assert all(MAX_BLOCK_DURATION not in call for call in calls)
    # One run per day file, in order, into the data directory.
    assert [call[-2:] for call in calls] == [[str(day), str(tmp_path / "tsdb")] for day in days]
