"""The source side without Kafka: events -> user state -> counters; rebuilds equal incremental counters."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kpimon.agents.pipeline.engine import PendingRuns, SourceEngine, rebuild_counters
from kpimon.streams.events import MS_PER_DAY
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Accepted, Policy, validate
from tests import events

NOW = 1_795_500_000_000
TODAY = NOW // MS_PER_DAY
POLICY = Policy(max_lateness_days=90)


def accepted(kind: Any, event: dict[str, Any]) -> Accepted:
    verdict = validate(kind, event["user_id"].encode(), json.dumps(event).encode(), NOW, POLICY)
    assert isinstance(verdict, Accepted), verdict
    return verdict


def click(user: str, days_ago: int, **extra: Any) -> Accepted:
    return accepted("clicks", events.click(user_id=user, ts=NOW - days_ago * MS_PER_DAY, **extra))


def survey(user: str, event_id: str, days_ago: int, action: str = "answered", **extra: Any) -> Accepted:
    ts = NOW - days_ago * MS_PER_DAY
    return accepted("surveys", events.survey(user_id=user, event_id=event_id, ts=ts, action=action, **extra))


def test_a_click_counts_its_user_in_every_segment_and_window() -> None:
    engine, users = SourceEngine(90), dict[bytes, UserState]()
    assert engine.on_event(users, b"u1", 0, click("u1", 0, platform="ios"), NOW) == "accepted"
    counters = engine.partitions[0]
    for dimension, segment in (
        ("all", "all"),
        ("platform", "ios"),
        ("plan", "unknown"),
        ("stage", "onboarding"),
    ):
        counts = counters.counts((dimension, segment, TODAY))
        assert counts["active_users/1d"] == counts["active_users/7d"] == counts["active_users/30d"] == 1
        assert counts["lifecycle_new/1d"] == 1  # first active day without signup_ts: new by fallback
    assert counters.counts(("all", "all", TODAY + 29))["active_users/30d"] == 1
    assert counters.counts(("all", "all", TODAY + 30))["active_users/30d"] == 0
    assert users[b"u1"].partition == 0


def test_a_second_click_the_same_day_writes_nothing() -> None:
    engine, users = SourceEngine(90), dict[bytes, UserState]()
    engine.on_event(users, b"u1", 0, click("u1", 0), NOW)
    written = users[b"u1"]
    users[b"u1"] = written  # same object: a write would replace it with an equal copy; check by counters
    before = engine.partitions[0].counts(("all", "all", TODAY))
    engine.on_event(users, b"u1", 0, click("u1", 0), NOW)
    assert engine.partitions[0].counts(("all", "all", TODAY)) == before


def test_a_duplicate_survey_counts_once_whatever_its_action() -> None:
    engine, users = SourceEngine(90), dict[bytes, UserState]()
    assert engine.on_event(users, b"u1", 0, survey("u1", "s1", 0, action="shown"), NOW) == "accepted"
    assert engine.on_event(users, b"u1", 0, survey("u1", "s1", 0, score=3), NOW) == "duplicate"
    counts = engine.partitions[0].counts(("all", "all", TODAY))
    assert counts["nps_shown/7d"] == 1
    assert counts["nps_responses/7d"] == 0
    assert counts["survey_events/30d"] == 1


def test_passive_types_do_not_make_users_active() -> None:
    engine, users = SourceEngine(90, passive_types=["push_received"]), dict[bytes, UserState]()
    event = accepted("clicks", events.click(user_id="u1", ts=NOW, type="push_received"))
    engine.on_event(users, b"u1", 0, event, NOW)
    assert engine.partitions[0].counts(("all", "all", TODAY))["active_users/1d"] == 0


def test_segment_values_beyond_the_cap_fold_into_other() -> None:
    engine, users = SourceEngine(90, max_segment_values=2), dict[bytes, UserState]()
    for i, platform in enumerate(["ios", "web", "tv", "ios"]):
        engine.on_event(users, f"u{i}".encode(), 0, click(f"u{i}", 0, platform=platform), NOW)
    counters = engine.partitions[0]
    assert counters.counts(("platform", "other", TODAY))["active_users/1d"] == 1
    assert counters.counts(("platform", "ios", TODAY))["active_users/1d"] == 2


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.integers(0, 80),  # days ago
        st.sampled_from(["click", "shown", "answered", "dismissed"]),
        st.sampled_from(["ios", "web", None]),
        st.integers(0, 6),  # survey event id, so duplicates happen
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(EVENTS)
def test_rebuilding_from_states_equals_the_incremental_counters(events: list[tuple[Any, ...]]) -> None:
    engine, users = SourceEngine(90), dict[bytes, UserState]()
    for user, days_ago, action, platform, sid in events:
        extra = {"platform": platform} if platform else {}
        extra["signup_ts"] = NOW - 60 * MS_PER_DAY
        if action == "click":
            event = click(user, days_ago, **extra)
        else:
            event = survey(user, f"s{sid}", days_ago, action=action, **extra)
        engine.on_event(users, user.encode(), 0, event, NOW)
    if not events:
        return
    incremental = engine.partitions[0]
    rebuilt = SourceEngine(90).rebuild(0, users.values(), NOW)
    assert rebuilt.current_day == incremental.current_day
    groups = incremental.groups() | rebuilt.groups()
    assert groups
    for group in groups:
        assert rebuilt.counts(group) == incremental.counts(group), group


def test_partials_carry_absolute_values_and_the_version() -> None:
    engine, users = SourceEngine(90), dict[bytes, UserState]()
    engine.processed("clicks", 0, 41)
    engine.on_event(users, b"u1", 0, click("u1", 0), NOW)
    partials = {p.group: p for p in engine.take_partials(NOW)}
    assert partials[("all", "all", TODAY)].counts["active_users/1d"] == 1
    assert partials[("all", "all", TODAY)].version == 42
    assert list(engine.take_partials(NOW)) == []  # nothing changed since
    (mark,) = engine.take_watermarks()
    assert (mark.source, mark.current_day) == (0, TODAY)
    assert list(engine.take_watermarks()) == []


def test_a_new_owner_wins_over_a_late_partial_of_the_previous_owner() -> None:
    from kpimon.agents.pipeline.aggregation import Aggregator
    from kpimon.agents.pipeline.engine import versioned

    table: dict[bytes, Any] = {}
    agg = Aggregator(4)
    old_owner, new_owner = SourceEngine(90), SourceEngine(90)
    for engine, offset, users in ((old_owner, 500, 1), (new_owner, 120, 2)):
        engine.processed("clicks", 0, offset)
        for i in range(users):
            engine.on_event({}, f"u{i}".encode(), 0, click(f"u{i}", 0), NOW)
    # The new owner (generation 8) re-reads from an older committed offset than the old one (generation 7)
    # had reached: its partials must still win, and a late one of the old owner must not overwrite them.
    for partial in new_owner.take_partials(NOW, generation=8):
        assert agg.on_partial(table, partial)
    for partial in old_owner.take_partials(NOW, generation=7):
        assert not agg.on_partial(table, partial)
    assert agg.global_counts(table, ("all", "all", TODAY))["active_users/1d"] == 2
    assert versioned(8, 0) > versioned(7, 10**9)


def test_sweep_expires_old_days_of_idle_users_of_its_partition_only() -> None:
    engine, users = SourceEngine(7), dict[bytes, UserState]()
    old_now = NOW - 200 * MS_PER_DAY  # the users were active long ago, then went quiet
    for user, partition in ((b"u0", 0), (b"u1", 1)):
        for days_ago in (3, 2):
            click = events.click(user_id=user.decode(), ts=old_now - days_ago * MS_PER_DAY, type="click")
            event = validate("clicks", user, events.message(click), old_now, Policy())
            assert isinstance(event, Accepted)
            engine.on_event(users, user, partition, event, old_now)
    assert users[b"u0"].segments and users[b"u1"].segments
    assert engine.sweep(users, 0, NOW, budget=10) == 1
    assert users[b"u0"].segments == {}  # every bit is older than the horizon now
    assert users[b"u0"].first_active is not None  # what decides "new" for good stays
    assert users[b"u1"].segments  # another partition's user is not written from partition 0
    assert engine.sweep(users, 0, NOW) == 0  # a new pass: nothing left to expire


def test_a_flush_sends_the_days_that_can_be_current_and_later_days_once_they_can() -> None:
    engine, users = SourceEngine(90), dict[bytes, UserState]()
    engine.on_event(users, b"u1", 0, click("u1", 0), NOW)
    counters = engine.partitions[0]
    # Today's click changes 60 days (windows, dormancy, churn bases); only today and tomorrow go now.
    assert {p.day for p in engine.take_partials(NOW)} == {TODAY, TODAY + 1}
    assert {day for _, _, day in counters.groups()} == set(range(TODAY, TODAY + 60))
    engine.on_event(users, b"u2", 0, click("u2", 0), NOW)
    later = NOW + 10 * MS_PER_DAY
    partials = list(engine.take_partials(later))
    assert {p.day for p in partials} == set(range(TODAY, TODAY + 12))
    for partial in partials:  # absolute values as of the flush that sends them
        assert partial.counts == counters.counts(partial.group)
    by_group = {p.group: p for p in partials}
    assert by_group[("all", "all", TODAY + 11)].counts["active_users/30d"] == 2  # u2 included
    assert {p.day for p in engine.take_partials(NOW + 100 * MS_PER_DAY)} == set(range(TODAY + 12, TODAY + 60))
    assert list(engine.take_partials(NOW + 100 * MS_PER_DAY)) == []


def test_the_newest_flushed_day_covers_events_up_to_the_future_bound_and_a_day_more() -> None:
    midnight = (TODAY + 1) * MS_PER_DAY
    engine = SourceEngine(90, max_future_ms=5 * 60 * 1000)
    # An event 5 minutes ahead of 23:56 is tomorrow's: tomorrow can be current, and a day of margin.
    assert engine.newest_flushed_day(midnight - 4 * 60 * 1000) == TODAY + 2
    assert engine.newest_flushed_day(midnight - 6 * 60 * 1000) == TODAY + 1
    assert SourceEngine(90, max_future_ms=0).newest_flushed_day(midnight - 1) == TODAY + 1


@settings(max_examples=60, deadline=None)
@given(EVENTS)
def test_runs_collected_for_a_batch_and_applied_once_give_the_same_counters(
    events: list[tuple[Any, ...]],
) -> None:
    # The batch processor collapses a batch's counter runs (PendingRuns) before applying them: same sums,
    # same dirty groups as applying each run as it comes.
    direct, collapsed = SourceEngine(90), SourceEngine(90)
    direct_users, collapsed_users = dict[bytes, UserState](), dict[bytes, UserState]()
    pending = PendingRuns()
    for user, days_ago, action, platform, sid in events:
        extra = {"platform": platform} if platform else {}
        if action == "click":
            event = click(user, days_ago, **extra)
        else:
            event = survey(user, f"s{sid}", days_ago, action=action, **extra)
        direct.on_event(direct_users, user.encode(), 0, event, NOW)
        collapsed.on_event(collapsed_users, user.encode(), 0, event, NOW, pending)
    collapsed.apply_pending(0, pending)
    assert not pending
    assert collapsed_users == direct_users
    if not events:
        return
    one, other = direct.partitions[0], collapsed.partitions[0]
    assert one.dirty == other.dirty
    assert one.groups() == other.groups()
    for group in one.groups():
        assert one.counts(group) == other.counts(group), group


def test_after_a_rebalance_kept_partitions_send_all_their_partials_again() -> None:
    """A moved aggregate group may have been restored without its last merges: every source resends."""
    engine, users = SourceEngine(90), dict[bytes, UserState]()
    engine.on_event(users, b"u1", 0, click("u1", 0), NOW)
    engine.counters(1)  # a partition this worker loses in the rebalance
    kept = engine.partitions[0]
    assert list(kept.take_dirty())  # flushed once: nothing dirty any more
    assert not list(kept.take_dirty())
    rebuild_counters(engine, {0}, users.values(), NOW)
    assert set(engine.partitions) == {0}
    assert engine.partitions[0] is kept  # kept, not rebuilt
    assert {group for group, _ in kept.take_dirty()} == kept.groups()


def test_after_a_rebalance_new_partitions_are_rebuilt_from_their_users_states_only() -> None:
    source, users = SourceEngine(90), dict[bytes, UserState]()
    source.on_event(users, b"u1", 2, click("u1", 0, platform="ios"), NOW)
    source.on_event(users, b"u2", 3, click("u2", 1, platform="web"), NOW)
    engine = SourceEngine(90)
    rebuild_counters(engine, {2}, users.values(), NOW)
    assert set(engine.partitions) == {2}
    rebuilt, original = engine.partitions[2], source.partitions[2]
    assert rebuilt.groups() == original.groups() and rebuilt.groups()
    assert {g: rebuilt.counts(g) for g in rebuilt.groups()} == {
        g: original.counts(g) for g in original.groups()
    }
