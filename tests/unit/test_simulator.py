"""`kpimon simulate`: deterministic, valid where meant to be, broken where meant to be, and realistic.

Most tests share one in-memory batch (module fixture) and check it through the real validator, keyed as
`kpimon replay` keys lines, with the same `now`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import get_args

import pytest
from click.testing import CliRunner

from kpimon.agents.config.topics import key_of
from kpimon.reference.compare import compare
from kpimon.reference.compute import run_reference
from kpimon.simulator.cli import parse_now, simulate
from kpimon.simulator.model import (
    CHURN_WAVE_DAYS,
    CLICK_KINDS,
    DAU_DROP_DAYS,
    DAY_MS,
    EXPECTED_PLAN_SHARES,
    EXPECTED_PLATFORM_SHARES,
    NPS_DROP_DAYS,
    NPS_NOISE_ANSWERS,
    SCENARIO_KINDS,
    SCENARIOS,
    SURVEY_KINDS,
    BatchConfig,
    BatchModel,
    Draft,
    InvalidKind,
    LiveModel,
    Outgoing,
    Population,
    Scenario,
    ScenarioKind,
    batch_traffic,
    is_weekend,
)
from kpimon.simulator.render import EXPECTED_REASON, render
from kpimon.streams.events import ClickEvent, SurveyEvent, day_of, epoch_ms
from kpimon.streams.validation import Accepted, Policy, Rejected, validate

NOW = "2026-11-24T09:30:00Z"  # mid-morning: the last day is cut short
NOW_MS = parse_now(NOW)
END_DAY = NOW_MS // DAY_MS
DAYS = 42
# A backfill policy: the whole simulated period is within the lateness bound.
POLICY = Policy(max_lateness_days=DAYS + 5)


@dataclass
class Line:
    """One generated message, validated as the worker would validate it after `kpimon replay`."""

    out: Outgoing
    value: bytes
    verdict: Accepted | Rejected

    @property
    def topic(self) -> str:
        return self.out.draft.topic

    @property
    def valid(self) -> Accepted:
        assert isinstance(self.verdict, Accepted), (self.verdict, self.value)
        return self.verdict


def run(config: BatchConfig) -> list[Line]:
    lines = []
    for out in batch_traffic(config):
        value = render(out.draft)
        lines.append(Line(out, value, validate(out.draft.topic, key_of(value), value, NOW_MS, POLICY)))
    return lines


def accepted(lines: Iterable[Line], topic: str) -> list[Accepted]:
    return [ln.valid for ln in lines if ln.topic == topic and ln.out.role != "invalid"]


BASE = BatchConfig(users=1500, days=DAYS, end_day=END_DAY, now_ms=NOW_MS, seed=7, invalid_fraction=0.02)


@pytest.fixture(scope="module")
def base() -> list[Line]:
    return run(BASE)


# --- determinism and the CLI ------------------------------------------------------------------------


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(simulate, list(args))
    return result.exit_code, result.stderr if result.exit_code == 0 else result.output + str(result.exception)


def test_same_arguments_give_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    common = ["--users", "200", "--days", "10", "--now", NOW, "--invalid-fraction", "0.02"]
    outputs, summaries = [], []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        code, stderr = cli(*common, "--seed", seed, "--out-dir", str(tmp_path / name))
        assert code == 0, stderr
        summaries.append(stderr)
        outputs.append({f: (tmp_path / name / f).read_bytes() for f in ("clicks.jsonl", "surveys.jsonl")})
    assert outputs[0] == outputs[1]
    assert outputs[0]["clicks.jsonl"] != outputs[2]["clicks.jsonl"]
    assert outputs[0]["surveys.jsonl"] != outputs[2]["surveys.jsonl"]
    # The one-line summary counts what was written.
    clicks = outputs[0]["clicks.jsonl"].count(b"\n")
    surveys = outputs[0]["surveys.jsonl"].count(b"\n")
    assert summaries[0].count("\n") == 1
    assert f"clicks={clicks} surveys={surveys} invalid=" in summaries[0]
    assert "duplicates=" in summaries[0] and "late=" in summaries[0]


def test_files_hold_the_generated_lines_in_send_order(tmp_path: Path) -> None:
    config = BatchConfig(users=150, days=6, end_day=END_DAY - 3, now_ms=NOW_MS, seed=3)
    code, stderr = cli(
        "--users",
        "150",
        "--days",
        "6",
        "--end-day",
        "2026-11-21",
        "--seed",
        "3",
        "--now",
        NOW,
        "--out-dir",
        str(tmp_path),
    )
    assert code == 0, stderr
    expected: dict[str, bytes] = {"clicks": b"", "surveys": b""}
    for out in batch_traffic(config):
        expected[out.draft.topic] += render(out.draft) + b"\n"
    assert (tmp_path / "clicks.jsonl").read_bytes() == expected["clicks"]
    assert (tmp_path / "surveys.jsonl").read_bytes() == expected["surveys"]


def test_output_does_not_depend_on_the_process_hash_seed(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    args = ["--users", "120", "--days", "8", "--seed", "5", "--now", NOW, "--scenario", "churn-wave:ios"]
    for hash_seed in ("1", "2"):
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from kpimon.simulator.cli import simulate; simulate()",
                *args,
                "--out-dir",
                str(tmp_path / hash_seed),
            ],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
            capture_output=True,
        )
    for name in ("clicks.jsonl", "surveys.jsonl"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def test_generation_goes_day_by_day() -> None:
    # A century of history: only a lazy, day-by-day generator yields its first message at once.
    config = BatchConfig(users=50, days=36_500, end_day=END_DAY, now_ms=NOW_MS)
    started = time.perf_counter()
    first = next(batch_traffic(config))
    assert first.draft.ts_ms < (config.first_day + 365) * DAY_MS
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--now", NOW], "--out-dir"),
        (["--now", NOW, "--out-dir", "x", "--end-day", "2026-11-25"], "after the day of now"),
        (["--now", "2026-11-24T10:00:00", "--out-dir", "x"], "offset"),
        (["--now", "yesterday", "--out-dir", "x"], "RFC 3339"),
        (["--now", NOW, "--out-dir", "x", "--scenario", "nps-drop:windows"], "unknown scenario segment"),
        (["--now", NOW, "--out-dir", "x", "--scenario", "outage:ios"], "nps-drop:SEGMENT"),
        (["--live", "--out-dir", "x"], "--live sends to Kafka"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(args: list[str], message: str) -> None:
    code, output = cli(*args)
    assert code == 2, output
    assert message in output


def test_help_lists_every_scenario_the_simulator_accepts() -> None:
    """The help's list is made from the registry, and the registry is every kind `Scenario` takes."""
    assert get_args(ScenarioKind) == SCENARIO_KINDS  # registry and type name the same kinds
    result = CliRunner().invoke(simulate, ["--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    for kind in get_args(ScenarioKind):
        assert Scenario.parse(f"{kind}:all").kind == kind  # accepted ...
        (line,) = [line for line in lines if line.startswith(f"{kind}:SEGMENT ")]  # ... and listed
        assert SCENARIOS[kind] in line
    code, output = cli("--now", NOW, "--out-dir", "x", "--scenario", "outage:ios")
    assert code == 2 and all(f"{kind}:SEGMENT" in output for kind in SCENARIO_KINDS)


def test_scenario_segments() -> None:
    assert Scenario.parse("nps-drop:android") == Scenario("nps-drop", "platform", "android")
    assert Scenario.parse("churn-wave:team") == Scenario("churn-wave", "plan", "team")
    assert Scenario.parse("churn-wave:plan=pro") == Scenario("churn-wave", "plan", "pro")
    assert str(Scenario.parse("nps-drop:platform=web")) == "nps-drop:platform=web"
    assert Scenario.parse("nps-noise:ios") == Scenario("nps-noise", "platform", "ios")
    with pytest.raises(ValueError, match="unknown scenario segment"):
        Scenario.parse("nps-drop:platform=team")
    moved = Scenario.parse("dau-drop:all@30")
    assert moved == Scenario("dau-drop", "all", "all", 30) and str(moved) == "dau-drop:all=all@30"
    assert moved.period(100, 7, 7) == (71, 77)  # starts 30 days before the end, lasts its 7 days
    assert Scenario.parse("churn-wave:team@40").period(100, 10, None) == (61, 100)  # to the end
    assert Scenario.parse("dau-drop:ios").period(100, 7, 7) == (94, 100)  # the default: the last 7 days
    with pytest.raises(ValueError, match="@N"):
        Scenario.parse("dau-drop:ios@0")


# --- validity ------------------------------------------------------------------------------------------


def test_every_valid_line_validates_and_every_broken_one_is_rejected_for_its_reason(base: list[Line]) -> None:
    kinds: dict[str, Counter[InvalidKind]] = {"clicks": Counter(), "surveys": Counter()}
    for line in base:
        assert b"\n" not in line.value and b"\r" not in line.value
        kind = line.out.draft.invalid
        if kind is None:
            assert isinstance(line.verdict, Accepted), (line.verdict, line.value)
            assert key_of(line.value) == line.out.draft.user_id.encode()
        else:
            assert line.out.role == "invalid"
            assert isinstance(line.verdict, Rejected), (kind, line.value)
            assert line.verdict.reason == EXPECTED_REASON[kind], (kind, line.verdict, line.value)
            kinds[line.topic][kind] += 1
    assert set(kinds["clicks"]) == set(CLICK_KINDS)
    assert set(kinds["surveys"]) == set(SURVEY_KINDS)
    # The broken share is about what was asked for.
    share = sum(sum(c.values()) for c in kinds.values()) / len(base)
    assert 0.015 < share < 0.025


def test_broken_messages_are_not_json_in_every_way(base: list[Line]) -> None:
    values = [ln.value for ln in base if ln.out.draft.invalid is InvalidKind.NOT_UTF8]
    assert values and all(_not_utf8(v) for v in values)
    shapes = {ln.value[:1] for ln in base if ln.out.draft.invalid is InvalidKind.NOT_OBJECT}
    assert {b"[", b'"', b"n"} <= shapes  # arrays, strings (double encoded JSON), null; numbers too
    assert any(
        v[:1].isdigit() for v in (ln.value for ln in base if ln.out.draft.invalid is InvalidKind.NOT_OBJECT)
    )


def _not_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_no_event_is_later_than_a_minute_before_now_and_the_last_day_is_there(base: list[Line]) -> None:
    times = [a.ts_ms for topic in ("clicks", "surveys") for a in accepted(base, topic)]
    assert max(times) <= NOW_MS - 60_000
    assert min(times) >= (END_DAY - DAYS + 1) * DAY_MS
    assert day_of(max(times)) == END_DAY
    future = [ln for ln in base if ln.out.draft.invalid is InvalidKind.FUTURE_TIMESTAMP]
    assert future and all(ln.out.draft.ts_ms >= (END_DAY + 2) * DAY_MS for ln in future)


def test_both_timestamp_forms_and_offsets_are_used(base: list[Line]) -> None:
    forms = Counter(ts_form(line.valid.event.ts) for line in base[:20_000] if line.out.draft.invalid is None)
    assert min(forms.values()) > 0.1 * sum(forms.values()), forms


def ts_form(ts: datetime | int) -> str:
    """epoch_ms, utc (Z or +00:00) or offset (a client writing local time)."""
    if isinstance(ts, int):
        return "epoch_ms"
    return "utc" if ts.utcoffset() == timedelta(0) else "offset"


# --- the population and its rhythm --------------------------------------------------------------------


def daily_active(lines: Iterable[Line]) -> dict[int, set[str]]:
    active: dict[int, set[str]] = defaultdict(set)
    for a in accepted(lines, "clicks"):
        active[a.day].add(a.event.user_id)
    return active


def test_weekdays_are_busier_than_weekends_and_nights_quieter_than_evenings(base: list[Line]) -> None:
    active = daily_active(base)
    full_days = [d for d in active if d != END_DAY]  # the last day is cut at now
    weekday = statistics.mean(len(active[d]) for d in full_days if not is_weekend(d))
    weekend = statistics.mean(len(active[d]) for d in full_days if is_weekend(d))
    assert weekday > 1.15 * weekend, (weekday, weekend)
    # Local hour of day: users' own offsets are not known here, but RFC 3339 with an offset shows it.
    hours: Counter[int] = Counter()
    for a in accepted(base, "clicks"):
        ts = a.event.ts
        if not isinstance(ts, int) and ts_form(ts) == "offset":
            hours[ts.hour] += 1
    assert min(hours[h] for h in (2, 3, 4)) * 5 < min(hours[h] for h in (10, 11, 19, 20))


def test_platform_and_plan_mix_is_roughly_as_intended(base: list[Line]) -> None:
    first_plan: dict[str, str] = {}
    platforms: dict[str, Counter[str]] = defaultdict(Counter)
    missing = Counter[str]()
    clicks = accepted(base, "clicks")
    for a in clicks:
        e = a.event
        assert isinstance(e, ClickEvent)
        if e.platform is None:
            missing["platform"] += 1
        else:
            platforms[e.user_id][e.platform] += 1
        if e.plan is None:
            missing["plan"] += 1
        else:
            first_plan.setdefault(e.user_id, e.plan)
    main = Counter(c.most_common(1)[0][0] for c in platforms.values())
    for platform, share in EXPECTED_PLATFORM_SHARES.items():
        assert abs(main[platform] / sum(main.values()) - share) < 0.05, (platform, main)
    plans = Counter(first_plan.values())
    for plan, share in EXPECTED_PLAN_SHARES.items():
        assert abs(plans[plan] / sum(plans.values()) - share) < 0.05, (plan, plans)
    # Some events lack platform or plan ("unknown" segments), most do not.
    assert 0.01 < missing["platform"] / len(clicks) < 0.04
    assert 0.02 < missing["plan"] / len(clicks) < 0.09


def test_signups_before_and_during_the_period_and_some_without_signup_ts(base: list[Line]) -> None:
    first_day = END_DAY - DAYS + 1
    signup: dict[str, set[int]] = defaultdict(set)  # -1: no signup_ts
    first_event: dict[str, ClickEvent] = {}
    for a in sorted(accepted(base, "clicks"), key=lambda a: a.ts_ms):
        e = a.event
        assert isinstance(e, ClickEvent)
        signup[e.user_id].add(-1 if e.signup_ts is None else epoch_ms(e.signup_ts))
        first_event.setdefault(e.user_id, e)
    assert all(len(s) == 1 for s in signup.values())  # a user's events all carry the same signup_ts
    days = [day_of(next(iter(s))) for s in signup.values() if -1 not in s]
    before = sum(d < first_day for d in days)
    assert 0.4 < before / len(days) < 0.7
    during = {d for d in days if d >= first_day}
    assert len(during) > DAYS - 3  # signups spread over the period
    without = sum(-1 in s for s in signup.values())
    assert 0 < without < 0.05 * len(signup)
    # A user who signs up during the period starts with a signup event on that day.
    newcomers = [
        e
        for e in first_event.values()
        if e.signup_ts is not None and epoch_ms(e.signup_ts) >= first_day * DAY_MS
    ]
    assert newcomers
    for e in newcomers:
        assert e.signup_ts is not None and e.type == "signup" and epoch_ms(e.ts) == epoch_ms(e.signup_ts)


def test_users_go_quiet_and_come_back_and_some_leave_for_good(base: list[Line]) -> None:
    days: dict[str, set[int]] = defaultdict(set)
    for a in accepted(base, "clicks"):
        days[a.event.user_id].add(a.day)
    comebacks = 0
    for active in days.values():
        ordered = sorted(active)
        comebacks += any(b - a >= 10 for a, b in pairwise(ordered))
    gone = sum(max(active) < END_DAY - 14 for active in days.values())
    assert comebacks > 0.03 * len(days)
    assert gone > 0.05 * len(days)


def test_event_types_sessions_and_properties(base: list[Line]) -> None:
    types: Counter[str] = Counter()
    sessions: dict[str, set[str]] = defaultdict(set)
    with_properties = 0
    clicks = accepted(base, "clicks")
    for a in clicks:
        e = a.event
        assert isinstance(e, ClickEvent)
        types[e.type] += 1
        with_properties += e.properties is not None
        if e.session_id is not None:
            sessions[e.session_id].add(e.user_id)
    assert {"page_view", "click", "feature_used", "purchase", "search", "app_open", "signup"} <= set(types)
    assert types.most_common(1)[0][0] == "page_view"
    assert all(len(users) == 1 for users in sessions.values())  # a session belongs to one user
    assert 1.5 < len(clicks) / len(sessions) < 8
    assert 0.85 < with_properties / len(clicks) < 0.97


# --- delivery: late, duplicates ------------------------------------------------------------------------


def test_late_and_duplicate_fractions_are_about_as_configured(base: list[Line]) -> None:
    roles = Counter(ln.out.role for ln in base)
    events = roles["event"] + roles["late"]
    assert abs(roles["late"] / events - BASE.late_fraction) < 0.005, roles
    assert abs(roles["duplicate"] / events - BASE.duplicate_fraction) < 0.003, roles
    # Duplicates repeat an earlier line byte for byte; nothing else repeats.
    seen: set[bytes] = set()
    repeated = 0
    for line in base:
        if line.out.draft.invalid is None:
            if line.value in seen:
                repeated += 1
                assert line.out.role == "duplicate"
            seen.add(line.value)
    assert repeated == roles["duplicate"]


def test_late_events_arrive_after_later_ones_within_the_lateness(base: list[Line]) -> None:
    lateness_ms = int(BASE.lateness_days * DAY_MS)
    out_of_order = 0
    largest_lag_days = 0
    for topic in ("clicks", "surveys"):
        newest = 0
        for line in base:
            if line.topic != topic or line.out.draft.invalid is not None:
                continue
            ts = line.valid.ts_ms
            if ts < newest - 60_000:
                out_of_order += 1
                assert newest - ts <= lateness_ms + 10 * 60_000
                largest_lag_days = max(largest_lag_days, day_of(newest) - day_of(ts))
            newest = max(newest, ts)
    valid = sum(ln.out.draft.invalid is None for ln in base)
    assert (
        BASE.late_fraction * 0.8 < out_of_order / valid < BASE.late_fraction + BASE.duplicate_fraction + 0.01
    )
    assert largest_lag_days >= 2  # a line for day d after lines for day d + 2 (and more)


# --- satisfaction ----------------------------------------------------------------------------------------


def satisfaction(
    lines: Iterable[Line], first_day: int = -(10**6), min_sample: int = 20
) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """(NPS, CSAT) per (dimension, value) from answered surveys with an event day >= `first_day`.

    None where fewer than `min_sample` answers back the number.
    """
    scores: dict[tuple[str, tuple[str, str]], list[int]] = defaultdict(list)
    for a in accepted(lines, "surveys"):
        e = a.event
        assert isinstance(e, SurveyEvent)
        if e.action != "answered" or a.day < first_day or e.score is None:
            continue
        segments = [("all", "all"), ("platform", e.platform or "unknown"), ("plan", e.plan or "unknown")]
        if e.signup_ts is not None:
            stage = "onboarding" if a.day - day_of(epoch_ms(e.signup_ts)) < 14 else "established"
            segments.append(("stage", stage))
        for segment in segments:
            scores[(e.survey, segment)].append(e.score)
    result: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for segment in {s for _, s in scores}:
        nps, csat = scores.get(("nps", segment), []), scores.get(("csat", segment), [])
        promoters, detractors = sum(s >= 9 for s in nps), sum(s <= 6 for s in nps)
        result[segment] = (
            100 * (promoters - detractors) / len(nps) if len(nps) >= min_sample else None,
            sum(s >= 4 for s in csat) / len(csat) if len(csat) >= min_sample else None,
        )
    return result


def test_segments_disagree_csat_high_nps_low_and_the_other_way_round(base: list[Line]) -> None:
    # Team accounts are few (10 %): a smaller minimum sample keeps them in.
    kpis = {
        s: (n, c)
        for s, (n, c) in satisfaction(base, min_sample=10).items()
        if n is not None and c is not None
    }
    nps_all, csat_all = kpis[("all", "all")]
    assert 0 < nps_all < 50 and 0.55 < csat_all < 0.9, kpis[("all", "all")]
    csat_high_nps_low = [s for s, (n, c) in kpis.items() if c > csat_all + 0.08 and n < nps_all - 20]
    nps_high_csat_low = [s for s, (n, c) in kpis.items() if n > nps_all + 8 and c < csat_all - 0.08]
    assert ("plan", "team") in csat_high_nps_low, kpis
    assert ("platform", "android") in nps_high_csat_low, kpis


def test_answers_and_dismissals_usually_follow_a_shown_event(base: list[Line]) -> None:
    shown: dict[tuple[str, str], list[int]] = defaultdict(list)
    replies = []
    for a in sorted(accepted(base, "surveys"), key=lambda a: a.ts_ms):
        e = a.event
        assert isinstance(e, SurveyEvent)
        if e.action == "shown":
            shown[(e.user_id, e.survey)].append(a.ts_ms)
        else:
            replies.append((e.user_id, e.survey, a.ts_ms))
    preceded = sum(any(0 < t - s <= 5 * 60_000 for s in shown[(u, k)]) for u, k, t in replies)
    assert 0.9 < preceded / len(replies) < 1.0  # usually, not always
    actions = Counter(a.event.action for a in accepted(base, "surveys"))  # type: ignore[union-attr]
    assert actions["shown"] > actions["answered"] > 0 and actions["dismissed"] > 0


# --- scenarios -----------------------------------------------------------------------------------------


SMALL = replace(BASE, users=1200, days=28, invalid_fraction=0.005)


@pytest.fixture(scope="module")
def small() -> list[Line]:
    return run(SMALL)


def by_event_day(lines: Iterable[Line], before: int) -> Counter[bytes]:
    return Counter(ln.value for ln in lines if ln.out.draft.invalid is None and ln.valid.day < before)


def test_nps_drop_drops_the_segment_nps_in_the_last_week_and_changes_nothing_else(small: list[Line]) -> None:
    dropped = run(replace(SMALL, scenarios=(Scenario.parse("nps-drop:android"),)))
    drop_from = END_DAY - NPS_DROP_DAYS + 1
    # Only scores change, so the answers pair up by event_id.
    scores: dict[str, dict[int, int]] = defaultdict(dict)  # event_id -> run -> score (duplicates agree)
    for run_index, lines in enumerate((small, dropped)):
        for a in accepted(lines, "surveys"):
            e = a.event
            assert isinstance(e, SurveyEvent)
            if e.survey == "nps" and e.score is not None and e.platform == "android" and a.day >= drop_from:
                scores[e.event_id][run_index] = e.score
    pairs = [(by_run[0], by_run[1]) for by_run in scores.values() if len(by_run) == 2]
    assert len(pairs) >= 5 and len(pairs) == len(scores)
    assert all(after <= before for before, after in pairs)
    assert statistics.mean(before - after for before, after in pairs) >= 3
    nps_before = _nps([before for before, _ in pairs])
    nps_after = _nps([after for _, after in pairs])
    assert nps_after < nps_before - 40, (nps_before, nps_after)
    # Clicks are identical, and so is every other survey line.
    assert [ln.value for ln in small if ln.topic == "clicks"] == [
        ln.value for ln in dropped if ln.topic == "clicks"
    ]
    assert by_event_day(small, drop_from) == by_event_day(dropped, drop_from)
    others = [
        [ln.value for ln in lines if ln.topic == "surveys" and ln.out.draft.platform != "android"]
        for lines in (small, dropped)
    ]
    assert others[0] == others[1]


def test_nps_noise_gives_a_drop_as_large_on_a_handful_of_answers(small: list[Line]) -> None:
    """nps-noise: exactly NPS_NOISE_ANSWERS answers of the segment in the last 7 days, each dropped as by
    nps-drop; the segment's other prompts are dismissed; nothing else changes."""
    noisy = run(replace(SMALL, scenarios=(Scenario.parse("nps-noise:ios"),)))
    drop_from = END_DAY - NPS_DROP_DAYS + 1

    def ios_nps(lines: list[Line]) -> dict[str, tuple[str, int | None]]:
        out: dict[str, tuple[str, int | None]] = {}  # event_id -> (action, score); duplicates agree
        for a in accepted(lines, "surveys"):
            e = a.event
            assert isinstance(e, SurveyEvent)
            if e.survey == "nps" and e.platform == "ios" and a.day >= drop_from and e.action != "shown":
                out[e.event_id] = (e.action, e.score)
        return out

    before, after = ios_nps(small), ios_nps(noisy)
    assert before.keys() == after.keys()  # the same prompts, answered or dismissed
    answered = {k: v[1] for k, v in after.items() if v[0] == "answered"}
    assert len(answered) == NPS_NOISE_ANSWERS
    assert sum(v[0] == "answered" for v in before.values()) >= 3 * NPS_NOISE_ANSWERS  # really thinned
    pairs = [(before[k][1], score) for k, score in answered.items()]
    assert all(b is not None and s is not None and s <= b for b, s in pairs)
    assert (
        _nps([s for _, s in pairs if s is not None])
        < _nps([s for a, s in before.values() if a == "answered" and s is not None]) - 40
    )
    # Clicks are identical, and so is every survey line outside ios or before the period.
    assert [ln.value for ln in small if ln.topic == "clicks"] == [
        ln.value for ln in noisy if ln.topic == "clicks"
    ]
    assert by_event_day(small, drop_from) == by_event_day(noisy, drop_from)
    others = [
        [ln.value for ln in lines if ln.topic == "surveys" and ln.out.draft.platform != "ios"]
        for lines in (small, noisy)
    ]
    assert others[0] == others[1]


def _nps(scores: list[int]) -> float:
    return 100 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / len(scores)


def test_churn_wave_quiets_the_segment_in_the_last_ten_days(small: list[Line]) -> None:
    wave = run(replace(SMALL, scenarios=(Scenario.parse("churn-wave:plan=team"),)))
    wave_from = END_DAY - CHURN_WAVE_DAYS + 1

    def team_active(lines: list[Line], days: range) -> int:
        return len(
            {a.event.user_id for a in accepted(lines, "clicks") if a.day in days and a.event.plan == "team"}
        )

    late_days = range(END_DAY - 3, END_DAY + 1)
    assert team_active(wave, late_days) < 0.5 * team_active(small, late_days)
    early = range(wave_from - 7, wave_from)
    assert team_active(wave, early) == team_active(small, early)
    assert by_event_day(small, wave_from) == by_event_day(wave, wave_from)


def test_dau_drop_makes_the_segment_come_on_fewer_days_for_a_week(small: list[Line]) -> None:
    dropped = run(replace(SMALL, scenarios=(Scenario.parse("dau-drop:ios@14"),)))
    drop_from = END_DAY - 14 + 1
    week = range(drop_from, drop_from + DAU_DROP_DAYS)

    def ios_user_days(lines: list[Line], days: range) -> int:
        return len(
            {
                (a.event.user_id, a.day)
                for a in accepted(lines, "clicks")
                if a.day in days and a.event.platform == "ios"
            }
        )

    ratio = ios_user_days(dropped, week) / ios_user_days(small, week)
    assert 0.45 < ratio < 0.75  # about DAU_DROP_FACTOR (second-platform sessions and onboarding aside)
    assert by_event_day(small, drop_from) == by_event_day(dropped, drop_from)  # nothing changes before


def test_plan_tiers_split_each_plan_and_change_nothing_else(small: list[Line]) -> None:
    tiered = run(replace(SMALL, plan_tiers=2))
    plans = Counter(a.event.plan for a in accepted(tiered, "clicks"))
    assert {p for p in plans if p is not None} == {
        f"{p}-{t}" for p in ("free", "pro", "team") for t in (1, 2)
    }
    untiered = [
        (a.event.user_id, a.ts_ms, (a.event.plan or "").rpartition("-")[0] or None)
        for a in accepted(tiered, "clicks")
    ]
    assert untiered == [(a.event.user_id, a.ts_ms, a.event.plan) for a in accepted(small, "clicks")]


# --- live ------------------------------------------------------------------------------------------------


def test_live_traffic_is_current_at_the_rate_and_starts_the_scenario_on_time() -> None:
    start = NOW_MS
    model = LiveModel(
        500,
        5,
        start,
        rate=50,
        invalid_fraction=0.02,
        scenarios=[Scenario.parse("churn-wave:android")],
        scenario_after_s=120,
    )
    live_policy = Policy()  # live traffic must pass the default policy
    clicks_by_minute: dict[int, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    clicks = 0
    for tick in range(1, 6001):  # 10 minutes, a tick every 100 ms
        now = start + tick * 100
        for out in model.step(now, 5):
            value = render(out.draft)
            verdict = validate(out.draft.topic, key_of(value), value, now, live_policy)
            roles[out.role] += 1
            clicks += out.draft.topic == "clicks" and out.role in ("event", "late")
            if out.draft.invalid is not None:
                assert isinstance(verdict, Rejected) and verdict.reason == EXPECTED_REASON[out.draft.invalid]
                reasons[verdict.reason] += 1
                continue
            assert isinstance(verdict, Accepted), (verdict, value)
            if out.role == "event":
                assert now - 2_000 <= verdict.ts_ms <= now
            if out.draft.topic == "clicks" and out.role == "event":
                e = verdict.event
                clicks_by_minute[(verdict.ts_ms - start) // 60_000][e.platform or "?"] += 1
    assert clicks == 5 * 6000  # 50 clicks/s
    assert roles["late"] > 0 and roles["duplicate"] > 0 and len(reasons) >= 8
    assert roles["invalid"] > 0
    # churn-wave:android from minute 2 on; after five more minutes almost no Android clicks.
    share_before = clicks_by_minute[1]["android"] / sum(clicks_by_minute[1].values())
    share_after = clicks_by_minute[8]["android"] / sum(clicks_by_minute[8].values())
    assert share_before > 0.2 and share_after < 0.5 * share_before, (share_before, share_after)


def test_live_nps_noise_gives_its_segment_a_handful_of_answers() -> None:
    """Live, scenario from the start: ios gives NPS_NOISE_ANSWERS answers in all; without it, many more."""

    def ios_answers(scenarios: list[Scenario]) -> int:
        model = LiveModel(300, 2, NOW_MS, rate=200, scenarios=scenarios, scenario_after_s=0)
        count = 0
        # 3 minutes, a tick every 100 ms: the answers asked in the first 2 are due (surveys come after
        # their session).
        for tick in range(1, 1801):
            for out in model.step(NOW_MS + tick * 100, 20 if tick <= 1200 else 0):
                d = out.draft
                count += (
                    out.role in ("event", "late")
                    and d.survey == "nps"
                    and d.action == "answered"
                    and d.platform == "ios"
                )
        return count

    assert ios_answers([]) >= 3 * NPS_NOISE_ANSWERS
    assert ios_answers([Scenario.parse("nps-noise:ios")]) == NPS_NOISE_ANSWERS


def _clicks_per_active_user_day(lines: Iterable[Line]) -> float:
    clicks = [ln.valid for ln in lines if ln.topic == "clicks" and ln.out.role in ("event", "late")]
    user_days = {(a.event.user_id, a.day) for a in clicks}
    return len(clicks) / len(user_days)


def test_clicks_per_day_gives_traffic_where_most_clicks_change_state(base: list[Line]) -> None:
    # The bench's second mix (issue #16): one session a day of about --clicks-per-day clicks.
    config = BatchConfig(
        users=600, days=DAYS, end_day=END_DAY, now_ms=NOW_MS, seed=7, invalid_fraction=0.0, clicks_per_day=1.8
    )
    changing = run(config)
    assert 1.6 < _clicks_per_active_user_day(changing) < 2.3
    assert _clicks_per_active_user_day(base) > 4  # the model's own sessions: most clicks repeat a user-day
    with pytest.raises(ValueError, match="clicks_per_day"):
        replace(config, clicks_per_day=0.5).check()
    code, _ = cli(
        "--users",
        "20",
        "--days",
        "3",
        "--seed",
        "1",
        "--now",
        "2026-11-24T12:00:00Z",
        "--out-dir",
        "/dev/null/x",
        "--clicks-per-day",
        "0.5",
    )
    assert code != 0


def test_thin_traffic_gives_exactly_the_kpis_of_the_full_traffic(tmp_path: Path) -> None:
    """`--thin` (the demo's backfill) leaves out only clicks that change no KPI, a good part of them: the
    reference agrees on every record (late events, duplicates, broken messages, users without signup_ts
    and scenarios included)."""
    days = 35
    results = {}
    for thin in (False, True):
        out_dir = tmp_path / str(thin)
        code, message = cli(
            *("--users", "400", "--days", str(days), "--seed", "3"),
            *("--now", NOW, "--late-fraction", "0.1", "--duplicate-fraction", "0.05"),
            *("--no-signup-fraction", "0.1", "--scenario", "churn-wave:android"),
            *("--scenario", "nps-drop:web"),
            *("--out-dir", str(out_dir), *(["--thin"] if thin else [])),
        )
        assert code == 0, message
        results[thin] = run_reference(
            out_dir / "clicks.jsonl",
            out_dir / "surveys.jsonl",
            NOW_MS,
            Policy(max_lateness_days=days + 5),
            updated_at="2026-01-01T00:00:00Z",
        )
    full, thinned = results[False], results[True]
    assert len(full.records) > 5000
    assert compare(full.records, thinned.records) == []
    assert full.stats.rejected == thinned.stats.rejected  # every broken message is still there
    full_clicks, thin_clicks = full.stats.accepted["clicks"], thinned.stats.accepted["clicks"]
    assert thin_clicks < 0.4 * full_clicks, (thin_clicks, full_clicks)
    assert thinned.stats.accepted["surveys"] == full.stats.accepted["surveys"]


def _kpis_today(drafts: Iterable[Draft], today: int, platform: str | None = None) -> dict[str, float | None]:
    """A few KPIs of `today` from valid drafts, by docs/definitions.md (segment: the event's platform)."""
    active: dict[int, set[str]] = defaultdict(set)
    nps: dict[str, int] = {}
    csat: dict[str, int] = {}
    for d in drafts:
        if platform is not None and (d.platform or "unknown") != platform:
            continue
        day = d.ts_ms // DAY_MS
        if d.topic == "clicks":
            active[day].add(d.user_id)
        elif d.action == "answered" and today - 6 <= day <= today and d.score is not None:
            (nps if d.survey == "nps" else csat)[d.event_id] = d.score

    def users(first: int, last: int) -> set[str]:
        return set().union(*(active[day] for day in range(first, last + 1)))

    mau, dau = users(today - 29, today), active[today]
    base = users(today - 13, today - 7)
    churned = base - users(today - 6, today)
    scores = list(nps.values())
    return {
        "dau": len(dau),
        "mau": len(mau),
        "stickiness": len(dau) / len(mau) if mau else None,
        "churn_7d": len(churned) / len(base) if base else None,
        "nps_7d": 100 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / len(scores)
        if scores
        else None,
        "nps_answers": len(scores),
        "csat_7d": sum(s >= 4 for s in csat.values()) / len(csat) if csat else None,
    }


def test_live_traffic_continues_the_history_and_keeps_the_kpis_realistic() -> None:
    """The demo's live phase: 10 minutes at 50 clicks/s after 61 days of history keep stickiness, churn,
    NPS and CSAT where the history had them (no longer stickiness 100 %, churn 0), and the scenarios show
    by platform (the demo's): Android's churn wave and iOS' NPS drop."""
    scenarios = (Scenario.parse("churn-wave:android"), Scenario.parse("nps-drop:ios"))
    config = BatchConfig(users=1000, days=61, end_day=END_DAY, now_ms=NOW_MS, seed=4, scenarios=scenarios)
    model = BatchModel(config)
    history = [o.draft for o in batch_traffic(config, model) if o.role != "invalid"]
    population = Population.loads(Population.of(model).dumps())  # as the demo hands it over: a file
    assert len(population.users) == 1000 and 0 < len(population.active) < 500
    platforms = (None, "android", "ios", "web")
    before = {p: _kpis_today(history, END_DAY, p) for p in platforms}
    live = LiveModel(1000, 4, NOW_MS, rate=50, scenarios=scenarios, scenario_after_s=0, population=population)
    drafts: list[Draft] = []
    checkpoints = {}
    for second in range(1, 601):
        drafts.extend(o.draft for o in live.step(NOW_MS + second * 1000, 50) if o.role != "invalid")
        if second in (60, 300, 600):
            checkpoints[second] = {p: _kpis_today(history + drafts, END_DAY, p) for p in platforms}
    assert len(drafts) > 25_000
    for second, kpis in checkpoints.items():
        everyone, android, ios, web = kpis[None], kpis["android"], kpis["ios"], kpis["web"]
        message = f"after {second} s of live traffic: {kpis}, before: {before}"
        stickiness, churn, nps, csat = (everyone[k] for k in ("stickiness", "churn_7d", "nps_7d", "csat_7d"))
        assert stickiness is not None and 0.1 < stickiness < 0.6, message
        assert churn is not None and 0.1 < churn < 0.7, message
        assert nps is not None and -50 < nps < 60 and csat is not None and 0.5 < csat < 0.95, message
        # The scenarios, by platform: most of Android is gone, iOS' NPS has dropped below web's.
        assert android["churn_7d"] > 2 * web["churn_7d"], message  # type: ignore[operator]
        assert android["stickiness"] < web["stickiness"], message  # type: ignore[operator]
        assert ios["nps_answers"] >= 10 and web["nps_answers"] >= 10, message  # type: ignore[operator]
        assert ios["nps_7d"] < web["nps_7d"] - 30, message  # type: ignore[operator]
    # Live traffic is today's users: the day's DAU grows to about a full day's, far from everybody.
    assert before[None]["dau"] < checkpoints[600][None]["dau"] < 0.6 * checkpoints[600][None]["mau"]  # type: ignore[operator]
