"""Breach means significant (issue #20): a record's `breach` uses the alert rules' test, `off_target` the
bare comparison; the minimum samples are the alert config's."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from kpimon.streams.records import group_records
from kpimon.streams.targets import MIN_SAMPLE, Target
from kpimon.streams.uncertainty import nps_interval, wilson
from monitoring.config import DEFAULT
from tests.unit.test_records import DAY, by_key, survey_counts


def test_minimum_samples_are_the_alert_rules() -> None:
    assert MIN_SAMPLE["nps"] == MIN_SAMPLE["csat"] == DEFAULT.satisfaction.min_responses
    assert MIN_SAMPLE["churn_rate"] == DEFAULT.churn.min_base_users
    assert MIN_SAMPLE["stickiness"] == DEFAULT.engagement.stickiness_min_mau


def test_an_undefined_value_is_neither() -> None:
    assert Target("churn_rate", "30d", 0.05, "max").judge(None, 0, (None, None)) == (None, None)


def test_one_answer_below_target_is_not_a_breach() -> None:
    """The issue's `NPS 7d +0.0  1  ≥ 30  ▼ BREACH` on one answer."""
    target = Target("nps", "7d", 30.0, "min")
    assert target.judge(0.0, 1, nps_interval(0, 0, 1)) == (True, False)


def test_a_significant_breach_and_one_inside_the_interval() -> None:
    target = Target("nps", "7d", 30.0, "min")
    # 200 answers, 40 promoters and 100 detractors: NPS -30, interval far below 30.
    low, high = nps_interval(40, 100, 200)
    assert high < 30
    assert target.judge(-30.0, 200, (low, high)) == (True, True)
    # 40 answers at NPS 25: below 30, but the interval reaches above it.
    assert target.judge(25.0, 40, nps_interval(14, 4, 40)) == (True, False)


def test_kpis_without_interval_need_only_the_sample() -> None:
    sticky = Target("stickiness", "30d", 0.2, "min")
    assert sticky.judge(0.1, 99, None) == (True, False)
    assert sticky.judge(0.1, 100, None) == (True, True)
    assert sticky.judge(0.3, 100, None) == (False, False)
    users = Target("active_users", "1d", 1000, "min")  # no minimum sample: a count is what it is
    assert users.judge(10, None, None) == (True, True)


@given(
    n=st.integers(0, 400),
    k_share=st.floats(0, 1),
    target=st.floats(0.01, 0.99),
    direction=st.sampled_from(["min", "max"]),
)
def test_proportion_breach_is_the_alert_rule(n: int, k_share: float, target: float, direction: str) -> None:
    """Brute force of the rule for churn_rate (a proportion with a Wilson interval and a minimum base)."""
    k = round(k_share * n)
    value = k / n if n else None
    interval = wilson(k, n)
    off, breach = Target("churn_rate", "30d", target, direction).judge(value, n, interval)
    if value is None:
        assert (off, breach) == (None, None)
        return
    wrong_side = value < target if direction == "min" else value > target
    assert off is wrong_side
    low, high = interval
    assert low is not None and high is not None
    whole_interval = high < target if direction == "min" else low > target
    assert breach is (wrong_side and n >= 100 and whole_interval)
    if breach:
        assert off


def test_records_carry_both_flags() -> None:
    targets = {("nps", "7d"): Target("nps", "7d", 30.0, "min")}
    few = survey_counts("7d", nps_responses=5, nps_detractors=5)
    many = survey_counts("7d", nps_responses=300, nps_detractors=200, nps_promoters=50)
    for counts, expected in ((few, (True, False)), (many, (True, True))):
        nps = by_key(group_records("all", "all", DAY, counts, targets=targets))[("nps", "7d")]
        assert (nps.off_target, nps.breach) == expected  # type: ignore[attr-defined]
        assert nps.ci_high is not None and not math.isnan(nps.ci_high)  # type: ignore[attr-defined]
