"""Engagement x satisfaction (streams.crossed): engagement levels of respondents and churn by NPS group,
event by event in any arrival order, against a brute-force recount of the definitions."""

from __future__ import annotations

from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from kpimon.streams import crossed
from kpimon.streams.engagement import full_contribution
from kpimon.streams.segments import ALL, SegmentKey
from kpimon.streams.userstate import SurveyFact, UserState

D0 = 20_000
IOS: SegmentKey = ("platform", "ios")

# ("click", user, day) or ("survey", user, event_id, day, survey, action, score, ms)
Event = tuple
Key = tuple[str, str, str, str, int]  # (dimension, segment, kpi, window, day)

#: The satisfaction counters the brute force recounts (enough to see every survey in its level).
CHECKED = {
    ("survey_events", "30d"),
    ("nps_responses", "7d"),
    ("nps_promoters", "30d"),
    ("csat_score_sum", "7d"),
}


def fact_of(event: Event) -> SurveyFact:
    _, _, _, day, survey, action, score, ms = event
    return (day, survey, action, score, "ios", "free", "established", ms)


def apply(states: dict[str, UserState], counters: Tally[Key], event: Event) -> None:
    user = event[1]
    state = states.setdefault(user, UserState())
    if event[0] == "click":
        changes = crossed.record_click(state, event[2], None, (ALL, IOS))
    else:
        if event[2] in state.surveys:
            return  # de-duplicated: the first arrival wins
        changes = crossed.record_survey(state, event[2], fact_of(event))
    for segment, runs in changes or ():
        for kpi, window, first, last, delta in runs:
            for day in range(first, last + 1):
                counters[(*segment, kpi, window, day)] += delta


def stream(events: Iterable[Event]) -> tuple[dict[Key, int], dict[str, UserState]]:
    states: dict[str, UserState] = {}
    counters: Tally[Key] = Tally()
    for event in events:
        apply(states, counters, event)
    return relevant(counters), states


def relevant(counters: Tally[Key]) -> dict[Key, int]:
    """The counters the brute force recounts, zeros left out."""
    return {
        key: n
        for key, n in counters.items()
        if n and ((key[0] == crossed.ENGAGEMENT and key[2:4] in CHECKED) or key[2:4] in crossed.COUNTERS)
    }


def level(days: int) -> str:
    return "none" if days == 0 else "light" if days <= 4 else "regular" if days <= 14 else "heavy"


def group(score: int) -> str:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def brute_force(events: list[Event]) -> dict[Key, int]:
    active: dict[str, set[int]] = defaultdict(set)
    surveys: dict[tuple[str, str], tuple[int, Event]] = {}
    for arrival, event in enumerate(events):
        if event[0] == "click":
            active[event[1]].add(event[2])
        elif (event[1], event[2]) not in surveys:
            surveys[event[1], event[2]] = (arrival, event)
    counts: Tally[Key] = Tally()
    for _, event in surveys.values():
        _, user, _, e, survey, action, score, _ = event
        days = sum(1 for d in range(e - 27, e + 1) if d in active[user])
        segment = (crossed.ENGAGEMENT, level(days))
        for d in range(e, e + 30):
            counts[(*segment, "survey_events", "30d", d)] += 1
            if survey == "nps" and action == "answered" and d < e + 7:
                counts[(*segment, "nps_responses", "7d", d)] += 1
            if survey == "nps" and action == "answered" and score >= 9:
                counts[(*segment, "nps_promoters", "30d", d)] += 1
            if survey == "csat" and action == "answered" and d < e + 7:
                counts[(*segment, "csat_score_sum", "7d", d)] += score
    all_days = [d for days in active.values() for d in days] + [e[3] for _, e in surveys.values()]
    if not all_days:
        return {}
    for user, days in active.items():
        answers = [
            (e[3], e[7], arrival, e[6])
            for arrival, e in surveys.values()
            if e[1] == user and e[4] == "nps" and e[5] == "answered"
        ]
        for d in range(min(all_days), max(all_days) + 61):
            for w in (7, 30):
                if not any(x in days for x in range(d - 2 * w + 1, d - w + 1)):
                    continue
                in_period = [a for a in answers if d - 2 * w + 1 <= a[0] <= d - w]
                if not in_period:
                    continue  # group none: not a counter of its own
                latest = max(in_period)  # by day, time of day, then arrival
                g = group(latest[3])
                counts[("all", "all", f"churn_base:{g}", f"{w}d", d)] += 1
                if not any(x in days for x in range(d - w + 1, d + 1)):
                    counts[("all", "all", f"churned:{g}", f"{w}d", d)] += 1
    return {key: n for key, n in counts.items() if n}


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    for i in range(draw(st.integers(0, 25))):
        user = draw(st.sampled_from("ab"))
        day = D0 + draw(st.integers(0, 70))
        if draw(st.booleans()):
            events.append(("click", user, day))
        else:
            survey = draw(st.sampled_from(["nps", "csat"]))
            action = draw(st.sampled_from(["answered", "answered", "shown", "dismissed"]))
            score = (
                draw(st.integers(0, 10) if survey == "nps" else st.integers(1, 5))
                if action == "answered"
                else -1
            )
            ms = draw(st.sampled_from([0, 1000, 5000])) if survey == "nps" and action == "answered" else 0
            events.append(("survey", user, f"e{i}", day, survey, action, score, ms))
    duplicates = draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    return draw(st.permutations(events + duplicates))


