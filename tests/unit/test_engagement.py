"""Engagement KPI math: hand-computed histories, then event-by-event deltas against a brute-force recount."""

from __future__ import annotations

import random
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpimon.streams import retention
from kpimon.streams.engagement import (
    ACTIVE_1D,
    ACTIVE_7D,
    ACTIVE_30D,
    CHURN_BASE_7D,
    CHURN_BASE_30D,
    CHURNED_7D,
    CHURNED_30D,
    DORMANT,
    NEW,
    RESURRECTING,
    RETURNING,
    STATE_HORIZON,
    SegmentDeltas,
    churn_rate,
    expand,
    expiry_cutoff,
    full_contribution,
    full_contribution_runs,
    is_known,
    record_click,
    record_click_runs,
    record_exists,
    stickiness,
)
from kpimon.streams.segments import ALL, SegmentKey
from kpimon.streams.userstate import UserState

D0 = 20_000  # an arbitrary UTC day number (2024-10-04), so day arithmetic is not anchored at 0
IOS: SegmentKey = ("platform", "ios")
ANDROID: SegmentKey = ("platform", "android")

# (user, day, signup day or None, segments)
Click = tuple[str, int, int | None, tuple[SegmentKey, ...]]
# (dimension, segment, kpi, window, day) -> value
Counters = dict[tuple[str, str, str, str, int], int]


def click(user: str, day: int, signup: int | None = None, *segments: SegmentKey) -> Click:
    return (user, D0 + day, None if signup is None else D0 + signup, segments or (ALL,))


# ---------------------------------------------------------------------------------------------------------
# The brute force, written straight from docs/definitions.md.


def brute_force(clicks: Iterable[Click]) -> Counters:
    """Every engagement counter of every segment and day, recounted from the definitions."""
    clicks = list(clicks)
    active: dict[tuple[str, SegmentKey], set[int]] = defaultdict(set)
    events_of: dict[str, list[tuple[int, int | None]]] = defaultdict(list)
    for user, day, signup, segments in clicks:
        events_of[user].append((day, signup))
        for segment in segments:
            active[user, segment].add(day)
    # New days: an active click on d whose signup day is d; without signup_ts, the first active day.
    new_days: dict[str, set[int]] = {}
    for user, events in events_of.items():
        first = min(day for day, _ in events)
        new_days[user] = {day for day, signup in events if (first if signup is None else signup) == day}
    if not clicks:
        return {}
    low = min(day for _, day, _, _ in clicks)
    high = max(day for _, day, _, _ in clicks) + STATE_HORIZON + 1
    counts: Tally[tuple[str, str, str, str, int]] = Tally()
    for (user, (dimension, name)), days in active.items():
        new = new_days[user]

        def active_in(first: int, last: int, days: set[int] = days) -> bool:
            return any(d in days for d in range(first, last + 1))

        def add(counter: tuple[str, str], d: int, dimension: str = dimension, name: str = name) -> None:
            counts[dimension, name, counter[0], counter[1], d] += 1

        for d in range(low, high + 1):
            if d in days:
                add(ACTIVE_1D, d)
            if active_in(d - 6, d):
                add(ACTIVE_7D, d)
            if active_in(d - 29, d):
                add(ACTIVE_30D, d)
            if d in days and d in new:
                add(NEW, d)
            if d in days and d - 1 in days and d not in new:
                add(RETURNING, d)
            if d in days and d - 1 not in days and d not in new:
                add(RESURRECTING, d)
            if d not in days and d - 1 in days:
                add(DORMANT, d)
            for base, churned, w in ((CHURN_BASE_7D, CHURNED_7D, 7), (CHURN_BASE_30D, CHURNED_30D, 30)):
                if active_in(d - 2 * w + 1, d - w):
                    add(base, d)
                    if not active_in(d - w + 1, d):
                        add(churned, d)
            if dimension == "stage":
                continue  # retention is cut by all, platform and plan only
            # Retention, kept on the day d it is observed: the cohort of c = d - k (new and active on c),
            # retained when also active on d, and whether anyone was active in [c - 59, c].
            for k in retention.OFFSETS:
                c, w = d - k, retention.window(k)
                if c in days and c in new:
                    add((retention.COHORT, w), d)
                    if d in days:
                        add((retention.RETAINED, w), d)
                if active_in(c - 59, c):
                    add((retention.PRESENT, w), d)
    return dict(counts)


