"""`kpimon reference`: hand-computed engagement and satisfaction KPIs and their 95 % intervals, input
handling, the CLI, the comparison rule, and a brute-force recount of every record from the definitions.

Days in these tests are offsets from BASE (2026-01-01); every event happens at noon UTC of its day.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpimon.reference.cli import parse_instant, reference
from kpimon.reference.compare import compare, latest, parse_records
from kpimon.reference.compute import kpi_scripts, run_reference
from kpimon.reference.load import LoadStats, _append_by_unnest, create_tables, load, message_key, sql_text
from kpimon.streams.events import MS_PER_DAY
from kpimon.streams.output import KpiRecord, day_name, day_number, encode
from kpimon.streams.validation import Policy
from tests import events as factory

BASE = day_number("2026-01-01")
HOUR = 3_600_000
#: The validation clock of most tests: noon of day 100, with a lateness bound reaching back before BASE.
NOW_DAY = 100
POLICY = Policy(max_lateness_days=120)

ENGAGEMENT_KPIS = {
    ("active_users", "1d"),
    ("active_users", "7d"),
    ("active_users", "30d"),
    ("stickiness", "30d"),
    ("lifecycle_new", "1d"),
    ("lifecycle_returning", "1d"),
    ("lifecycle_resurrecting", "1d"),
    ("lifecycle_dormant", "1d"),
    ("churn_base", "7d"),
    ("churned", "7d"),
    ("churn_rate", "7d"),
    ("churn_base", "30d"),
    ("churned", "30d"),
    ("churn_rate", "30d"),
}

SATISFACTION_KPIS = {
    (kpi, window)
    for window in ("7d", "30d")
    for kpi in (
        "nps_responses",
        "nps_promoters",
        "nps_passives",
        "nps_detractors",
        "nps",
        "csat_responses",
        "csat_satisfied",
        "csat",
        "csat_mean",
        "nps_shown",
        "csat_shown",
        "nps_dismissed",
        "csat_dismissed",
        "nps_response_rate",
        "csat_response_rate",
    )
}

#: The 97.5 % normal quantile of docs/definitions.md ("Uncertainty").
Z = 1.959963984540054


# ---------------------------------------------------------------------------------------------- helpers


def ts(day: int, hour: int = 12) -> int:
    """Epoch ms of `hour`:00 UTC on test day `day`."""
    return (BASE + day) * MS_PER_DAY + hour * HOUR


def iso(day: int) -> str:
    """ISO date of test day `day`."""
    return day_name(BASE + day)


def optional(signup: int | None, platform: str | None, plan: str | None) -> dict[str, Any]:
    """The optional fields that are given, `signup` (a test day) as a timestamp."""
    fields = {"signup_ts": None if signup is None else ts(signup, 1), "platform": platform, "plan": plan}
    return {name: value for name, value in fields.items() if value is not None}


def click(
    user: str,
    day: int,
    *,
    signup: int | None = None,
    platform: str | None = None,
    plan: str | None = None,
    type: str = "click",
    at: int | None = None,
) -> str:
    """One clicks message (a JSON line); `signup` is a test day, `at` overrides ts (epoch ms)."""
    at = ts(day) if at is None else at
    return json.dumps(factory.click(user_id=user, ts=at, type=type, **optional(signup, platform, plan)))


def survey(
    user: str,
    day: int,
    *,
    event_id: str | None = None,
    action: str = "answered",
    score: int | None = 9,
    kind: str = "nps",
    signup: int | None = None,
    platform: str | None = None,
    plan: str | None = None,
    hour: int = 12,
) -> str:
    """One surveys message (a JSON line); `score` is sent only with an answer, `signup` is a test day."""
    fields = optional(signup, platform, plan)
    if event_id is not None:
        fields["event_id"] = event_id
    if action == "answered":
        fields["score"] = score
    return json.dumps(factory.survey(user_id=user, ts=ts(day, hour), survey=kind, action=action, **fields))


def shown(user: str, day: int, kind: str = "nps", **fields: Any) -> str:
    """A `shown` survey event."""
    return survey(user, day, action="shown", kind=kind, **fields)


def dismissed(user: str, day: int, kind: str = "nps", **fields: Any) -> str:
    """A `dismissed` survey event."""
    return survey(user, day, action="dismissed", kind=kind, **fields)


def write(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def run(
    tmp_path: Path,
    clicks: Sequence[str],
    surveys: Sequence[str] = (),
    *,
    now_ms: int | None = None,
    policy: Policy = POLICY,
    **options: Any,
) -> dict[str, KpiRecord]:
    """The reference's records by key."""
    result = run_reference(
        write(tmp_path / "clicks.jsonl", clicks),
        write(tmp_path / "surveys.jsonl", surveys),
        ts(NOW_DAY) if now_ms is None else now_ms,
        policy,
        updated_at="2026-01-01T00:00:00Z",
        **options,
    )
    return latest(result.records)


def value(
    records: dict[str, KpiRecord],
    kpi: str,
    window: str,
    day: int,
    dimension: str = "all",
    segment: str = "all",
) -> float | int | None:
    """The value of one record; KeyError when the record does not exist."""
    return records[f"{kpi}/{window}/{dimension}/{segment}/{iso(day)}"].value


def lifecycle(
    records: dict[str, KpiRecord], day: int, dimension: str = "all", segment: str = "all"
) -> tuple[Any, ...]:
    """(new, returning, resurrecting, dormant) on `day`."""
    return tuple(
        value(records, f"lifecycle_{status}", "1d", day, dimension, segment)
        for status in ("new", "returning", "resurrecting", "dormant")
    )


def days_of(
    records: dict[str, KpiRecord],
    dimension: str = "all",
    segment: str = "all",
    kpis: Collection[tuple[str, str]] | None = None,
) -> list[str]:
    """The days that have records for a segment (of the (kpi, window) pairs `kpis`, default any)."""
    return sorted(
        {
            r.day
            for r in records.values()
            if (r.dimension, r.segment) == (dimension, segment)
            and (kpis is None or (r.kpi, r.window) in kpis)
        }
    )


def only(records: dict[str, KpiRecord], kpis: Collection[tuple[str, str]]) -> dict[str, KpiRecord]:
    """The records of the (kpi, window) pairs `kpis`."""
    return {key: r for key, r in records.items() if (r.kpi, r.window) in kpis}


# ---------------------------------------------------------------------------------------------- KPIs


def test_active_users_windows_and_stickiness(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            click("a", 0),
            click("a", 5),
            click("a", 5),  # a repeated click changes nothing
            click("a", 20),
            click("b", 5),
            click("c", 29),
        ],
    )
    expected = {  # day: (1d, 7d, 30d)
        0: (1, 1, 1),
        5: (2, 2, 2),
        6: (0, 2, 2),
        11: (0, 2, 2),
        12: (0, 0, 2),
        20: (1, 1, 2),
        29: (1, 1, 3),
    }
    for day, counts in expected.items():
        assert tuple(value(records, "active_users", w, day) for w in ("1d", "7d", "30d")) == counts, day
    sticky = records[f"stickiness/30d/all/all/{iso(29)}"]
    assert sticky.value == pytest.approx(1 / 3)
    assert (sticky.numerator, sticky.denominator) == (1, 3)
    assert isinstance(sticky.value, float)
    assert isinstance(value(records, "active_users", "1d", 29), int)
    # Counts carry no numerator or denominator.
    assert records[f"active_users/1d/all/all/{iso(29)}"].numerator is None


def test_stickiness_and_churn_rate_are_null_without_a_denominator(tmp_path: Path) -> None:
    records = run(tmp_path, [click("a", 0), click("b", 40)])
    sticky = records[f"stickiness/30d/all/all/{iso(35)}"]  # a is 35 days back: present, not monthly
    assert (sticky.value, sticky.numerator, sticky.denominator) == (None, 0, 0)
    churn = records[f"churn_rate/7d/all/all/{iso(5)}"]  # nobody was active in [-8, -2]: an empty base
    assert (churn.value, churn.numerator, churn.denominator) == (None, 0, 0)
    assert records[f"churn_rate/30d/all/all/{iso(35)}"].value == 1.0  # base [-24, 5]: a, gone since


def test_lifecycle_statuses(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            click("n", 3, signup=3),  # new on its signup day
            click("n", 4, signup=3),  # returning
            click("f", 2),  # no signup_ts: new on its first active day
            click("f", 3),
            click("f", 5),  # resurrecting after a gap
            click("s", 3, signup=0),  # signed up earlier, first seen later: resurrecting, not new
            click("w", 4),
            click("w", 4, signup=4),  # one event with signup day = event day is enough
            click("r", 4, signup=5),  # signup day after the event: not new
            click("r", 5, signup=5),  # new even though active the day before
        ],
        [survey("q", 6)],  # the current day is the newest event day, surveys included
    )
    assert lifecycle(records, 2) == (1, 0, 0, 0)
    assert lifecycle(records, 3) == (1, 1, 1, 0)  # n new; f returning; s resurrecting
    assert lifecycle(records, 4) == (1, 1, 1, 2)  # w new; n returning; r resurrecting; f, s dormant
    assert lifecycle(records, 5) == (1, 0, 1, 2)  # r new; f resurrecting; n, w dormant
    assert lifecycle(records, 6) == (0, 0, 0, 2)  # f, r dormant
    assert iso(100) not in days_of(records)
    assert days_of(records)[-1] == iso(6)


