"""Global counters -> output records: satisfaction scores, undefined values, intervals, targets."""

from __future__ import annotations

import math

import pytest

from kpimon.streams.records import group_records
from kpimon.streams.targets import Target
from kpimon.streams.uncertainty import Z

DAY = 20_781


def by_key(records: list) -> dict[tuple[str, str], object]:  # type: ignore[type-arg]
    return {(r.kpi, r.window): r for r in records}


def survey_counts(w: str, **counts: int) -> dict[str, int]:
    out = {f"{k}/{w}": v for k, v in counts.items()}
    out["survey_events/30d"] = max(1, sum(counts.values()))
    return out


def test_nps_and_csat_values() -> None:
    counts = survey_counts(
        "7d",
        nps_responses=10,
        nps_promoters=5,
        nps_passives=3,
        nps_detractors=2,
        csat_responses=4,
        csat_satisfied=3,
        csat_score_sum=17,
        nps_shown=20,
    )
    records = by_key(group_records("all", "all", DAY, counts))
    assert records[("nps", "7d")].value == pytest.approx(30.0)  # type: ignore[attr-defined]
    assert (records[("nps", "7d")].numerator, records[("nps", "7d")].denominator) == (3, 10)  # type: ignore[attr-defined]
    assert records[("csat", "7d")].value == pytest.approx(0.75)  # type: ignore[attr-defined]
    assert records[("csat_mean", "7d")].value == pytest.approx(4.25)  # type: ignore[attr-defined]
    assert records[("nps_response_rate", "7d")].value == pytest.approx(0.5)  # type: ignore[attr-defined]
    assert records[("nps_passives", "7d")].value == 3  # type: ignore[attr-defined]


def test_undefined_values_are_null_never_zero() -> None:
    records = by_key(group_records("all", "all", DAY, survey_counts("30d", csat_shown=3)))
    for kpi in ("nps", "csat", "csat_mean", "nps_response_rate"):
        record = records[(kpi, "30d")]
        assert record.value is None, kpi  # type: ignore[attr-defined]
    assert records[("csat_response_rate", "30d")].value == 0  # type: ignore[attr-defined]
    assert records[("nps", "30d")].ci_low is None  # type: ignore[attr-defined]


def test_a_segment_with_high_csat_and_low_nps() -> None:
    counts = survey_counts(
        "7d",
        nps_responses=10,
        nps_promoters=1,
        nps_detractors=8,
        nps_passives=1,
        csat_responses=10,
        csat_satisfied=9,
        csat_score_sum=45,
    )
    records = by_key(group_records("plan", "team", DAY, counts))
    assert records[("nps", "7d")].value == pytest.approx(-70.0)  # type: ignore[attr-defined]
    assert records[("csat", "7d")].value == pytest.approx(0.9)  # type: ignore[attr-defined]


def test_intervals_follow_the_formulas() -> None:
    counts = survey_counts(
        "7d",
        nps_responses=100,
        nps_promoters=50,
        nps_detractors=20,
        nps_passives=30,
        csat_responses=40,
        csat_satisfied=30,
        csat_score_sum=150,
    )
    records = by_key(group_records("all", "all", DAY, counts))
    # Adjusted Wald: n' = 103, a = 50.75 / 103, b = 20.75 / 103, centred on 100 (a - b), not on NPS 30.
    n = 103
    a, b = 50.75 / n, 20.75 / n
    half = 100 * Z * math.sqrt((a + b - (a - b) ** 2) / n)
    centre = 100 * (a - b)
    nps = records[("nps", "7d")]
    assert (nps.ci_low, nps.ci_high) == pytest.approx((centre - half, centre + half))  # type: ignore[attr-defined]
    p, n = 0.75, 40
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    width = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n * n)) / (1 + Z**2 / n)
    csat = records[("csat", "7d")]
    assert (csat.ci_low, csat.ci_high) == pytest.approx((centre - width, centre + width))  # type: ignore[attr-defined]


def test_a_response_rate_above_one_has_no_interval() -> None:
    records = by_key(
        group_records("all", "all", DAY, survey_counts("7d", nps_responses=3, nps_promoters=3, nps_shown=2))
    )
    rate = records[("nps_response_rate", "7d")]
    assert rate.value == pytest.approx(1.5)  # type: ignore[attr-defined]
    assert (rate.ci_low, rate.ci_high) == (None, None)  # type: ignore[attr-defined]