# ---------------------------------------------------------------------------------------------------------
# The stream side: what the agent does, with counters as a plain dict.


class Agent:
    """One partition's worth of state and counters, driven like the ingest agent drives it."""

    def __init__(self, roundtrip: bool = False, use_runs: bool = False) -> None:
        self.states: dict[str, UserState] = {}
        self.counters: Tally[tuple[str, str, str, str, int]] = Tally()
        self.roundtrip = roundtrip  # store states as bytes between events, like a RocksDB-backed table
        self.stored: dict[str, bytes] = {}
        self.use_runs = use_runs  # range updates (record_click_runs) instead of per-day deltas

    def state(self, user: str) -> UserState:
        if self.roundtrip:
            raw = self.stored.get(user)
            return UserState() if raw is None else UserState.from_bytes(raw)
        return self.states.setdefault(user, UserState())

    def apply(self, event: Click, cutoff: int | None = None) -> SegmentDeltas | None:
        user, day, signup, segments = event
        state = self.state(user)
        known = is_known(state, day, signup, segments)
        if self.use_runs:
            runs = record_click_runs(state, day, signup, segments)
            result = None if runs is None else {segment: expand(changes) for segment, changes in runs.items()}
        else:
            result = record_click(state, day, signup, segments)
        assert known == (result is None)
        if result is not None:
            for (dimension, segment), deltas in result.items():
                for (kpi, window, d), delta in deltas.items():
                    assert delta in (1, -1)
                    self.counters[dimension, segment, kpi, window, d] += delta
            if cutoff is not None:
                state.expire(cutoff)
            if self.roundtrip:
                self.stored[user] = state.to_bytes()
        return result

    def values(self) -> Counters:
        return {key: value for key, value in self.counters.items() if value}


def run(clicks: Iterable[Click]) -> Counters:
    agent = Agent()
    for event in clicks:
        agent.apply(event)
    return agent.values()


def value(counters: Counters, counter: tuple[str, str], day: int, segment: SegmentKey = ALL) -> int:
    return counters.get((*segment, *counter, D0 + day), 0)


def only(deltas: SegmentDeltas | None, segment: SegmentKey = ALL) -> dict[tuple[str, str, int], int]:
    """The engagement deltas of one segment, days relative to D0 (retention: test_retention_math.py)."""
    assert deltas is not None
    return {
        (kpi, window, day - D0): delta
        for (kpi, window, day), delta in deltas.get(segment, {}).items()
        if (kpi, window) not in retention.COUNTERS
    }


# ---------------------------------------------------------------------------------------------------------
# Small known histories.


def test_first_active_day_of_a_user_touches_exactly_its_sixty_days() -> None:
    deltas = only(Agent().apply(click("u", 10)))
    expected = {
        ("active_users", "1d", 10): 1,
        ("lifecycle_new", "1d", 10): 1,
        ("lifecycle_dormant", "1d", 11): 1,
    }
    expected |= {("active_users", "7d", d): 1 for d in range(10, 17)}
    expected |= {("active_users", "30d", d): 1 for d in range(10, 40)}
    expected |= {(kpi, "7d", d): 1 for kpi in ("churn_base", "churned") for d in range(17, 24)}
    expected |= {(kpi, "30d", d): 1 for kpi in ("churn_base", "churned") for d in range(40, 70)}
    assert deltas == expected