def test_lifecycle_per_segment_uses_user_level_new_days(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [click("g", 1, platform="ios"), click("g", 2, platform="web"), click("g", 3, platform="ios")],
    )
    assert lifecycle(records, 1, "platform", "ios") == (1, 0, 0, 0)
    assert lifecycle(records, 2, "platform", "ios") == (0, 0, 0, 1)
    assert lifecycle(records, 3, "platform", "ios") == (0, 0, 1, 0)
    assert lifecycle(records, 2, "platform", "web") == (0, 0, 1, 0)  # not a new day of the user
    assert lifecycle(records, 3, "platform", "web") == (0, 0, 0, 1)
    assert [lifecycle(records, d) for d in (1, 2, 3)] == [(1, 0, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)]
    assert "2026-01-01" not in days_of(records, "platform", "web")  # web starts on its first active day
    assert days_of(records, "platform", "web")[0] == iso(2)


def churn(records: dict[str, KpiRecord], window: str, day: int) -> tuple[Any, ...]:
    """(base, churned, rate, rate numerator, rate denominator) of the whole population on `day`."""
    rate = records[f"churn_rate/{window}/all/all/{iso(day)}"]
    return (
        value(records, "churn_base", window, day),
        value(records, "churned", window, day),
        rate.value,
        rate.numerator,
        rate.denominator,
    )


def test_churn_7d(tmp_path: Path) -> None:
    records = run(tmp_path, [click("a", 0), click("b", 0), click("b", 10), click("c", 3), click("z", 13)])
    assert churn(records, "7d", 5) == (0, 0, None, 0, 0)  # base [-8, -2] is empty
    assert churn(records, "7d", 7) == (2, 2, 1.0, 2, 2)  # base [-6, 0]: a, b; neither active in [1, 7]
    assert churn(records, "7d", 10) == (3, 2, pytest.approx(2 / 3), 2, 3)  # b is back on 10
    assert churn(records, "7d", 13) == (3, 2, pytest.approx(2 / 3), 2, 3)  # base [0, 6]
    assert churn(records, "7d", 12) == (3, 2, pytest.approx(2 / 3), 2, 3)  # base [-1, 5]


def test_churn_30d(tmp_path: Path) -> None:
    records = run(tmp_path, [click("a", 0), click("b", 0), click("b", 40), click("c", 29), click("z", 59)])
    assert churn(records, "30d", 29) == (0, 0, None, 0, 0)
    assert churn(records, "30d", 30) == (2, 2, 1.0, 2, 2)  # base [-29, 0]: a, b; not active in [1, 30]
    assert churn(records, "30d", 40) == (2, 1, 0.5, 1, 2)  # base [-19, 10]: a, b; b back on 40
    assert churn(records, "30d", 59) == (3, 2, pytest.approx(2 / 3), 2, 3)  # base [0, 29]: a, b, c
    assert churn(records, "30d", 58) == (2, 1, 0.5, 1, 2)  # base [-1, 28]: a, b
    assert churn(records, "7d", 59) == (0, 0, None, 0, 0)


def test_stage_segments(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            click("x", 13, signup=0),  # 13 days after signup: onboarding
            click("x", 14, signup=0),  # 14: established
            click("y", 10),  # no signup_ts: first seen on day 0 (a survey) stands in
            click("y", 20),
            click("z", 2),
            click("z", 25, signup=20),  # the same day in both stages
            click("z", 25),
        ],
        [survey("y", 0)],
    )
    stage = {
        day: tuple(
            record.value if (record := records.get(f"active_users/1d/stage/{segment}/{iso(day)}")) else None
            for segment in ("onboarding", "established")
        )
        for day in (10, 13, 14, 20, 25)
    }
    # No established record before the segment's first active day.
    assert stage == {10: (1, None), 13: (1, None), 14: (0, 1), 20: (0, 1), 25: (1, 1)}
    assert value(records, "active_users", "1d", 2, "stage", "onboarding") == 1  # z's first day


def test_platform_and_plan_unknown(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            click("a", 1, platform="ios", plan="pro"),
            click("b", 1),
            click("c", 1, platform="unknown"),  # the same segment as an absent value
            click("d", 1, platform="web", plan="free"),
        ],
    )
    platforms = {r.segment for r in records.values() if r.dimension == "platform"}
    plans = {r.segment for r in records.values() if r.dimension == "plan"}
    assert platforms == {"ios", "unknown", "web"}
    assert plans == {"pro", "free", "unknown"}
    assert value(records, "active_users", "1d", 1, "platform", "unknown") == 2
    assert value(records, "active_users", "1d", 1, "plan", "unknown") == 2
    assert value(records, "active_users", "1d", 1) == 4
    # Every segment and day has every engagement KPI (and retention_cohort; no cohort has matured yet).
    for dimension, segment in {(r.dimension, r.segment) for r in records.values()}:
        kpis = {
            (r.kpi, r.window) for r in records.values() if (r.dimension, r.segment) == (dimension, segment)
        }
        if dimension == "nps_group":
            assert kpis == {(k, w) for k in ("churn_base", "churned", "churn_rate") for w in ("7d", "30d")}
        else:
            assert kpis == ENGAGEMENT_KPIS | ({("retention_cohort", "1d")} if dimension != "stage" else set())


def test_segment_values_beyond_the_cap_fold_into_other(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            click("a", 1, platform="ios"),
            click("b", 1),
            click("c", 1, platform="web"),
            click("d", 1, platform="tv"),
        ],
        max_segment_values=2,
    )
    platforms = {r.segment for r in records.values() if r.dimension == "platform"}
    assert platforms == {"ios", "web", "unknown", "other"}


def test_personal_segment_values_fold_into_other_and_take_no_place(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            click("a", 1, platform="dave.seg@example.com", plan="cust-0042"),
            click("b", 1, platform="ios", plan="pro"),
            click("c", 1, platform="zed+x@mail.example.org", plan="free"),
            click("d", 1, platform="web"),
            click("e", 1, platform="not@an-address"),  # no dot after the @: not an e-mail address
        ],
        max_segment_values=3,
        personal_pattern=r"^cust-[0-9]+$",
    )
    platforms = {r.segment for r in records.values() if r.dimension == "platform"}
    plans = {r.segment for r in records.values() if r.dimension == "plan"}
    # The two addresses took no place: ios, web and not@an-address are the three kept values.
    assert platforms == {"ios", "web", "not@an-address", "other"}
    assert plans == {"pro", "free", "other", "unknown"}
    assert value(records, "active_users", "1d", 1, "platform", "other") == 2


def test_passive_types_mark_no_activity(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [click("a", 1), click("b", 1, type="push_received"), click("b", 3, type="push_received")],
        passive_types=["push_received"],
    )
    assert value(records, "active_users", "1d", 1) == 1
    assert days_of(records)[-1] == iso(3)  # a passive click is still an accepted event: the current day


def test_records_exist_for_60_days_after_activity_and_never_after_the_current_day(tmp_path: Path) -> None:
    records = run(tmp_path, [click("a", 0, platform="ios")], [survey("b", 70)])
    assert days_of(records, kpis=ENGAGEMENT_KPIS) == [iso(d) for d in range(60)]
    assert days_of(records, "platform", "ios") == [iso(d) for d in range(60)]
    engagement = only(records, ENGAGEMENT_KPIS)
    # all, platform, plan, stage, and the four NPS groups' churn (6 of the 14)
    assert len(engagement) == 60 * len(ENGAGEMENT_KPIS) * 4 + 60 * 6 * 4
    # Retention (all, platform, plan): a cohort record per day, retained and the rate per offset k once
    # matured (c + k <= 70: every day for k = 1 and 7, days 0..40 for k = 30).
    retention = only(
        records,
        {("retention_cohort", "1d")}
        | {(k, w) for k in ("retained", "retention_rate") for w in ("1d", "7d", "30d")},
    )
    assert len(retention) == 3 * (60 + 2 * (60 + 60 + 41))
    # b's survey, on day 70 only: all, platform, plan, stage and the four engagement levels
    assert len(records) == len(engagement) + len(retention) + len(SATISFACTION_KPIS) * 8
    assert value(records, "active_users", "30d", 59) == 0
    assert churn(records, "30d", 59) == (1, 1, 1.0, 1, 1)

    only_today = run(tmp_path, [click("a", 0)])
    assert days_of(only_today) == [iso(0)]


# ---------------------------------------------------------------------------------------------- satisfaction


def record_of(
    records: dict[str, KpiRecord],
    kpi: str,
    window: str,
    day: int,
    dimension: str = "all",
    segment: str = "all",
) -> KpiRecord:
    """One record; KeyError when it does not exist."""
    return records[f"{kpi}/{window}/{dimension}/{segment}/{iso(day)}"]


