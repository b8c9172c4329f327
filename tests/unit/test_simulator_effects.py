"""The simulator's engagement x satisfaction effects and their scenarios, seen the way a user sees them:
through the KPIs that `kpimon reference` computes from the simulated files (issue #17).

- always on: engaged respondents answer more often and more favourably; detractors churn more than
  promoters;
- `retention-drop:ios`: ios cohorts of the last 14 days hardly come back (D1 and D7 retention);
- `detractor-churn:all`: detractors who answered in the last 14 days leave.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kpimon.reference.compute import run_reference
from kpimon.simulator.cli import write_files
from kpimon.simulator.model import (
    DAY_MS,
    DETRACTOR_CHURN_DAYS,
    RETENTION_DROP_DAYS,
    BatchConfig,
    Scenario,
    batch_traffic,
)
from kpimon.simulator.render import render
from kpimon.streams.output import KpiRecord, day_number
from kpimon.streams.validation import Policy

pytestmark = pytest.mark.slow

NOW_MS = 1_795_000_000_000 // DAY_MS * DAY_MS + 20 * 3_600_000  # 20:00 UTC
END_DAY = NOW_MS // DAY_MS
DAYS = 35
CONFIG = BatchConfig(users=2000, days=DAYS, end_day=END_DAY, now_ms=NOW_MS, seed=17)

Records = dict[tuple[str, str, str, str, int], KpiRecord]


def simulate_kpis(tmp: Path, config: BatchConfig) -> Records:
    write_files(((out.draft.topic, render(out.draft)) for out in batch_traffic(config)), tmp)
    files = {"clicks": tmp / "clicks.jsonl", "surveys": tmp / "surveys.jsonl"}
    result = run_reference(files["clicks"], files["surveys"], NOW_MS, Policy(max_lateness_days=DAYS + 5))
    return {(r.kpi, r.window, r.dimension, r.segment, day_number(r.day)): r for r in result.records}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Records:
    return simulate_kpis(tmp_path_factory.mktemp("plain"), CONFIG)


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Records:
    both = (Scenario.parse("retention-drop:ios"), Scenario.parse("detractor-churn:all"))
    return simulate_kpis(tmp_path_factory.mktemp("scenarios"), replace(CONFIG, scenarios=both))


def pooled(records: Records, kpi: str, window: str, dimension: str, segment: str, days: range) -> float:
    """Numerator / denominator of a ratio KPI summed over `days` (cohorts or days)."""
    found = [records.get((kpi, window, dimension, segment, d)) for d in days]
    numerator = sum(r.numerator or 0 for r in found if r is not None)
    denominator = sum(r.denominator or 0 for r in found if r is not None)
    assert denominator > 0, (kpi, window, segment)
    return numerator / denominator


def test_engaged_respondents_answer_more_often_and_more_favourably(plain: Records) -> None:
    def value(kpi: str, level: str) -> float:
        record = plain[kpi, "30d", "engagement", level, END_DAY]
        assert record.value is not None and (record.denominator or 0) >= 20, (kpi, level, record)
        return float(record.value)

    assert value("nps_response_rate", "heavy") > value("nps_response_rate", "light") + 0.1
    assert value("csat_response_rate", "heavy") > value("csat_response_rate", "light") + 0.1
    assert value("nps", "heavy") > value("nps", "light") + 10
    assert value("csat", "heavy") > value("csat", "light")


def test_detractors_churn_more_than_promoters(plain: Records) -> None:
    days = range(END_DAY - 20, END_DAY + 1)
    detractors = pooled(plain, "churn_rate", "7d", "nps_group", "detractor", days)
    promoters = pooled(plain, "churn_rate", "7d", "nps_group", "promoter", days)
    assert detractors > promoters * 1.3, (detractors, promoters)


def test_retention_drop_hits_the_segments_new_cohorts_only(plain: Records, scenarios: Records) -> None:
    cohorts = range(END_DAY - RETENTION_DROP_DAYS + 1, END_DAY - 7 + 1)  # in the period, D7 matured
    before = range(END_DAY - DAYS + 8, END_DAY - RETENTION_DROP_DAYS - 7)
    for window in ("1d", "7d"):
        dropped = pooled(scenarios, "retention_rate", window, "platform", "ios", cohorts)
        # Users of the segment signing up on another of their platforms keep their habits: not quite 0.
        assert dropped < 0.05, (window, dropped)
        assert pooled(plain, "retention_rate", window, "platform", "ios", cohorts) > 0.1
        assert pooled(scenarios, "retention_rate", window, "platform", "android", cohorts) > 0.1
        # Earlier ios cohorts keep their retention.
        assert pooled(scenarios, "retention_rate", window, "platform", "ios", before) > 0.1


def test_detractor_churn_makes_detractors_leave(plain: Records, scenarios: Records) -> None:
    days = range(END_DAY - DETRACTOR_CHURN_DAYS + 8, END_DAY + 1)  # base periods inside the scenario
    detractors = pooled(scenarios, "churn_rate", "7d", "nps_group", "detractor", days)
    promoters = pooled(scenarios, "churn_rate", "7d", "nps_group", "promoter", days)
    assert detractors > 0.6 and promoters < 0.35, (detractors, promoters)
    assert pooled(plain, "churn_rate", "7d", "nps_group", "detractor", days) < 0.5