def test_the_same_change_as_runs_of_days() -> None:
    runs = record_click_runs(UserState(), D0 + 10, None, (ALL, IOS))
    assert runs is not None
    assert runs[ALL] is runs[IOS]  # one history, one computation
    assert sorted(run for run in runs[ALL] if run[:2] not in retention.COUNTERS) == sorted(
        [
            ("active_users", "1d", D0 + 10, D0 + 10, 1),
            ("active_users", "7d", D0 + 10, D0 + 16, 1),
            ("active_users", "30d", D0 + 10, D0 + 39, 1),
            ("lifecycle_new", "1d", D0 + 10, D0 + 10, 1),
            ("lifecycle_dormant", "1d", D0 + 11, D0 + 11, 1),
            ("churn_base", "7d", D0 + 17, D0 + 23, 1),
            ("churned", "7d", D0 + 17, D0 + 23, 1),
            ("churn_base", "30d", D0 + 40, D0 + 69, 1),
            ("churned", "30d", D0 + 40, D0 + 69, 1),
        ]
    )


def test_a_user_back_after_expiry_is_not_new_again() -> None:
    agent = Agent()
    agent.apply(click("u", 0))
    agent.states["u"].expire(D0 + 100)
    assert agent.states["u"].segments == {}
    deltas = only(agent.apply(click("u", 200)))
    assert ("lifecycle_new", "1d", 200) not in deltas
    assert deltas[("lifecycle_resurrecting", "1d", 200)] == 1
    assert agent.values() == brute_force([click("u", 0), click("u", 200)])


@pytest.mark.parametrize(
    ("day", "dau", "wau", "mau"),
    [
        (0, 1, 1, 1),
        (3, 1, 2, 2),
        (5, 1, 2, 2),
        (9, 0, 2, 2),
        (10, 0, 1, 2),
        (12, 0, 0, 2),
        (20, 1, 1, 3),
        (26, 0, 1, 3),
        (27, 0, 0, 3),  # c's day 20 leaves the 7d window [21, 27]
        (30, 0, 0, 3),  # a's day 0 leaves the 30d window [1, 30], a's day 5 keeps a in
        (33, 0, 0, 2),  # b's day 3 leaves [4, 33]
        (35, 0, 0, 1),  # a's day 5 leaves [6, 35]
        (49, 0, 0, 1),
        (50, 0, 0, 0),
    ],
)
def test_active_users_of_known_history(day: int, dau: int, wau: int, mau: int) -> None:
    counters = run([click("a", 0), click("a", 5), click("b", 3), click("c", 20)])
    assert (value(counters, ACTIVE_1D, day), value(counters, ACTIVE_7D, day)) == (dau, wau)
    assert value(counters, ACTIVE_30D, day) == mau


@pytest.mark.parametrize(
    ("day", "status"),
    [
        (1, NEW),  # explicit signup on day 1
        (2, RETURNING),
        (3, DORMANT),
        (4, RESURRECTING),
        (5, DORMANT),
        (6, None),
    ],
)
def test_each_lifecycle_status(day: int, status: tuple[str, str] | None) -> None:
    counters = run([click("u", 1, 1), click("u", 2, 1), click("u", 4, 1)])
    for counter in (NEW, RETURNING, RESURRECTING, DORMANT):
        assert value(counters, counter, day) == (1 if counter == status else 0), counter


def test_new_without_signup_is_the_first_active_day_only() -> None:
    counters = run([click("u", 3), click("u", 4), click("u", 6)])
    assert [value(counters, NEW, d) for d in range(2, 8)] == [0, 1, 0, 0, 0, 0]
    assert value(counters, RETURNING, 4) == 1
    assert value(counters, RESURRECTING, 6) == 1


def test_signup_on_another_day_is_never_new() -> None:
    counters = run([click("u", 3, 1), click("u", 4, 1)])
    assert value(counters, NEW, 3) == 0
    assert value(counters, RESURRECTING, 3) == 1  # not active on day 2, not new: resurrecting
    assert value(counters, RETURNING, 4) == 1