def nps(
    records: dict[str, KpiRecord], window: str, day: int, dimension: str = "all", segment: str = "all"
) -> tuple[Any, ...]:
    """(responses, promoters, passives, detractors, nps) of one window, segment and day."""
    counts = tuple(
        value(records, f"nps_{part}", window, day, dimension, segment)
        for part in ("responses", "promoters", "passives", "detractors")
    )
    return (*counts, value(records, "nps", window, day, dimension, segment))


def csat(
    records: dict[str, KpiRecord], window: str, day: int, dimension: str = "all", segment: str = "all"
) -> tuple[Any, ...]:
    """(responses, satisfied, csat, csat_mean) of one window, segment and day."""
    return tuple(
        value(records, kpi, window, day, dimension, segment)
        for kpi in ("csat_responses", "csat_satisfied", "csat", "csat_mean")
    )


def rates(
    records: dict[str, KpiRecord], window: str, day: int, dimension: str = "all", segment: str = "all"
) -> tuple[Any, ...]:
    """(nps shown, dismissed, response rate, csat shown, dismissed, response rate)."""
    return tuple(
        value(records, f"{kind}_{part}", window, day, dimension, segment)
        for kind in ("nps", "csat")
        for part in ("shown", "dismissed", "response_rate")
    )


def interval(rec: KpiRecord) -> tuple[float | None, float | None]:
    """(ci_low, ci_high) of a record."""
    return rec.ci_low, rec.ci_high


#: Surveys of test_nps_and_csat_per_window_and_segment. Stages: u1, u3 sign up on day 0 and u5 on day 10
#: (onboarding until days 13 and 23); u2, u4 signed up long before (established).
SCENARIO = [
    survey("u1", 0, score=10, platform="ios", signup=0),  # onboarding promoter
    survey("u2", 0, score=3, platform="web", signup=-20),  # established detractor
    survey("u3", 5, score=8, platform="web", signup=0),  # onboarding passive
    survey("u1", 5, kind="csat", score=5, platform="ios", signup=0),  # onboarding satisfied
    survey("u2", 5, kind="csat", score=2, platform="web", signup=-20),  # established unsatisfied
    survey("u4", 20, score=9, platform="web", signup=-30),  # established promoter
    survey("u5", 20, kind="csat", score=4, platform="ios", signup=10),  # onboarding satisfied
    survey("u1", 35, score=0, platform="ios", signup=0),  # 35 days after signup: established detractor
]


def test_nps_and_csat_per_window(tmp_path: Path) -> None:
    records = run(tmp_path, [], SCENARIO)
    # 7d windows: day 5 holds days [-1, 5], day 7 only day 5, day 20 only day 20.
    assert nps(records, "7d", 5) == (3, 1, 1, 1, 0.0)
    assert nps(records, "7d", 6) == (3, 1, 1, 1, 0.0)
    assert nps(records, "7d", 7) == (1, 0, 1, 0, 0.0)  # one passive: NPS 0
    assert nps(records, "7d", 20) == (1, 1, 0, 0, 100.0)
    assert csat(records, "7d", 5) == (2, 1, 0.5, 3.5)
    assert csat(records, "7d", 20) == (1, 1, 1.0, 4.0)
    # 30d windows: day 20 and day 29 hold days 0..20; day 30 loses day 0.
    assert nps(records, "30d", 20) == (4, 2, 1, 1, 25.0)
    assert nps(records, "30d", 29) == (4, 2, 1, 1, 25.0)
    assert nps(records, "30d", 30) == (2, 1, 1, 0, 50.0)
    assert csat(records, "30d", 20) == (3, 2, pytest.approx(2 / 3), pytest.approx(11 / 3))
    # Day 35 (the current day): 7d holds u1's detractor only; no CSAT answer in the week.
    assert nps(records, "7d", 35) == (1, 0, 0, 1, -100.0)
    assert nps(records, "30d", 35) == (2, 1, 0, 1, 0.0)  # days 6..35: u4 and u1
    assert csat(records, "7d", 35) == (0, 0, None, None)
    assert csat(records, "30d", 35) == (1, 1, 1.0, 4.0)
    rec = record_of(records, "nps", "30d", 20)
    assert (rec.numerator, rec.denominator) == (1, 4)
    mean = record_of(records, "csat_mean", "30d", 20)
    assert (mean.numerator, mean.denominator) == (11, 3)  # the sum of scores 5 + 2 + 4
    sat = record_of(records, "csat", "30d", 20)
    assert (sat.numerator, sat.denominator) == (2, 3)
    assert isinstance(value(records, "nps_responses", "30d", 20), int)
    assert isinstance(value(records, "nps", "7d", 7), float)
    assert days_of(records)[-1] == iso(35)


def test_nps_and_csat_per_segment_and_stage(tmp_path: Path) -> None:
    records = run(tmp_path, [], SCENARIO)
    assert nps(records, "30d", 20, "platform", "ios") == (1, 1, 0, 0, 100.0)
    assert nps(records, "30d", 20, "platform", "web") == (3, 1, 1, 1, 0.0)
    assert csat(records, "30d", 20, "platform", "ios") == (2, 2, 1.0, 4.5)
    assert csat(records, "30d", 20, "platform", "web") == (1, 0, 0.0, 2.0)
    assert nps(records, "30d", 20, "plan", "unknown") == nps(records, "30d", 20)
    # Stage is the event's own: u1 answers NPS while onboarding on day 0, while established on day 35.
    assert nps(records, "30d", 20, "stage", "onboarding") == (2, 1, 1, 0, 50.0)
    assert nps(records, "30d", 20, "stage", "established") == (2, 1, 0, 1, 0.0)
    assert csat(records, "30d", 20, "stage", "onboarding") == (2, 2, 1.0, 4.5)
    assert csat(records, "30d", 20, "stage", "established") == (1, 0, 0.0, 2.0)
    assert nps(records, "30d", 35, "stage", "onboarding") == (0, 0, 0, 0, None)  # only u5's CSAT is left
    assert csat(records, "30d", 35, "stage", "onboarding") == (1, 1, 1.0, 4.0)
    assert nps(records, "7d", 35, "stage", "established") == (1, 0, 0, 1, -100.0)
    assert csat(records, "30d", 35, "stage", "established") == (0, 0, None, None)
    # Every satisfaction KPI exists for every segment and day that has records.
    for dimension, segment in {(r.dimension, r.segment) for r in records.values()}:
        for day in days_of(records, dimension, segment):
            kpis = {
                (r.kpi, r.window)
                for r in records.values()
                if (r.dimension, r.segment, r.day) == (dimension, segment, day)
            }
            assert kpis == SATISFACTION_KPIS


def test_survey_stage_uses_its_own_signup_else_the_first_day_seen(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [click("c", 0)],  # c is first seen on day 0, by a click
        [
            survey("c", 14),  # no signup_ts: 14 days after first seen, established
            survey("s", 14),  # no signup_ts, first seen by this very survey: onboarding
            survey("t", 14, signup=1),  # 13 days after its own signup: onboarding
            survey("t", 15, signup=1),  # 14 days: established
        ],
    )
    assert value(records, "nps_responses", "7d", 14, "stage", "onboarding") == 2
    assert value(records, "nps_responses", "7d", 14, "stage", "established") == 1
    assert value(records, "nps_responses", "7d", 15, "stage", "established") == 2


def test_high_csat_low_nps_and_the_other_way_round(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [],
        [
            *(survey(f"i{n}", 1, score=score, platform="ios") for n, score in enumerate([0, 2, 5])),
            *(survey(f"i{n}", 1, kind="csat", score=s, platform="ios") for n, s in enumerate([5, 5, 4])),
            *(survey(f"w{n}", 1, score=score, platform="web") for n, score in enumerate([10, 9, 9])),
            *(survey(f"w{n}", 1, kind="csat", score=s, platform="web") for n, s in enumerate([1, 2, 3])),
        ],
    )
    for window in ("7d", "30d"):
        assert nps(records, window, 1, "platform", "ios") == (3, 0, 0, 3, -100.0)
        assert csat(records, window, 1, "platform", "ios") == (3, 3, 1.0, pytest.approx(14 / 3))
        assert nps(records, window, 1, "platform", "web") == (3, 3, 0, 0, 100.0)
        assert csat(records, window, 1, "platform", "web") == (3, 0, 0.0, 2.0)
        assert nps(records, window, 1) == (6, 3, 0, 3, 0.0)
        assert csat(records, window, 1) == (6, 3, 0.5, pytest.approx(20 / 6))
    # No spread among the answers, yet the adjusted Wald interval has a width: 3 detractors of 3 give
    # n' = 6, a = 0.75/6, b = 3.75/6, centre -50, variance a + b - (a - b)² = 1/2, half-width
    # 100·z·sqrt(1/12), the low end clipped at -100 (3 promoters: the mirror image).
    # Wilson 3/3 = [3 / (3 + z²), 1].
    half = 100 * Z * math.sqrt(0.5 / 6)
    assert interval(record_of(records, "nps", "30d", 1, "platform", "ios")) == pytest.approx(
        (-100.0, -50 + half)
    )
    assert interval(record_of(records, "nps", "30d", 1, "platform", "web")) == pytest.approx(
        (50 - half, 100.0)
    )
    assert interval(record_of(records, "csat", "30d", 1, "platform", "ios")) == (
        pytest.approx(3 / (3 + Z * Z), rel=1e-12),
        1.0,
    )
    assert interval(record_of(records, "csat", "30d", 1, "platform", "web")) == (
        pytest.approx(0.0, abs=1e-15),  # exactly 0 but for rounding
        pytest.approx(Z * Z / (3 + Z * Z), rel=1e-12),
    )
    assert record_of(records, "csat_mean", "7d", 1, "platform", "ios").ci_low is None  # no interval


