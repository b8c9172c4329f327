"""The alert back-test's own logic (monitoring/backtest.py): `for:` semantics, rule levels, what to export."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from monitoring.backtest import (
    EVAL_S,
    RULES_DIR,
    AlertRule,
    DayFile,
    RuleFiles,
    episodes,
    seconds,
    write_rules,
)
from monitoring.config import DEFAULT


def alert(for_s: int) -> AlertRule:
    return AlertRule("A", "g", "x > 1", for_s, "warning")


def test_durations() -> None:
    assert seconds("90s") == 90
    assert seconds("1h30m") == 5400
    assert seconds("0s") == 0
    with pytest.raises(ValueError, match="not a duration"):
        seconds("1 h")


def test_a_condition_held_between_steps_opens_once_it_held_for_its_duration() -> None:
    hour = 3600
    # Seen at 0 and 1 h (hourly KPI snapshots): holds from 0 to the last evaluation before 2 h.
    seen = {"s": [0, hour]}
    (opened,) = episodes(alert(hour), seen, hour)
    assert (opened.start, opened.end) == (hour, 2 * hour)
    # One snapshot holds 59 minutes of evaluations: a 1 h `for` never opens, a 30 min one does.
    assert episodes(alert(hour), {"s": [0]}, hour) == []
    (short,) = episodes(alert(1800), {"s": [0]}, hour)
    assert short.start == 1800
    # A gap of one step ends a run: two runs, two episodes.
    assert len(episodes(alert(0), {"s": [0, hour, 3 * hour]}, hour)) == 2


def test_keep_firing_for_joins_runs_into_one_episode_and_delays_its_end() -> None:
    hour = 3600
    sticky = AlertRule("A", "g", "x > 1", hour, "warning", keep_s=12 * hour)
    # Runs at 0-1 h and 10-11 h: the second starts 8 h after the first evaluation without the condition
    # (2 h), within 12 h: one episode, ending 12 h after the last evaluation without it (12 h).
    (joined,) = episodes(sticky, {"s": [0, hour, 10 * hour]}, hour)
    assert (joined.start, joined.end) == (hour, 11 * hour + 12 * hour)
    # 12 h or more later: a second episode, which must hold its `for` again (a one-step run does not).
    apart = episodes(sticky, {"s": [0, hour, 14 * hour, 15 * hour]}, hour)
    assert [(e.start, e.end) for e in apart] == [(hour, 14 * hour), (15 * hour, 28 * hour)]
    assert len(episodes(sticky, {"s": [0, hour, 14 * hour]}, hour)) == 1
    # Without keep_firing_for the first case is two episodes.
    assert len(episodes(alert(hour), {"s": [0, hour, 10 * hour, 11 * hour]}, hour)) == 2


def test_inlined_pipeline_records_are_their_expressions() -> None:
    rules = RuleFiles.load(RULES_DIR)
    inlined = rules.inlined({"kpimon-pipeline.rules"})
    by_name = {a.name: a.expr for a in inlined.alerts}
    # Read as a plain instant vector: replaced by its expression, down to the exported counters.
    assert "ratio_rate5m" not in by_name["KpimonDeadLetterRatioHigh"]
    assert "rate(kpimon_dead_letters_total" in by_name["KpimonDeadLetterRatioHigh"]
    # Read with a range ([15m]) or matchers: stays a record.
    assert "topic:kpimon_consumer_lag_messages:sum" in by_name["KpimonConsumerLagGrowing"]
    assert "job:kpimon_last_snapshot_timestamp_seconds:max{" in by_name["KpimonSnapshotStale"]
    # No pipeline record left for the modelled alerts: nothing to backfill every minute.
    assert not {r for r in inlined.needed_records() if "kpimon_dead_letters" in r or "events" in r}
    assert [a.name for a in inlined.alerts] == [a.name for a in rules.alerts]


def test_at_the_evaluation_interval_for_needs_that_many_evaluations() -> None:
    run = [i * EVAL_S for i in range(10)]  # 10 evaluations: held for 9 minutes
    assert episodes(alert(9 * EVAL_S), {"s": run}, EVAL_S)
    assert not episodes(alert(10 * EVAL_S), {"s": run}, EVAL_S)


def test_recording_rules_come_in_levels_after_the_records_they_read() -> None:
    rules = RuleFiles.load(RULES_DIR)
    for group in rules.recording:
        done: set[str] = set()
        for level in rules.levels(group):
            for rule in level:
                reads = {r["record"] for r in rules.recording[group] if r["record"] in rule["expr"]}
                assert reads - {rule["record"]} <= done, rule["record"]
            done |= {rule["record"] for rule in level}
    kpis = rules.levels("kpimon-kpis.rules")
    assert any("delta7d" in rule["record"] for rule in kpis[1])


def test_only_the_metrics_the_alerts_read_are_exported() -> None:
    raw = RuleFiles.load(RULES_DIR).raw_metrics()
    assert {"kpimon_nps_score", "kpimon_kpi_target", "kpimon_events", "kpimon_active_users"} <= raw
    assert "kpimon_lifecycle_users" not in raw  # recorded, but no alert reads it
    needed = RuleFiles.load(RULES_DIR).needed_records()
    assert "dimension_segment:kpimon_nps_score:delta7d" in needed
    assert "dimension_segment:kpimon_lifecycle_users:max" not in needed


def test_a_day_file_is_openmetrics_with_families_together(tmp_path: Path) -> None:
    day = DayFile()
    day.add("b", "gauge", "b", 'x="1"', 10, 1.0)
    day.add("a", "counter", "a_total", 'x="1"', 10, 2.0)
    day.add("b", "gauge", "b", 'x="1"', 20, "NaN")
    assert day.write(tmp_path / "d.om") == 3
    assert (tmp_path / "d.om").read_text() == (
        '# TYPE a counter\na_total{x="1"} 2.0 10\n# TYPE b gauge\nb{x="1"} 1.0 10\nb{x="1"} NaN 20\n# EOF\n'
    )


def test_rules_for_another_selector_come_from_the_generator(tmp_path: Path) -> None:
    write_rules(DEFAULT, tmp_path / "default")
    for path in sorted(RULES_DIR.glob("*.yaml")):
        assert (tmp_path / "default" / path.name).read_text() == path.read_text()
    write_rules(replace(DEFAULT, kpi_alert_selector='dimension=~".+"'), tmp_path / "segments")
    alerts = RuleFiles.load(tmp_path / "segments").alerts
    assert any('dimension=~".+"' in alert.expr for alert in alerts)