def test_a_late_event_filling_a_gap_turns_resurrecting_into_returning_and_removes_a_dormant() -> None:
    agent = Agent()
    for event in [click("u", 1, 1), click("u", 2, 1), click("u", 4, 1)]:
        agent.apply(event)
    assert value(agent.values(), RESURRECTING, 4) == 1
    assert value(agent.values(), DORMANT, 3) == 1
    deltas = only(agent.apply(click("u", 3, 1)))
    assert deltas == {
        ("active_users", "1d", 3): 1,
        ("lifecycle_returning", "1d", 3): 1,
        ("lifecycle_dormant", "1d", 3): -1,
        ("lifecycle_resurrecting", "1d", 4): -1,
        ("lifecycle_returning", "1d", 4): 1,
    }


def test_a_late_earlier_first_day_moves_new_for_events_without_signup() -> None:
    agent = Agent()
    agent.apply(click("u", 5))
    deltas = only(agent.apply(click("u", 3)))
    assert deltas[("lifecycle_new", "1d", 3)] == 1
    assert deltas[("lifecycle_new", "1d", 5)] == -1  # day 5 is no longer the first active day
    assert deltas[("lifecycle_resurrecting", "1d", 5)] == 1  # day 4 inactive
    assert deltas[("lifecycle_dormant", "1d", 4)] == 1
    assert deltas[("churn_base", "7d", 10)] == 1
    assert ("churned", "7d", 10) not in deltas  # day 5 is in [4, 10]
    counters = agent.values()
    assert counters == brute_force([click("u", 5), click("u", 3)])


def test_a_signed_event_makes_the_day_new_in_every_segment_the_user_is_active_in() -> None:
    agent = Agent()
    assert agent.apply(click("u", 1, None, ALL, IOS)) is not None  # first active day: new by fallback
    agent.apply(click("u", 4, None, ALL, IOS))
    agent.apply(click("u", 4, None, ALL, ANDROID))
    assert value(agent.values(), RESURRECTING, 4, ANDROID) == 1
    result = agent.apply(click("u", 4, 4, ALL, IOS))  # all its segment-days are active already
    assert result is not None
    assert set(result) == {ALL, IOS, ANDROID}
    for segment in (ALL, IOS, ANDROID):
        assert value(agent.values(), NEW, 4, segment) == 1
        assert value(agent.values(), RESURRECTING, 4, segment) == 0


def test_repeats_change_nothing_and_need_no_write() -> None:
    agent = Agent()
    agent.apply(click("u", 2, None, ALL, IOS))
    agent.apply(click("u", 4, 1, ALL, IOS))
    before = dict(agent.counters)
    assert agent.apply(click("u", 2, None, ALL, IOS)) is None
    assert agent.apply(click("u", 4, 1, ALL, IOS)) is None
    assert agent.apply(click("u", 4, None, IOS)) is None  # a fallback signup day 2 != 4: no new fact
    assert (
        agent.apply(click("u", 2, 2, ALL)) == {}
    )  # a redundant fact (day 2 is new already): write, no delta
    assert agent.apply(click("u", 2, 2, ALL)) is None
    assert dict(agent.counters) == before


def test_churn_of_two_users() -> None:
    history = [click("a", 0), click("b", 0), click("b", 8)]
    counters = run(history)
    assert value(counters, CHURN_BASE_7D, 10) == 2  # base [-3, 3]: a and b
    assert value(counters, CHURNED_7D, 10) == 1  # b is active in [4, 10]
    assert value(counters, CHURN_BASE_7D, 14) == 0  # base [1, 7]: nobody
    assert value(counters, CHURN_BASE_7D, 15) == 1  # base [2, 8]: b
    assert value(counters, CHURNED_7D, 15) == 1  # nobody in [9, 15]
    assert value(counters, CHURN_BASE_30D, 30) == 2  # base [-29, 0]: a and b
    assert value(counters, CHURNED_30D, 30) == 1  # b is active in [1, 30]
    assert value(counters, CHURN_BASE_30D, 40) == 2  # base [-19, 10]
    assert value(counters, CHURNED_30D, 40) == 2  # nobody in [11, 40]
    assert counters == brute_force(history)