def test_shown_dismissed_and_response_rates(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [],
        [
            shown("a", 1),
            shown("b", 1),
            survey("a", 1, score=9),
            shown("c", 3),
            survey("c", 3, score=4),
            dismissed("b", 3),  # counted on its own: neither shown nor answered
            shown("d", 10),
            dismissed("d", 10, kind="csat"),
            survey("e", 12, kind="csat", score=5),  # two CSAT answers, one shown: a rate above 1
            survey("f", 12, kind="csat", score=3),
            shown("f", 12, kind="csat"),
        ],
    )
    # (nps shown, dismissed, rate, csat shown, dismissed, rate)
    assert rates(records, "7d", 1) == (2, 0, 0.5, 0, 0, None)
    assert rates(records, "7d", 3) == (3, 1, pytest.approx(2 / 3), 0, 0, None)
    assert rates(records, "7d", 10) == (1, 0, 0.0, 0, 1, None)  # days 4..10: d's shown only
    assert rates(records, "30d", 10) == (4, 1, 0.5, 0, 1, None)
    assert rates(records, "7d", 12) == (1, 0, 0.0, 1, 1, 2.0)
    assert rates(records, "30d", 12) == (4, 1, 0.5, 1, 1, 2.0)
    rate = record_of(records, "nps_response_rate", "30d", 10)
    assert (rate.numerator, rate.denominator) == (2, 4)
    # Wilson intervals: 1/2, 2/3, 0/1 (lower bound 0, upper z² / (1 + z²)), 2/4.
    assert interval(record_of(records, "nps_response_rate", "7d", 1)) == (
        pytest.approx(0.09453120573423074, rel=1e-12),
        pytest.approx(0.9054687942657693, rel=1e-12),
    )
    low, high = interval(record_of(records, "nps_response_rate", "7d", 3))
    assert (round(low or 0, 4), round(high or 0, 4)) == (0.2077, 0.9385)  # published Wilson table
    assert interval(record_of(records, "nps_response_rate", "7d", 10)) == (
        pytest.approx(0.0, abs=1e-15),
        pytest.approx(Z * Z / (1 + Z * Z), rel=1e-12),
    )
    assert interval(record_of(records, "nps_response_rate", "30d", 10)) == (
        pytest.approx(0.15003898915214947, rel=1e-12),
        pytest.approx(0.8499610108478506, rel=1e-12),
    )
    # A response rate above 1 is not a proportion: no interval. Nothing shown: no rate and no interval.
    above = record_of(records, "csat_response_rate", "7d", 12)
    assert (above.value, above.numerator, above.denominator, above.ci_low, above.ci_high) == (
        2.0,
        2,
        1,
        None,
        None,
    )
    unshown = record_of(records, "csat_response_rate", "7d", 3)
    assert (unshown.value, unshown.numerator, unshown.denominator, interval(unshown)) == (
        None,
        0,
        0,
        (None, None),
    )


def test_undefined_values_are_null(tmp_path: Path) -> None:
    records = run(tmp_path, [], [shown("a", 1), dismissed("b", 1, kind="csat")])
    for window in ("7d", "30d"):
        assert nps(records, window, 1) == (0, 0, 0, 0, None)
        assert csat(records, window, 1) == (0, 0, None, None)
        assert rates(records, window, 1) == (1, 0, 0.0, 0, 1, None)
        for kpi in ("nps", "csat", "csat_mean", "csat_response_rate"):
            rec = record_of(records, kpi, window, 1)
            assert (rec.value, rec.numerator, rec.denominator, rec.ci_low, rec.ci_high) == (
                None,
                0,
                0,
                None,
                None,
            )
    assert b'"value":null' in encode(record_of(records, "nps", "7d", 1))
    assert b'"ci_low":null' in encode(record_of(records, "nps", "7d", 1))


def test_surveys_are_counted_once_first_in_file_order_wins(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [],
        [
            shown("a", 1, event_id="e1"),
            survey("a", 1, event_id="e1", score=10),  # same user and event_id: only the shown counts
            survey("b", 1, event_id="e2", score=0),
            shown("b", 1, event_id="e2"),  # the answer came first: only the answer counts
            survey("c", 1, event_id="e1", score=9),  # another user's e1 is another event
            survey("a", 6, event_id="e1", kind="csat", score=5),  # a duplicate on a later day changes nothing
            dismissed("c", 1, event_id="e1"),  # c's e1 again: dropped
        ],
    )
    assert nps(records, "7d", 1) == (2, 1, 0, 1, 0.0)
    assert rates(records, "7d", 1) == (1, 0, 2.0, 0, 0, None)
    assert csat(records, "30d", 1) == (0, 0, None, None)
    assert days_of(records) == [iso(1)]  # the duplicate on day 6 moves neither the current day nor records


def test_satisfaction_records_exist_30_days_after_a_survey_and_up_to_the_current_day(
    tmp_path: Path,
) -> None:
    records = run(
        tmp_path,
        [click("x", 40, platform="web")],  # the current day is 40
        [shown("a", 0, platform="tv"), survey("b", 35, platform="ios", kind="csat", score=2)],
    )
    tv = days_of(records, "platform", "tv")
    assert tv == [iso(d) for d in range(30)]  # day 29 is the last whose 30d window reaches day 0
    assert value(records, "nps_shown", "30d", 29, "platform", "tv") == 1
    assert value(records, "nps_shown", "7d", 29, "platform", "tv") == 0  # exists with both windows
    assert value(records, "nps_shown", "7d", 6, "platform", "tv") == 1
    assert value(records, "nps_shown", "7d", 7, "platform", "tv") == 0
    assert days_of(records, "platform", "ios") == [iso(d) for d in range(35, 41)]  # stops at day 40
    assert days_of(records, kpis=SATISFACTION_KPIS) == [
        *(iso(d) for d in range(30)),
        *(iso(d) for d in range(35, 41)),
    ]
    assert days_of(records, "platform", "web", kpis=SATISFACTION_KPIS) == []  # clicks make no survey segment
    assert len(only(records, SATISFACTION_KPIS)) == (30 + 6) * len(SATISFACTION_KPIS) * (
        4 + 4
    )  # all, platform, plan, stage, and the four engagement levels


def test_intervals_of_nps_and_churn_rate(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [click("a", 0), click("b", 0), click("b", 10), click("c", 3), click("z", 13)],
        [
            *(survey(f"p{n}", 13, score=10) for n in range(5)),
            *(survey(f"d{n}", 13, score=6) for n in range(2)),
            *(survey(f"m{n}", 13, score=7) for n in range(3)),
            survey("q", 13, score=9, platform="ios"),
            survey("r", 13, score=9, platform="ios"),
            survey("s", 13, score=1, platform="ios"),
            survey("t", 13, score=8, platform="ios"),
        ],
    )
    # 10 answers on the unknown platform, 5 promoters and 2 detractors: NPS 30. Adjusted Wald: n' = 13,
    # a = 5.75/13, b = 2.75/13, centre 100 (a - b) = 300/13, half-width 100 z sqrt((a + b - (a - b)²) / 13)
    # with a + b - (a - b)² = 8.5/13 - 9/169 = 101.5/169.
    centre, half = 300 / 13, 100 * Z * (101.5 / 169 / 13) ** 0.5
    unknown = record_of(records, "nps", "7d", 13, "platform", "unknown")
    assert unknown.value == 30.0
    assert interval(unknown) == (
        pytest.approx(centre - half, rel=1e-12),
        pytest.approx(centre + half, rel=1e-12),
    )
    assert interval(unknown) == (pytest.approx(-19.0506, abs=1e-4), pytest.approx(65.2045, abs=1e-4))
    # ios: 2 promoters, 1 detractor of 4: NPS 25; n' = 7, a = 2.75/7, b = 1.75/7, centre 100/7,
    # a + b - (a - b)² = 4.5/7 - 1/49 = 30.5/49: [-44.16, 72.73], inside [-100, 100].
    ios = record_of(records, "nps", "30d", 13, "platform", "ios")
    assert ios.value == 25.0
    half = 100 * Z * (30.5 / 49 / 7) ** 0.5
    assert interval(ios) == (
        pytest.approx(100 / 7 - half, rel=1e-12),
        pytest.approx(100 / 7 + half, rel=1e-12),
    )
    # churn 7d on day 10: 2 of 3 churned, Wilson [0.2077, 0.9385]; an empty base: rate 0, no interval.
    churned = record_of(records, "churn_rate", "7d", 10)
    assert (churned.numerator, churned.denominator) == (2, 3)
    low, high = interval(churned)
    assert (round(low or 0, 4), round(high or 0, 4)) == (0.2077, 0.9385)
    empty = record_of(records, "churn_rate", "7d", 5)
    assert (empty.value, empty.denominator, interval(empty)) == (None, 0, (None, None))
    churn_30d = record_of(records, "churn_rate", "30d", 13)
    assert interval(churn_30d) == (None, None)
    # Counts and the other ratios carry no interval.
    for key, rec in records.items():
        if rec.kpi not in {
            "nps",
            "csat",
            "churn_rate",
            "retention_rate",
            "nps_response_rate",
            "csat_response_rate",
        }:
            assert interval(rec) == (None, None), key


