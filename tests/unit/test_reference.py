"""`kpimon reference`: hand-computed engagement KPIs, input handling, the CLI and the comparison rule.

Days in these tests are offsets from BASE (2026-01-01); every event happens at noon UTC of its day.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.cli import parse_instant, reference
from reference.compare import compare, latest, parse_records
from reference.compute import kpi_scripts, run_reference
from reference.load import LoadStats, _append_by_unnest, create_tables, load, message_key, sql_text
from streams.events import MS_PER_DAY
from streams.output import KpiRecord, day_name, day_number, encode
from streams.validation import Policy

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


# ---------------------------------------------------------------------------------------------- helpers


def ts(day: int, hour: int = 12) -> int:
    """Epoch ms of `hour`:00 UTC on test day `day`."""
    return (BASE + day) * MS_PER_DAY + hour * HOUR


def iso(day: int) -> str:
    """ISO date of test day `day`."""
    return day_name(BASE + day)


_ids = iter(range(10**9))


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
    event: dict[str, Any] = {
        "event_id": f"c{next(_ids)}",
        "user_id": user,
        "ts": ts(day) if at is None else at,
    }
    event["type"] = type
    if signup is not None:
        event["signup_ts"] = ts(signup, 1)
    if platform is not None:
        event["platform"] = platform
    if plan is not None:
        event["plan"] = plan
    return json.dumps(event)


def survey(
    user: str,
    day: int,
    *,
    event_id: str | None = None,
    action: str = "answered",
    score: int | None = 9,
    kind: str = "nps",
) -> str:
    """One surveys message (a JSON line)."""
    event: dict[str, Any] = {
        "event_id": event_id or f"s{next(_ids)}",
        "user_id": user,
        "ts": ts(day),
        "survey": kind,
        "action": action,
    }
    if action == "answered":
        event["score"] = score
    return json.dumps(event)


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


def days_of(records: dict[str, KpiRecord], dimension: str = "all", segment: str = "all") -> list[str]:
    """The days that have records for a segment."""
    return sorted({r.day for r in records.values() if (r.dimension, r.segment) == (dimension, segment)})


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


def test_stickiness_is_zero_without_monthly_users(tmp_path: Path) -> None:
    records = run(tmp_path, [click("a", 0), click("b", 40)])
    sticky = records[f"stickiness/30d/all/all/{iso(35)}"]  # a is 35 days back: present, not monthly
    assert (sticky.value, sticky.numerator, sticky.denominator) == (0.0, 0, 0)


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
    assert churn(records, "7d", 5) == (0, 0, 0.0, 0, 0)  # base [-8, -2] is empty
    assert churn(records, "7d", 7) == (2, 2, 1.0, 2, 2)  # base [-6, 0]: a, b; neither active in [1, 7]
    assert churn(records, "7d", 10) == (3, 2, pytest.approx(2 / 3), 2, 3)  # b is back on 10
    assert churn(records, "7d", 13) == (3, 2, pytest.approx(2 / 3), 2, 3)  # base [0, 6]
    assert churn(records, "7d", 12) == (3, 2, pytest.approx(2 / 3), 2, 3)  # base [-1, 5]


def test_churn_30d(tmp_path: Path) -> None:
    records = run(tmp_path, [click("a", 0), click("b", 0), click("b", 40), click("c", 29), click("z", 59)])
    assert churn(records, "30d", 29) == (0, 0, 0.0, 0, 0)
    assert churn(records, "30d", 30) == (2, 2, 1.0, 2, 2)  # base [-29, 0]: a, b; not active in [1, 30]
    assert churn(records, "30d", 40) == (2, 1, 0.5, 1, 2)  # base [-19, 10]: a, b; b back on 40
    assert churn(records, "30d", 59) == (3, 2, pytest.approx(2 / 3), 2, 3)  # base [0, 29]: a, b, c
    assert churn(records, "30d", 58) == (2, 1, 0.5, 1, 2)  # base [-1, 28]: a, b
    assert churn(records, "7d", 59) == (0, 0, 0.0, 0, 0)


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
    # Every segment and day has every engagement KPI.
    for dimension, segment in {(r.dimension, r.segment) for r in records.values()}:
        kpis = {
            (r.kpi, r.window) for r in records.values() if (r.dimension, r.segment) == (dimension, segment)
        }
        assert kpis == ENGAGEMENT_KPIS


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
    assert days_of(records) == [iso(d) for d in range(60)]
    assert days_of(records, "platform", "ios") == [iso(d) for d in range(60)]
    assert len(records) == 60 * len(ENGAGEMENT_KPIS) * 4  # all, platform, plan, stage
    assert value(records, "active_users", "30d", 59) == 0
    assert churn(records, "30d", 59) == (1, 1, 1.0, 1, 1)

    only_today = run(tmp_path, [click("a", 0)])
    assert days_of(only_today) == [iso(0)]


# ---------------------------------------------------------------------------------------------- input


def test_no_accepted_clicks_no_engagement_records(tmp_path: Path) -> None:
    assert run(tmp_path, []) == {}
    assert run(tmp_path, ["garbage"], [survey("a", 3)]) == {}


def test_invalid_lines_are_ignored(tmp_path: Path) -> None:
    valid = [click("a", 1), click("b", 2, platform="ios")]
    garbage = [
        "not json",
        "",
        "[1, 2]",
        '{"user_id": "c"}',  # missing fields
        json.dumps({"event_id": "e", "user_id": 7, "ts": ts(1), "type": "click"}),  # wrong type
        json.dumps({"event_id": "e", "user_id": "d", "ts": "yesterday", "type": "click"}),  # bad timestamp
        json.dumps({"event_id": "e", "user_id": "d", "ts": ts(1), "type": ""}),  # empty type
        json.dumps({"event_id": "e", "user_id": "d", "ts": ts(1), "type": "click", "platform": 3}),
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


def rec(kpi: str, value: float | int | None, day: str = "2026-01-01", window: str = "1d") -> KpiRecord:
    return KpiRecord(kpi=kpi, window=window, dimension="all", segment="all", day=day, value=value)


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


def test_compare_uses_the_latest_record_per_key_and_sorts_by_key() -> None:
    older, newer = rec("active_users", 1), rec("active_users", 2)
    assert compare([older, newer], [rec("active_users", 2)]) == []
    diffs = compare([rec("b_count", 1), rec("a_count", 1)], [])
    assert [d.split(":")[0] for d in diffs] == [
        "a_count/1d/all/all/2026-01-01",
        "b_count/1d/all/all/2026-01-01",
    ]


# ---------------------------------------------------------------------------------------------- brute force


def brute_force(clicks: Sequence[dict[str, Any]], surveys: Sequence[dict[str, Any]]) -> list[KpiRecord]:
    """Every engagement record recounted literally from docs/definitions.md (events all accepted)."""
    events = [*clicks, *surveys]
    if not events:
        return []
    current = max(e["day"] for e in events)
    first_seen: dict[str, int] = {}
    for e in events:
        first_seen[e["user"]] = min(first_seen.get(e["user"], e["day"]), e["day"])
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
        signup = c["signup"] if c["signup"] is not None else first_seen[c["user"]]
        for key in [
            ("all", "all"),
            ("platform", c["platform"] or "unknown"),
            ("plan", c["plan"] or "unknown"),
            ("stage", "onboarding" if c["day"] - signup < 14 else "established"),
        ]:
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
            values["stickiness", "30d"] = values["active_users", "1d"] / mau if mau else 0.0
            for w in (7, 30):
                base = users(d - 2 * w + 1, d - w)
                churned = base - users(d - w + 1, d)
                values["churn_base", f"{w}d"] = len(base)
                values["churned", f"{w}d"] = len(churned)
                values["churn_rate", f"{w}d"] = len(churned) / len(base) if base else 0.0
            records += [
                KpiRecord(kpi=k, window=w_, dimension=dimension, segment=segment, day=iso(d), value=v)
                for (k, w_), v in values.items()
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
        "platform": draw(st.sampled_from([None, "ios", "web"])),
        "plan": draw(st.sampled_from([None, "free"])),
        "type": draw(st.sampled_from(["click", "click", "push_received"])),
    }


survey_events = st.fixed_dictionaries(
    {"user": st.sampled_from(["u0", "u1", "u4"]), "day": st.integers(0, 80)}
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(clicks=st.lists(click_events(), max_size=30), surveys=st.lists(survey_events, max_size=5))
def test_engagement_matches_a_brute_force_recount(
    tmp_path: Path, clicks: list[dict[str, Any]], surveys: list[dict[str, Any]]
) -> None:
    click_lines = [
        click(c["user"], c["day"], signup=c["signup"], platform=c["platform"], plan=c["plan"], type=c["type"])
        for c in clicks
    ]
    survey_lines = [survey(s["user"], s["day"]) for s in surveys]
    records = run(tmp_path, click_lines, survey_lines, passive_types=["push_received"])
    expected = latest(brute_force(clicks, surveys))
    assert records.keys() == expected.keys()
    assert compare(expected.values(), records.values(), names=("brute force", "reference")) == []