@pytest.mark.parametrize(
    ("dau", "mau", "expected"), [(0, 0, None), (3, 0, None), (0, 4, 0.0), (1, 4, 0.25), (4, 4, 1.0)]
)
def test_stickiness(dau: int, mau: int, expected: float | None) -> None:
    assert stickiness(dau, mau) == expected


@pytest.mark.parametrize(
    ("churned", "base", "expected"), [(0, 0, None), (0, 5, 0.0), (1, 4, 0.25), (2, 2, 1.0)]
)
def test_churn_rate(churned: int, base: int, expected: float | None) -> None:
    assert churn_rate(churned, base) == expected


def test_record_exists_exactly_when_someone_was_active_in_the_last_sixty_days() -> None:
    counters = run([click("a", 0)])
    exists = [
        record_exists(value(counters, ACTIVE_30D, d), value(counters, CHURN_BASE_30D, d))
        for d in range(-2, 63)
    ]
    assert exists == [d in range(0, 60) for d in range(-2, 63)]


# ---------------------------------------------------------------------------------------------------------
# Properties: any order, repeats, late days, with and without signup_ts.

SEGMENT_CHOICES = st.tuples(
    st.sampled_from([IOS, ANDROID]), st.sampled_from([("plan", "free"), ("plan", "pro")])
)


@st.composite
def histories(draw: st.DrawFn, max_day: int = 80) -> list[Click]:
    users = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True))
    signups = {user: draw(st.integers(0, max_day)) for user in users}
    clicks: list[Click] = []
    for _ in range(draw(st.integers(1, 40))):
        user = draw(st.sampled_from(users))
        day = draw(st.integers(0, max_day))
        kind = draw(st.sampled_from(["none", "own", "same_day", "near"]))
        signup = {
            "none": None,
            "own": signups[user],
            "same_day": day,
            "near": day + draw(st.integers(-2, 2)),
        }[kind]
        platform, plan = draw(SEGMENT_CHOICES)
        segments = draw(st.sampled_from([(ALL, platform, plan), (ALL, platform), (ALL,)]))
        clicks.append(click(user, day, signup, *segments))
    repeats = draw(st.lists(st.sampled_from(clicks), max_size=10))
    return draw(st.permutations(clicks + repeats))


@settings(max_examples=300, deadline=None)
@given(histories())
def test_deltas_in_any_arrival_order_equal_the_brute_force(clicks: list[Click]) -> None:
    assert run(clicks) == brute_force(clicks)


@settings(max_examples=100, deadline=None)
@given(histories(), st.booleans())
def test_states_stored_as_bytes_between_events_give_the_same_counters(
    clicks: list[Click], use_runs: bool
) -> None:
    agent = Agent(roundtrip=True, use_runs=use_runs)
    for event in clicks:
        agent.apply(event)
    assert agent.values() == brute_force(clicks)