def test_targets_are_carried_with_a_breach_flag() -> None:
    targets = {
        ("nps", "7d"): Target("nps", "7d", 30.0, "min"),
        ("csat", "7d"): Target("csat", "7d", 0.5, "min"),
    }
    counts = survey_counts(
        "7d",
        nps_responses=10,
        nps_promoters=2,
        nps_passives=8,
        csat_responses=2,
        csat_satisfied=2,
        csat_score_sum=10,
    )
    records = by_key(group_records("all", "all", DAY, counts, targets=targets))
    nps, csat = records[("nps", "7d")], records[("csat", "7d")]
    # NPS 20 on 10 answers: below the target of 30, but 10 answers are fewer than the 30 a breach needs.
    assert (nps.target, nps.target_direction) == (30.0, "min")  # type: ignore[attr-defined]
    assert (nps.off_target, nps.breach) == (True, False)  # type: ignore[attr-defined]
    assert (csat.off_target, csat.breach) == (False, False)  # type: ignore[attr-defined]
    assert records[("nps", "30d")].target is None  # type: ignore[attr-defined]


def test_engagement_records_exist_only_with_activity_in_60_days() -> None:
    assert group_records("all", "all", DAY, {"active_users/30d": 0, "churn_base/30d": 0}) == []
    records = by_key(
        group_records("all", "all", DAY, {"active_users/30d": 0, "churn_base/30d": 4, "churned/30d": 4})
    )
    assert records[("churn_rate", "30d")].value == 1.0  # type: ignore[attr-defined]
    assert records[("stickiness", "30d")].value is None  # type: ignore[attr-defined]  # MAU 0: undefined
    assert ("nps", "7d") not in records


# Retention (kept on the day d a cohort is observed, published under its cohort day d - k) and churn by
# NPS group (kept in the all/all group, published as dimension nps_group).


def test_retention_records_carry_the_cohort_day_and_exist_when_its_engagement_record_does() -> None:
    counts = {
        "active_users/30d": 5,
        "lifecycle_new/1d": 3,
        "matured_cohort/7d": 4,
        "retained/7d": 1,
        "cohort_present/7d": 6,
        "matured_cohort/30d": 0,
        "retained/30d": 0,
        "cohort_present/30d": 2,  # a cohort day with an engagement record and nobody new: rate undefined
    }
    records = group_records("platform", "ios", DAY, counts)
    by = {(r.kpi, r.window): r for r in records}
    assert by["retention_cohort", "1d"].value == 3 and by["retention_cohort", "1d"].day == "2026-11-24"
    rate = by["retention_rate", "7d"]
    assert (rate.day, rate.value, rate.numerator, rate.denominator) == ("2026-11-17", 0.25, 1, 4)
    assert rate.ci_low is not None and rate.ci_low < 0.25 < rate.ci_high  # type: ignore[operator]
    assert by["retained", "7d"].value == 1 and by["retained", "7d"].day == "2026-11-17"
    empty = by["retention_rate", "30d"]
    assert (empty.day, empty.value, empty.ci_low, empty.ci_high) == ("2026-10-25", None, None, None)
    assert by["retained", "30d"].value == 0
    assert ("retention_rate", "1d") not in by  # cohort day d - 1 has no engagement record
    assert not any(r.kpi.startswith("retention") for r in group_records("stage", "onboarding", DAY, counts))


def test_churn_by_nps_group_exists_with_the_all_engagement_record_and_none_is_the_rest() -> None:
    counts = {
        "active_users/30d": 50,
        "churn_base/7d": 20,
        "churned/7d": 6,
        "churn_base:promoter/7d": 8,
        "churned:promoter/7d": 1,
        "churn_base:detractor/7d": 4,
        "churned:detractor/7d": 3,
    }
    records = group_records("all", "all", DAY, counts)
    groups = {(r.kpi, r.window, r.segment): r for r in records if r.dimension == "nps_group"}
    assert groups["churn_base", "7d", "promoter"].value == 8
    assert groups["churn_rate", "7d", "detractor"].value == 0.75
    assert groups["churn_base", "7d", "passive"].value == 0
    assert (groups["churn_base", "7d", "none"].value, groups["churned", "7d", "none"].value) == (8, 2)
    assert groups["churn_base", "30d", "none"].value == 0
    assert {segment for _, _, segment in groups} == {"promoter", "passive", "detractor", "none"}
    assert not any(r.dimension == "nps_group" for r in group_records("platform", "ios", DAY, counts))
    assert group_records("all", "all", DAY, {"churn_base:promoter/7d": 0}) == []


def test_an_engagement_level_emptied_by_a_late_click_keeps_its_records_with_zeros() -> None:
    # The level's own survey counters are 0 (its surveys moved to another level), the four levels'
    # common counter says surveys exist: every satisfaction record, zeros and undefined scores.
    records = group_records("engagement", "none", DAY, {"any_level_survey_events/30d": 3})
    by = by_key(records)
    assert len(records) == 30
    assert by["nps_responses", "7d"].value == 0  # type: ignore[attr-defined]
    assert by["csat", "30d"].value is None  # type: ignore[attr-defined]
    assert group_records("engagement", "none", DAY, {"survey_events/30d": 3}) == []