def test_intervals_agree_with_streams_uncertainty(tmp_path: Path) -> None:
    """A cross-check against the stream's own pure interval module (the reference never imports it)."""
    from kpimon.streams.uncertainty import nps_interval, wilson

    records = run(tmp_path, [click("a", 0), click("b", 0), click("b", 10), click("c", 3)], SCENARIO)
    checked = 0
    for rec in records.values():
        if rec.kpi in {"csat", "churn_rate", "nps_response_rate", "csat_response_rate"}:
            assert isinstance(rec.numerator, int) and isinstance(rec.denominator, int)
            expected = wilson(rec.numerator, rec.denominator)
        elif rec.kpi == "nps":
            where = (rec.window, rec.dimension, rec.segment, rec.day)
            promoters = records["nps_promoters/{}/{}/{}/{}".format(*where)].value
            detractors = records["nps_detractors/{}/{}/{}/{}".format(*where)].value
            assert isinstance(promoters, int) and isinstance(detractors, int)
            assert isinstance(rec.denominator, int)
            expected = nps_interval(promoters, detractors, rec.denominator)
        else:
            continue
        checked += expected[0] is not None
        assert interval(rec) == (pytest.approx(expected[0], abs=1e-9), pytest.approx(expected[1], abs=1e-9))
    assert checked > 100


# ---------------------------------------------------------------------------------------------- input


def test_no_accepted_clicks_no_engagement_records(tmp_path: Path) -> None:
    assert run(tmp_path, []) == {}
    surveys_only = run(tmp_path, ["garbage"], [survey("a", 3)])
    assert only(surveys_only, ENGAGEMENT_KPIS) == {}
    assert {(r.kpi, r.window) for r in surveys_only.values()} == SATISFACTION_KPIS


def test_invalid_lines_are_ignored(tmp_path: Path) -> None:
    valid = [click("a", 1), click("b", 2, platform="ios")]
    garbage = [
        "not json",
        "",
        "[1, 2]",
        '{"user_id": "c"}',  # missing fields
        json.dumps(factory.click(user_id=7, ts=ts(1))),  # wrong type
        json.dumps(factory.click(user_id="d", ts="yesterday")),  # bad timestamp
        json.dumps(factory.click(user_id="d", ts=ts(1), type="")),  # empty type
        json.dumps(factory.click(user_id="d", ts=ts(1), platform=3)),
        '{"event_id": "e", "user_id": "d", "ts": NaN, "type": "click"}',
    ]
    bad_surveys = [
        survey("e", 3, score=11),  # out of range
        survey("e", 3, action="shown", score=None)[:-1] + ', "score": 3}',  # score on a shown survey
        survey("e", 3, score=None),  # answered without a score
    ]
    mixed = [garbage[0], valid[0], *garbage[1:], valid[1]]
    result = run_reference(
        write(tmp_path / "c.jsonl", mixed),
        write(tmp_path / "s.jsonl", bad_surveys),
        ts(NOW_DAY),
        POLICY,
    )
    assert result.stats.accepted == {"clicks": 2}
    assert sum(result.stats.rejected.values()) == len(garbage) + len(bad_surveys)
    assert result.stats.rejected["surveys", "score_out_of_range"] == 1
    assert result.stats.rejected["clicks", "invalid_json"] == 3  # not json, empty, NaN
    clean = run(tmp_path, valid)
    assert compare(clean.values(), result.records) == []
    assert result.current_day == iso(2)


def test_too_late_and_future_events_are_rejected_relative_to_now(tmp_path: Path) -> None:
    now = ts(30, 12)
    lines = [
        click("ok_oldest", 23),  # 30 - 7: the oldest day accepted
        click("late", 22),
        click("ok_skew", 30, at=now + 5 * 60 * 1000),  # exactly 5 minutes ahead: accepted
        click("future", 30, at=now + 5 * 60 * 1000 + 1),
    ]
    result = run_reference(
        write(tmp_path / "c.jsonl", lines),
        write(tmp_path / "s.jsonl", [survey("s_late", 20), survey("s_future", 31)]),
        now,
        Policy(max_lateness_days=7),
    )
    assert result.stats.accepted == {"clicks": 2}
    assert result.stats.rejected == {
        ("clicks", "too_late"): 1,
        ("clicks", "future_timestamp"): 1,
        ("surveys", "too_late"): 1,
        ("surveys", "future_timestamp"): 1,
    }
    records = latest(result.records)
    assert value(records, "active_users", "30d", 30) == 2
    assert value(records, "active_users", "1d", 23) == 1
    assert days_of(records)[0] == iso(23)
    assert days_of(records)[-1] == iso(30)


def test_message_key_mirrors_replay() -> None:
    assert message_key(b'{"user_id": "u1", "ts": 1}') == b"u1"
    assert message_key(b'{"user_id": 5}') is None
    assert message_key(b"[1]") is None
    assert message_key(b"{not json") is None
    assert message_key(b'{"user_id": "\\ud800"}') is None  # not encodable as a key