@settings(max_examples=200, deadline=None)
@given(histories(), st.lists(st.integers(-5, 70), min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_expiry_keeps_every_counter_of_days_from_cutoff_plus_89(
    clicks: list[Click], cutoffs: list[int], rnd: random.Random
) -> None:
    agent = Agent()
    highest = None
    for event in clicks:
        cutoff = D0 + rnd.choice(cutoffs) if rnd.random() < 0.5 else None
        agent.apply(event, cutoff)
        if cutoff is not None:
            highest = cutoff if highest is None else max(highest, cutoff)
    if highest is None:
        return
    kept = {key: count for key, count in agent.values().items() if key[-1] >= highest + STATE_HORIZON}
    expected = {
        key: count for key, count in brute_force(clicks).items() if key[-1] >= highest + STATE_HORIZON
    }
    assert kept == expected


def test_expiry_cutoff_keeps_the_oldest_day_a_late_event_still_needs() -> None:
    # Lateness 7 on wall day 66: events of day 59 are still accepted, and day 59's 30d churn base is
    # [0, 29]. So day 0 must survive expiry: an event on day 59 turns the user from churned to retained.
    agent = Agent()
    agent.apply(click("u", 0))
    assert expiry_cutoff(D0 + 66 - 7) <= D0
    assert agent.states["u"].expire(expiry_cutoff(D0 + 66 - 7)) is False  # nothing before day 0 to drop
    assert only(agent.apply(click("u", 59)))[("churned", "30d", 59)] == -1
    assert agent.values() == brute_force([click("u", 0), click("u", 59)])


def test_expiry_cutoff_keeps_what_a_rebuild_of_the_oldest_open_day_reads() -> None:
    # Lateness 7 on wall day 96: day 89 is the oldest day a rebuild recomputes, and its retention record
    # of cohort day 59 (offset 30) exists when someone was active in [0, 59]. Day 0 must stay.
    agent = Agent()
    agent.apply(click("u", 0))
    cutoff = expiry_cutoff(D0 + 96 - 7)
    assert cutoff == D0
    state = agent.states["u"]
    assert state.expire(cutoff) is False
    assert full_contribution(state, from_day=D0 + 89)[ALL][(retention.PRESENT, "30d", D0 + 89)] == 1
    assert state.expire(cutoff + 1) is True  # one day more and the rebuild would miss it
    assert full_contribution(state, from_day=D0 + 89) == {}  # the segment expired with its only day


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.integers(0, 3),  # days the wall clock advances before this event
            st.integers(0, 9),  # how late the event is (days behind the wall clock)
            st.sampled_from([None, 0, 1]),  # signup: none, the event day, the day before
            SEGMENT_CHOICES,
        ),
        max_size=100,
    ),
    st.integers(0, 9),
)
def test_live_traffic_with_expiry_after_every_write_is_exact_and_bounded(
    steps: list[tuple[str, int, int, int | None, tuple[SegmentKey, SegmentKey]]], lateness: int
) -> None:
    """The agent's regime: the wall day advances, events are at most `lateness` days late, and every state
    written is expired at expiry_cutoff(wall day - lateness). Then every counter is exact, for all days."""
    agent = Agent(roundtrip=True)
    clicks: list[Click] = []
    wall = D0
    for user, advance, late, signup, (platform, plan) in steps:
        wall += advance
        day = max(D0, wall - min(late, lateness))
        event = (user, day, None if signup is None else day - signup, (ALL, platform, plan))
        clicks.append(event)
        if agent.apply(event, expiry_cutoff(wall - lateness)) is not None:
            state = UserState.from_bytes(agent.stored[user])
            # Written states span at most the lateness bound plus 60 days: [cutoff, wall].
            assert state.base >= min(expiry_cutoff(wall - lateness), D0)
            for bits in state.segments.values():
                assert state.base + bits.bit_length() - 1 <= wall
    assert agent.values() == brute_force(clicks)


# ---------------------------------------------------------------------------------------------------------
# The state object: bytes, expiry, rebasing.


def typical_state() -> UserState:
    """1 segment per dimension, active 20 of the last 60 days, signup_ts on every event."""
    state = UserState()
    segments = (ALL, ("platform", "ios"), ("plan", "free"), ("stage", "established"))
    state.note_seen(D0)
    for day in range(D0, D0 + 60, 3):
        record_click(state, day, D0 - 100, segments)
    return state


def test_a_typical_state_is_a_few_dozen_bytes_and_round_trips() -> None:
    state = typical_state()
    raw = state.to_bytes()
    assert len(raw) < 100
    assert UserState.from_bytes(raw) == state
    assert state.active_days(("plan", "free")) == list(range(D0, D0 + 60, 3))


def test_an_unknown_state_format_is_refused() -> None:
    raw = bytearray(UserState().to_bytes())
    raw[1] = 9  # the format number, first element of the msgpack array
    with pytest.raises(ValueError, match="format"):
        UserState.from_bytes(bytes(raw))