@settings(max_examples=300, deadline=None)
@given(histories())
def test_levels_and_nps_groups_in_any_arrival_order_equal_the_brute_force(events: list[Event]) -> None:
    assert stream(events)[0] == brute_force(events)


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(D0, D0 + 80))
def test_a_rebuild_from_the_states_equals_the_counters_the_events_built(
    events: list[Event], cut: int
) -> None:
    built, states = stream(events)
    rebuilt: Tally[Key] = Tally()
    for state in states.values():
        for segment, runs in crossed.rebuild_runs(state, cut):
            for kpi, window, first, last, delta in runs:
                for day in range(first, last + 1):
                    rebuilt[(*segment, kpi, window, day)] += delta
        for segment, deltas in full_contribution(state, cut).items():
            for (kpi, window, day), delta in deltas.items():
                rebuilt[(*segment, kpi, window, day)] += delta
    assert relevant(rebuilt) == {key: n for key, n in built.items() if key[-1] >= cut}


def test_the_latest_answer_of_the_base_period_decides_and_ties_go_to_the_later_arrival() -> None:
    events: list[Event] = [
        ("click", "u", D0),
        ("survey", "u", "late-in-day", D0, "nps", "answered", 10, 5000),
        ("survey", "u", "early-in-day", D0, "nps", "answered", 0, 1000),  # arrives later, happened earlier
    ]
    counters = stream(events)[0]
    assert counters[("all", "all", "churn_base:promoter", "7d", D0 + 7)] == 1
    assert ("all", "all", "churn_base:detractor", "7d", D0 + 7) not in counters
    tie = [*events, ("survey", "u", "same-time", D0, "nps", "answered", 7, 5000)]
    counters = stream(tie)[0]
    assert counters[("all", "all", "churn_base:passive", "7d", D0 + 7)] == 1  # same time: later arrival
    assert counters == brute_force(tie)


def test_a_late_click_moves_a_survey_to_a_higher_level() -> None:
    history: list[Event] = [("click", "u", D0 + d) for d in range(4)]
    history.append(("survey", "u", "s", D0 + 10, "csat", "answered", 5, 0))
    counters = stream(history)[0]
    assert counters[("engagement", "light", "survey_events", "30d", D0 + 10)] == 1
    counters = stream([*history, ("click", "u", D0 + 9)])[0]  # a fifth active day, arriving late
    assert ("engagement", "light", "survey_events", "30d", D0 + 10) not in counters
    assert counters[("engagement", "regular", "survey_events", "30d", D0 + 10)] == 1


def test_levels() -> None:
    assert [crossed.level_of(n) for n in (0, 1, 4, 5, 14, 15, 28)] == [
        "none", "light", "light", "regular", "regular", "heavy", "heavy",
    ]  # fmt: skip