def _loaded(tmp_path: Path, clicks: Sequence[str], surveys: Sequence[str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    load(
        con,
        write(tmp_path / "c.jsonl", clicks),
        write(tmp_path / "s.jsonl", surveys),
        ts(NOW_DAY),
        POLICY,
    )
    con.execute(sql_text(kpi_scripts()[0]))
    return con


def test_surveys_are_loaded_once_per_user_and_event_id_first_wins(tmp_path: Path) -> None:
    con = _loaded(
        tmp_path,
        [click("a", 5)],
        [
            survey("a", 1, event_id="e1", action="shown", score=None),
            survey("a", 9, event_id="e1", score=10),  # duplicate of a/e1: dropped, even for the current day
            survey("b", 2, event_id="e1", score=3),  # another user's e1 is another event
            survey("b", 4, event_id="e2", kind="csat", score=5),
        ],
    )
    rows = con.execute("SELECT user_id, event_id, day, action, score FROM surveys ORDER BY seq").fetchall()
    assert rows == [
        ("a", "e1", BASE + 1, "shown", None),
        ("b", "e1", BASE + 2, "answered", 3),
        ("b", "e2", BASE + 4, "answered", 5),
    ]
    assert con.execute("SELECT day FROM current_day").fetchone() == (BASE + 5,)
    assert con.execute("SELECT first_seen FROM users WHERE user_id = 'a'").fetchone() == (BASE + 1,)


def test_append_by_unnest_matches_the_appender() -> None:
    rows = [(0, "u", 10, None, "ios", None, "click"), (1, "v", 11, 9, None, "pro", "view")]
    cons = [duckdb.connect(), duckdb.connect()]
    for con in cons:
        create_tables(con)
    with cons[0].appender("clicks") as appender:
        appender.append_rows(rows)
    _append_by_unnest(cons[1], "clicks", rows)
    assert [con.execute("SELECT * FROM clicks ORDER BY seq").fetchall() for con in cons] == [rows, rows]


def test_load_stats_summary() -> None:
    stats = LoadStats()
    stats.accepted["clicks"] = 3
    stats.rejected["clicks", "invalid_json"] = 2
    assert (
        stats.summary() == "clicks: 3 accepted, 2 rejected (invalid_json 2)\nsurveys: 0 accepted, 0 rejected"
    )


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_writes_sorted_json_lines(tmp_path: Path) -> None:
    clicks = write(tmp_path / "c.jsonl", [click("a", 1, platform="ios"), "garbage", click("b", 2)])
    surveys = write(tmp_path / "s.jsonl", [])
    runner = CliRunner()
    outputs = []
    for now in (day_name(BASE + 3) + "T00:00:00Z", str(ts(3, 0))):
        out = tmp_path / "out.jsonl"
        result = runner.invoke(
            reference,
            ["--clicks", str(clicks), "--surveys", str(surveys), "--now", now, "--out", str(out)],
            env={"KPIMON_MAX_LATENESS_DAYS": ""},
        )
        assert result.exit_code == 0, result.output
        outputs.append(parse_records(out.read_bytes()))
    first, second = outputs
    assert compare(first, second) == []
    keys = [r.key for r in first]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert {r.day for r in first} == {iso(1), iso(2)}
    assert all(r.updated_at and r.updated_at.endswith("Z") for r in first)
    assert (tmp_path / "out.jsonl").read_bytes() == b"".join(encode(r) + b"\n" for r in second)


def test_cli_writes_satisfaction_records_with_intervals(tmp_path: Path) -> None:
    clicks = write(tmp_path / "c.jsonl", [])
    surveys = write(tmp_path / "s.jsonl", [survey("a", 1, kind="csat", score=5), shown("b", 1, kind="csat")])
    args = ["--clicks", str(clicks), "--surveys", str(surveys), "--now", str(ts(2))]
    result = CliRunner().invoke(reference, args, env={"KPIMON_MAX_LATENESS_DAYS": ""})
    assert result.exit_code == 0, result.output
    records = latest(parse_records(result.stdout_bytes))
    assert {(r.kpi, r.window) for r in records.values()} == SATISFACTION_KPIS
    rate = record_of(records, "csat_response_rate", "7d", 1)
    assert (rate.value, rate.numerator, rate.denominator) == (1.0, 1, 1)
    assert interval(rate) == (pytest.approx(1 / (1 + Z * Z), rel=1e-12), 1.0)
    assert b'"ci_low":' in result.stdout_bytes


def test_cli_lateness_and_bad_now(tmp_path: Path) -> None:
    clicks = write(tmp_path / "c.jsonl", [click("a", 1), click("b", 2)])
    surveys = write(tmp_path / "s.jsonl", [])
    args = ["--clicks", str(clicks), "--surveys", str(surveys), "--now", str(ts(9))]
    runner = CliRunner()
    strict = runner.invoke(reference, [*args, "--max-lateness-days", "7"])
    assert strict.exit_code == 0, strict.output
    assert {r.day for r in parse_records(strict.stdout_bytes)} == {iso(2)}
    assert "too_late 1" in strict.stderr
    bad = runner.invoke(reference, [*args[:4], "--now", "2026-01-01T00:00:00"])
    assert bad.exit_code == 2
    assert "offset" in bad.output


def test_cli_passive_types_from_option_or_environment(tmp_path: Path) -> None:
    clicks = write(tmp_path / "c.jsonl", [click("a", 1), click("b", 1, type="push_received")])
    surveys = write(tmp_path / "s.jsonl", [])
    args = ["--clicks", str(clicks), "--surveys", str(surveys), "--now", str(ts(2))]
    runner = CliRunner()
    key = f"active_users/1d/all/all/{iso(1)}"
    for extra, env, dau in [
        ([], {"KPIMON_PASSIVE_TYPES": ""}, 2),
        ([], {"KPIMON_PASSIVE_TYPES": "push_received, other"}, 1),
        (["--passive-type", "push_received"], {"KPIMON_PASSIVE_TYPES": ""}, 1),
    ]:
        result = runner.invoke(reference, [*args, *extra], env=env)
        assert result.exit_code == 0, result.output
        assert latest(parse_records(result.stdout_bytes))[key].value == dau


def test_parse_instant() -> None:
    assert parse_instant("2026-01-01T00:00:00Z") == BASE * MS_PER_DAY
    assert parse_instant("2026-01-01T01:00:00.5+01:00") == BASE * MS_PER_DAY + 500
    assert parse_instant(str(BASE * MS_PER_DAY)) == BASE * MS_PER_DAY
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_instant("tomorrow")


# ---------------------------------------------------------------------------------------------- compare


def rec(
    kpi: str, value: float | int | None, day: str = "2026-01-01", window: str = "1d", **fields: Any
) -> KpiRecord:
    return KpiRecord(kpi=kpi, window=window, dimension="all", segment="all", day=day, value=value, **fields)


def test_compare_counts_exactly_and_missing_counts_as_zero() -> None:
    assert compare([rec("active_users", 3)], [rec("active_users", 3)]) == []
    assert compare([rec("active_users", 0)], []) == []
    assert compare([], [rec("lifecycle_dormant", 0)]) == []
    assert compare([rec("active_users", 3)], [rec("active_users", 4)]) == [
        "active_users/1d/all/all/2026-01-01: reference 3 != stream 4"
    ]
    assert compare([rec("churned", 2)], [], names=("left", "right")) == [
        "churned/1d/all/all/2026-01-01: left 2 != right missing (0)"
    ]


def test_compare_ratios_within_tolerance_and_missing_is_undefined() -> None:
    assert compare([rec("stickiness", 0.5)], [rec("stickiness", 0.5 + 1e-10)]) == []
    assert len(compare([rec("stickiness", 0.5)], [rec("stickiness", 0.5 + 1e-8)])) == 1
    assert compare([rec("nps", None)], []) == []
    assert compare([rec("churn_rate", 0.0)], []) == [
        "churn_rate/1d/all/all/2026-01-01: reference 0.0 != stream missing (undefined)"
    ]
    assert len(compare([rec("csat", None)], [rec("csat", 0.0)])) == 1
    assert len(compare([rec("csat", float("nan"))], [rec("csat", float("nan"))])) == 1


def test_compare_every_ratio_kpi_as_a_ratio() -> None:
    for kpi in ("nps", "csat", "csat_mean", "nps_response_rate", "csat_response_rate", "stickiness"):
        assert compare([rec(kpi, None)], []) == [], kpi  # missing = undefined, not 0
        assert compare([rec(kpi, 0.25)], [rec(kpi, 0.25 + 1e-10)]) == [], kpi
        assert len(compare([rec(kpi, 0.0)], [])) == 1, kpi
    for kpi in ("nps_responses", "csat_satisfied", "nps_shown", "csat_dismissed"):
        assert compare([rec(kpi, 0)], []) == [], kpi  # missing = 0


def test_compare_interval_bounds_within_tolerance_and_missing_is_undefined() -> None:
    bounded = rec("nps", 10.0, ci_low=-5.0, ci_high=25.0)
    assert compare([bounded], [rec("nps", 10.0, ci_low=-5.0 + 1e-10, ci_high=25.0)]) == []
    assert compare([bounded], [rec("nps", 10.0, ci_low=-5.0, ci_high=25.0 + 1e-8)]) == [
        "nps/1d/all/all/2026-01-01 ci_high: reference 25.0 != stream 25.00000001"
    ]
    assert compare([bounded], [rec("nps", 10.0)]) == [
        "nps/1d/all/all/2026-01-01 ci_low: reference -5.0 != stream None",
        "nps/1d/all/all/2026-01-01 ci_high: reference 25.0 != stream None",
    ]
    assert compare([rec("csat", None)], []) == []  # undefined value and bounds on both sides
    assert compare([], [rec("csat", None, ci_low=0.1, ci_high=0.2)]) == [  # the null values are equal
        "csat/1d/all/all/2026-01-01 ci_low: reference missing (undefined) != stream 0.1",
        "csat/1d/all/all/2026-01-01 ci_high: reference missing (undefined) != stream 0.2",
    ]
    assert len(compare([rec("churned", 1)], [rec("churned", 1, ci_low=0.0, ci_high=1.0)])) == 2


def test_compare_uses_the_latest_record_per_key_and_sorts_by_key() -> None:
    older, newer = rec("active_users", 1), rec("active_users", 2)
    assert compare([older, newer], [rec("active_users", 2)]) == []
    diffs = compare([rec("b_count", 1), rec("a_count", 1)], [])
    assert [d.split(":")[0] for d in diffs] == [
        "a_count/1d/all/all/2026-01-01",
        "b_count/1d/all/all/2026-01-01",
    ]


# ---------------------------------------------------------------------------------------------- brute force


def wilson_interval(k: int, n: int) -> tuple[float | None, float | None]:
    """The Wilson score interval, literally from docs/definitions.md; undefined when n = 0 or k > n."""
    if n == 0 or k > n:
        return None, None
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


def nps_ci(promoters: int, detractors: int, n: int) -> tuple[float | None, float | None]:
    """The adjusted Wald interval, literally: n' = n + 3, a = (promoters + 3/4) / n', b likewise,
    100 (a - b) ± 100·z·sqrt((a + b - (a - b)²) / n') clipped to [-100, 100]; undefined when n = 0."""
    if n == 0:
        return None, None
    adjusted = n + 3
    a, b = (promoters + 0.75) / adjusted, (detractors + 0.75) / adjusted
    half = 100 * Z * math.sqrt((a + b - (a - b) ** 2) / adjusted)
    return max(-100.0, 100 * (a - b) - half), min(100.0, 100 * (a - b) + half)


def ratio_record(
    kpi: str,
    window: str,
    key: tuple[str, str, int],
    numerator: int,
    denominator: int,
    value: float | None,
    ci: tuple[float | None, float | None] = (None, None),
) -> KpiRecord:
    """A ratio record of segment and day `key`."""
    dimension, segment, day = key
    return KpiRecord(
        kpi=kpi,
        window=window,
        dimension=dimension,
        segment=segment,
        day=iso(day),
        value=value,
        numerator=numerator,
        denominator=denominator,
        ci_low=ci[0],
        ci_high=ci[1],
    )


#: Segment values of the generated events that are e-mail addresses (docs/security.md): they count as other.
#: "dave@localhost" has no dot after the @, so it is not one.
PERSONAL_VALUES = frozenset({"dave.seg@example.com", "Zed@Example.CO.UK"})


def personal_to_other(value: str | None) -> str | None:
    return "other" if value in PERSONAL_VALUES else value


def brute_force(clicks: Sequence[dict[str, Any]], surveys: Sequence[dict[str, Any]]) -> list[KpiRecord]:
    """Every record recounted literally from docs/definitions.md (events all accepted, in file order)."""
    seen_ids: set[tuple[str, str]] = set()
    unique = []  # surveys once per (user, event_id), the first in file order
    for s in surveys:
        if (s["user"], s["event_id"]) not in seen_ids:
            seen_ids.add((s["user"], s["event_id"]))
            unique.append(s)
    events = [*clicks, *unique]
    if not events:
        return []
    current = max(e["day"] for e in events)
    first_seen: dict[str, int] = {}
    for e in events:
        first_seen[e["user"]] = min(first_seen.get(e["user"], e["day"]), e["day"])

    def segments(event: dict[str, Any]) -> list[tuple[str, str]]:
        signup = event["signup"] if event["signup"] is not None else first_seen[event["user"]]
        return [
            ("all", "all"),
            ("platform", personal_to_other(event["platform"]) or "unknown"),
            ("plan", personal_to_other(event["plan"]) or "unknown"),
            ("stage", "onboarding" if event["day"] - signup < 14 else "established"),
        ]

    active_days: dict[str, set[int]] = {}
    for c in clicks:
        if c["type"] != "push_received":
            active_days.setdefault(c["user"], set()).add(c["day"])

    def survey_segments(event: dict[str, Any]) -> list[tuple[str, str]]:
        # engagement: the user's active days (dimension all) in [e-27, e]
        n = len({d for d in active_days.get(event["user"], set()) if event["day"] - 27 <= d <= event["day"]})
        level = "none" if n == 0 else "light" if n <= 4 else "regular" if n <= 14 else "heavy"
        return [*segments(event), ("engagement", level)]

    engagement = brute_force_engagement(clicks, current, segments)
    all_days = {day_number(r.day) - BASE for r in engagement if (r.dimension, r.segment) == ("all", "all")}
    return [
        *engagement,
        *brute_force_nps_churn(active_days, unique, current, all_days),
        *brute_force_satisfaction(unique, current, survey_segments),
    ]


def brute_force_nps_churn(
    active_days: dict[str, set[int]], surveys: Sequence[dict[str, Any]], current: int, days: set[int]
) -> list[KpiRecord]:
    """Churn by the NPS group of each base user's latest answer in the base period (dimension nps_group)."""
    records = []
    answers = [
        (s["day"], s.get("hour", 12), arrival, s["user"], s["score"])
        for arrival, s in enumerate(surveys)
        if s["kind"] == "nps" and s["action"] == "answered"
    ]
    for d in days:
        for w in (7, 30):
            base: dict[str, set[str]] = {g: set() for g in ("promoter", "passive", "detractor", "none")}
            churned: dict[str, set[str]] = {g: set() for g in base}
            for user, ds in active_days.items():
                if not any(d - 2 * w + 1 <= x <= d - w for x in ds):
                    continue
                mine = [a for a in answers if a[3] == user and d - 2 * w + 1 <= a[0] <= d - w]
                score = max(mine)[4] if mine else None  # latest by day, hour, then file order
                group = (
                    "none"
                    if score is None
                    else "promoter"
                    if score >= 9
                    else "passive"
                    if score >= 7
                    else "detractor"
                )
                base[group].add(user)
                if not any(d - w + 1 <= x <= d for x in ds):
                    churned[group].add(user)
            for group in base:
                n, k = len(base[group]), len(churned[group])
                where = ("nps_group", group, d)
                records += [
                    KpiRecord(
                        kpi=kpi, window=f"{w}d", dimension="nps_group", segment=group, day=iso(d), value=v
                    )
                    for kpi, v in (("churn_base", n), ("churned", k))
                ]
                records.append(
                    ratio_record(
                        "churn_rate", f"{w}d", where, k, n, k / n if n else None, wilson_interval(k, n)
                    )
                )
    return records


def brute_force_engagement(
    clicks: Sequence[dict[str, Any]],
    current: int,
    segments: Callable[[dict[str, Any]], list[tuple[str, str]]],
) -> list[KpiRecord]:
    """Every engagement record, churn_rate intervals included."""
    active = [c for c in clicks if c["type"] != "push_received"]
    first_active: dict[str, int] = {}
    for c in active:
        first_active[c["user"]] = min(first_active.get(c["user"], c["day"]), c["day"])
    new_days = {
        (c["user"], c["day"])
        for c in active
        if (c["signup"] if c["signup"] is not None else first_active[c["user"]]) == c["day"]
    }
    activity: dict[tuple[str, str], dict[str, set[int]]] = {}
    for c in active:
        for key in segments(c):
            activity.setdefault(key, {}).setdefault(c["user"], set()).add(c["day"])
    records = []
    for (dimension, segment), days in activity.items():

        def users(lo: int, hi: int, days: dict[str, set[int]] = days) -> set[str]:
            return {u for u, ds in days.items() if any(lo <= d <= hi for d in ds)}

        for d in range(min(min(ds) for ds in days.values()), current + 1):
            if not users(d - 59, d):
                continue
            today, yesterday = users(d, d), users(d - 1, d - 1)
            values: dict[tuple[str, str], Any] = {
                ("active_users", "1d"): len(today),
                ("active_users", "7d"): len(users(d - 6, d)),
                ("active_users", "30d"): len(users(d - 29, d)),
                ("lifecycle_new", "1d"): len({u for u in today if (u, d) in new_days}),
                ("lifecycle_returning", "1d"): len({u for u in today & yesterday if (u, d) not in new_days}),
                ("lifecycle_resurrecting", "1d"): len(
                    {u for u in today - yesterday if (u, d) not in new_days}
                ),
                ("lifecycle_dormant", "1d"): len(yesterday - today),
            }
            mau = values["active_users", "30d"]
            values["stickiness", "30d"] = values["active_users", "1d"] / mau if mau else None
            records += [
                KpiRecord(kpi=k, window=w_, dimension=dimension, segment=segment, day=iso(d), value=v)
                for (k, w_), v in values.items()
            ]
            for w in (7, 30):
                base = users(d - 2 * w + 1, d - w)
                churned = base - users(d - w + 1, d)
                records += [
                    KpiRecord(
                        kpi=k, window=f"{w}d", dimension=dimension, segment=segment, day=iso(d), value=v
                    )
                    for k, v in (("churn_base", len(base)), ("churned", len(churned)))
                ]
                records.append(
                    ratio_record(
                        "churn_rate",
                        f"{w}d",
                        (dimension, segment, d),
                        len(churned),
                        len(base),
                        len(churned) / len(base) if base else None,
                        wilson_interval(len(churned), len(base)),
                    )
                )
            if dimension == "stage":
                continue
            # Retention of the cohort of d: new and active in the segment on d; retained at offset k when
            # active in the segment on d + k; published once d + k <= current.
            cohort = {u for u in today if (u, d) in new_days}
            records.append(
                KpiRecord(
                    kpi="retention_cohort",
                    window="1d",
                    dimension=dimension,
                    segment=segment,
                    day=iso(d),
                    value=len(cohort),
                )
            )
            for k in (1, 7, 30):
                if d + k > current:
                    continue
                kept = cohort & users(d + k, d + k)
                records += [
                    KpiRecord(
                        kpi="retained",
                        window=f"{k}d",
                        dimension=dimension,
                        segment=segment,
                        day=iso(d),
                        value=len(kept),
                    ),
                    ratio_record(
                        "retention_rate",
                        f"{k}d",
                        (dimension, segment, d),
                        len(kept),
                        len(cohort),
                        len(kept) / len(cohort) if cohort else None,
                        wilson_interval(len(kept), len(cohort)),
                    ),
                ]
    return records


def brute_force_satisfaction(
    surveys: Sequence[dict[str, Any]],
    current: int,
    segments: Callable[[dict[str, Any]], list[tuple[str, str]]],
) -> list[KpiRecord]:
    """Every satisfaction record, with intervals, of the de-duplicated `surveys`."""
    by_segment: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in surveys:
        for key in segments(s):
            by_segment.setdefault(key, []).append(s)
    if ("all", "all") in by_segment:  # the four engagement levels exist together, as all/all does
        for level in ("none", "light", "regular", "heavy"):
            by_segment.setdefault(("engagement", level), [])
    records = []
    for (dimension, segment), events in by_segment.items():
        present = by_segment["all", "all"] if dimension == "engagement" else events
        for d in range(min(e["day"] for e in present), current + 1):
            if not any(d - 29 <= e["day"] <= d for e in present):
                continue
            for w in (7, 30):
                window = f"{w}d"
                inside = [e for e in events if d - w + 1 <= e["day"] <= d]

                def count(kind: str, action: str, low: int = 0, high: int = 10, inside: Any = inside) -> int:
                    return sum(
                        1
                        for e in inside
                        if e["kind"] == kind
                        and e["action"] == action
                        and (action != "answered" or low <= e["score"] <= high)
                    )

                nps_n, promoters = count("nps", "answered"), count("nps", "answered", 9, 10)
                passives, detractors = count("nps", "answered", 7, 8), count("nps", "answered", 0, 6)
                csat_n, satisfied = count("csat", "answered"), count("csat", "answered", 4, 5)
                score_sum = sum(
                    e["score"] for e in inside if e["kind"] == "csat" and e["action"] == "answered"
                )
                nps_shown, csat_shown = count("nps", "shown"), count("csat", "shown")
                counts = {
                    "nps_responses": nps_n,
                    "nps_promoters": promoters,
                    "nps_passives": passives,
                    "nps_detractors": detractors,
                    "csat_responses": csat_n,
                    "csat_satisfied": satisfied,
                    "nps_shown": nps_shown,
                    "csat_shown": csat_shown,
                    "nps_dismissed": count("nps", "dismissed"),
                    "csat_dismissed": count("csat", "dismissed"),
                }
                records += [
                    KpiRecord(kpi=k, window=window, dimension=dimension, segment=segment, day=iso(d), value=v)
                    for k, v in counts.items()
                ]
                where = (dimension, segment, d)
                records += [
                    ratio_record(
                        "nps",
                        window,
                        where,
                        promoters - detractors,
                        nps_n,
                        100 * (promoters - detractors) / nps_n if nps_n else None,
                        nps_ci(promoters, detractors, nps_n),
                    ),
                    ratio_record(
                        "csat",
                        window,
                        where,
                        satisfied,
                        csat_n,
                        satisfied / csat_n if csat_n else None,
                        wilson_interval(satisfied, csat_n),
                    ),
                    ratio_record(
                        "csat_mean", window, where, score_sum, csat_n, score_sum / csat_n if csat_n else None
                    ),
                    ratio_record(
                        "nps_response_rate",
                        window,
                        where,
                        nps_n,
                        nps_shown,
                        nps_n / nps_shown if nps_shown else None,
                        wilson_interval(nps_n, nps_shown),
                    ),
                    ratio_record(
                        "csat_response_rate",
                        window,
                        where,
                        csat_n,
                        csat_shown,
                        csat_n / csat_shown if csat_shown else None,
                        wilson_interval(csat_n, csat_shown),
                    ),
                ]
    return records


@st.composite
def click_events(draw: st.DrawFn) -> dict[str, Any]:
    """A click: dense days (streaks) or sparse ones (gaps); signup none, near the day, or 13/14+ days back."""
    day = draw(st.integers(0, 3) | st.integers(0, 75))
    offset = draw(st.sampled_from([None, None, 0, 0, 0, -1, 1, -13, -14, -30]))
    return {
        "user": draw(st.sampled_from(["u0", "u1", "u2"])),
        "day": day,
        "signup": None if offset is None else day + offset,
        "platform": draw(st.sampled_from([None, "ios", "web", "dave.seg@example.com", "dave@localhost"])),
        "plan": draw(st.sampled_from([None, "free", "Zed@Example.CO.UK"])),
        "type": draw(st.sampled_from(["click", "click", "push_received"])),
    }


@st.composite
def survey_events(draw: st.DrawFn) -> dict[str, Any]:
    """A survey: few event ids per user (so duplicates, of any action); scores of every NPS/CSAT bucket."""
    kind = draw(st.sampled_from(["nps", "csat"]))
    action = draw(st.sampled_from(["answered", "answered", "shown", "shown", "dismissed"]))
    day = draw(st.integers(0, 3) | st.integers(0, 80))
    offset = draw(st.sampled_from([None, None, 0, -13, -14]))
    return {
        "user": draw(st.sampled_from(["u0", "u1", "u4"])),
        "event_id": draw(st.sampled_from(["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"])),
        "day": day,
        "kind": kind,
        "action": action,
        "score": draw(st.integers(0, 10) if kind == "nps" else st.integers(1, 5))
        if action == "answered"
        else None,
        "signup": None if offset is None else day + offset,
        "platform": draw(st.sampled_from([None, "ios", "tv", "dave.seg@example.com"])),
        "plan": draw(st.sampled_from([None, "free", "Zed@Example.CO.UK"])),
        "hour": draw(st.sampled_from([6, 12, 12])),
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(clicks=st.lists(click_events(), max_size=30), surveys=st.lists(survey_events(), max_size=16))
def test_reference_matches_a_brute_force_recount(
    tmp_path: Path, clicks: list[dict[str, Any]], surveys: list[dict[str, Any]]
) -> None:
    click_lines = [
        click(c["user"], c["day"], signup=c["signup"], platform=c["platform"], plan=c["plan"], type=c["type"])
        for c in clicks
    ]
    survey_lines = [
        survey(
            s["user"],
            s["day"],
            event_id=s["event_id"],
            action=s["action"],
            score=s["score"],
            kind=s["kind"],
            signup=s["signup"],
            platform=s["platform"],
            plan=s["plan"],
            hour=s["hour"],
        )
        for s in surveys
    ]
    records = run(tmp_path, click_lines, survey_lines, passive_types=["push_received"])
    expected = latest(brute_force(clicks, surveys))
    assert records.keys() == expected.keys()
    assert compare(expected.values(), records.values(), names=("brute force", "reference")) == []


# ---------------------------------------------------------------------------------------------- issue 17


def test_retention_cohorts_by_hand(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            click("a", 0, signup=0, platform="ios"),
            click("a", 1, signup=0, platform="ios"),
            click("a", 7, signup=0, platform="web"),  # retained on day 7, but not in ios
            click("b", 0, signup=0, platform="ios"),
            click("b", 8, signup=0, platform="ios"),  # day 8 is not day 7: not retained at 7
            click("b", 30, signup=0, platform="ios"),
            click("c", 1, signup=-5),  # never new
            click("c", 31, signup=-5),
        ],
    )
    assert value(records, "retention_cohort", "1d", 0) == 2
    assert value(records, "retention_cohort", "1d", 1) == 0
    assert (value(records, "retained", "1d", 0), value(records, "retention_rate", "1d", 0)) == (1, 0.5)
    assert value(records, "retention_rate", "7d", 0) == 0.5
    assert value(records, "retention_rate", "7d", 0, "platform", "ios") == 0.0  # a was on web on day 7
    assert value(records, "retention_rate", "30d", 0, "platform", "ios") == 0.5
    assert value(records, "retention_rate", "1d", 1) is None  # an empty cohort: undefined
    assert value(records, "retained", "1d", 1) == 0
    rate = record_of(records, "retention_rate", "7d", 0)
    assert (rate.numerator, rate.denominator, interval(rate)) == (1, 2, wilson_interval(1, 2))
    assert f"retention_rate/30d/all/all/{iso(2)}" not in records  # 2 + 30 > 31: not matured
    assert f"retention_rate/1d/all/all/{iso(30)}" in records
    assert not any(r.dimension == "stage" for r in records.values() if r.kpi.startswith("retention"))


def test_churn_by_nps_group_by_hand(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [click(u, 0) for u in "pdqn"] + [click("p", 8), click("q", 9)],
        [
            survey("p", 0, score=10),
            survey("d", 0, score=3, hour=6),
            survey("d", 0, score=9, hour=5),  # earlier that day: the 6 o'clock detractor answer is latest
            survey("q", 0, score=8),
            survey("n", 0, action="shown"),
        ],
    )

    def churn_of(group: str) -> tuple[Any, ...]:
        rec = record_of(records, "churn_rate", "7d", 7, "nps_group", group)
        return (value(records, "churn_base", "7d", 7, "nps_group", group), rec.numerator, rec.value)

    assert churn_of("promoter") == (1, 1, 1.0)
    assert churn_of("detractor") == (1, 1, 1.0)
    assert churn_of("passive") == (1, 1, 1.0)
    assert churn_of("none") == (1, 1, 1.0)  # a shown survey is no answer
    assert value(records, "churned", "7d", 8, "nps_group", "promoter") == 0  # p is back on day 8
    assert f"churn_base/7d/nps_group/promoter/{iso(10)}" not in records  # after the current day


def test_nps_and_csat_by_engagement_level_by_hand(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [click("h", d) for d in range(15)] + [click("l", 14)],
        [survey("h", 14, score=10), survey("l", 14, score=0), survey("z", 14, score=9)],
    )
    assert nps(records, "7d", 14, "engagement", "heavy") == (1, 1, 0, 0, 100.0)
    assert nps(records, "7d", 14, "engagement", "light") == (1, 0, 0, 1, -100.0)
    assert nps(records, "7d", 14, "engagement", "none") == (1, 1, 0, 0, 100.0)  # z never clicked
    assert nps(records, "7d", 14, "engagement", "regular") == (0, 0, 0, 0, None)  # exists, empty