def test_expire_drops_old_bits_only() -> None:
    state = UserState()
    record_click(state, D0, D0, (ALL, IOS))
    record_click(state, D0 + 10, None, (ALL, ANDROID))
    assert state.expire(D0 - 5) is False  # nothing before the cutoff
    assert state.expire(D0 + 5) is True
    assert state.base == D0 + 5
    assert state.active_days(ALL) == [D0 + 10]
    assert IOS not in state.segments  # a segment with no day left is dropped
    assert state.explicit_new == 0
    assert (state.first_active, state.first_seen) == (D0, D0)  # user-level facts never expire
    assert state.expire(D0 + 5) is False
    assert state.expire(D0 + 8) is False  # only the base moves
    assert state.active_days(ALL) == [D0 + 10]


def test_an_event_before_the_base_rebases() -> None:
    state = UserState()
    record_click(state, D0 + 10, None, (ALL,))
    record_click(state, D0 + 3, D0 + 3, (ALL, IOS))
    assert state.base == D0 + 3
    assert state.active_days(ALL) == [D0 + 3, D0 + 10]
    assert state.active_days(IOS) == [D0 + 3]
    assert state.first_active == D0 + 3
    assert state.first_active_unsigned is False


def test_note_seen_keeps_the_earliest_and_newest_day() -> None:
    state = UserState()
    assert state.note_seen(D0 + 2) is True
    assert state.note_seen(D0 + 5) is True
    assert state.note_seen(D0 + 3) is False
    assert state.note_seen(D0) is True
    assert (state.first_seen, state.last_seen) == (D0, D0 + 5)


def test_partition_and_last_seen_survive_bytes() -> None:
    state = UserState()
    state.note_seen(D0 + 1)
    state.partition = 3
    again = UserState.from_bytes(state.to_bytes())
    assert (again.partition, again.last_seen, again.first_seen) == (3, D0 + 1, D0 + 1)
    assert again == state


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 70), st.sampled_from(["ios", "web"]), st.booleans()), max_size=25))
def test_full_contribution_equals_the_sum_of_record_click_deltas(clicks: list[tuple[int, str, bool]]) -> None:
    state = UserState()
    summed: Tally[tuple[SegmentKey, str, str, int]] = Tally()
    for day, platform, signed in clicks:
        state.note_seen(D0 + day)
        segments = (ALL, ("platform", platform))
        changes = record_click(state, D0 + day, D0 if signed else None, segments)
        for segment, deltas in (changes or {}).items():
            for (kpi, window, d), delta in deltas.items():
                summed[(segment, kpi, window, d)] += delta
    rebuilt: Tally[tuple[SegmentKey, str, str, int]] = Tally()
    for segment, deltas in full_contribution(state).items():
        for (kpi, window, d), delta in deltas.items():
            rebuilt[(segment, kpi, window, d)] += delta
    assert +summed == +rebuilt
    cut = D0 + 30
    partial = full_contribution(state, from_day=cut)
    assert {k for deltas in partial.values() for k in deltas} == {
        (kpi, window, d) for (_, kpi, window, d), n in rebuilt.items() if n and d >= cut
    }


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 70), st.sampled_from(["ios", "web"]), st.booleans()), max_size=25),
    st.one_of(st.none(), st.integers(-5, 80)),
)
def test_full_contribution_runs_cover_exactly_the_days_of_full_contribution(
    clicks: list[tuple[int, str, bool]], from_offset: int | None
) -> None:
    """The runs the counters' rebuild applies are the per-day deltas of `full_contribution`, run-length
    encoded: the same segments, counters and days (those before `from_day` left out)."""
    state = UserState()
    for day, platform, signed in clicks:
        state.note_seen(D0 + day)
        record_click(state, D0 + day, D0 if signed else None, (ALL, ("platform", platform)))
    from_day = None if from_offset is None else D0 + from_offset
    expanded: dict[SegmentKey, dict[tuple[str, str, int], int]] = {}
    for segment, runs in full_contribution_runs(state, from_day):
        days = expanded.setdefault(segment, {})
        for kpi, window, first, last, delta in runs:
            assert first <= last and delta == 1
            for d in range(first, last + 1):
                assert (kpi, window, d) not in days  # runs of one counter never overlap
                days[(kpi, window, d)] = delta
    assert expanded == full_contribution(state, from_day)
