"""Per-partition counters (difference vectors) against a plain day-by-day model."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kpimon.agents.pipeline.counters import COUNTER_NAMES, PartitionCounters

SEGMENTS = [("all", "all"), ("plan", "pro")]
KPIS = [tuple(name.split("/")) for name in COUNTER_NAMES[:4]]

run = st.tuples(
    st.sampled_from(SEGMENTS),
    st.sampled_from(KPIS),
    st.integers(0, 40),  # first day
    st.integers(0, 30),  # length - 1
    st.integers(-3, 3),  # delta
)
step = st.one_of(
    st.tuples(st.just("run"), run),
    # Take the dirty groups (all, or up to some days after the drop day, as the engine asks for), then
    # drop before a day.
    st.tuples(st.just("flush"), st.tuples(st.integers(0, 60), st.none() | st.integers(0, 20))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=40))
def test_counters_equal_a_day_by_day_model(steps: list[tuple[str, Any]]) -> None:
    counters = PartitionCounters(0)
    model: dict[tuple[str, str, int], dict[str, int]] = {}  # group -> counter -> value
    sent: dict[tuple[str, str, int], dict[str, int]] = {}
    dirty: set[tuple[str, str, int]] = set()
    for kind, arg in steps:
        if kind == "run":
            segment, (kpi, window), first, extra, delta = arg
            counters.add_runs(segment, [(kpi, window, first, first + extra, delta)])
            for day in range(first, first + extra + 1):
                group = (segment[0], segment[1], day)
                values = model.setdefault(group, dict.fromkeys(COUNTER_NAMES, 0))
                values[f"{kpi}/{window}"] += delta
                dirty.add(group)
        else:
            drop_before, ahead = arg
            until_day = None if ahead is None else drop_before + ahead
            taken = dict(counters.take_dirty(until_day))
            # Exactly the groups touched since the last flush (up to `until_day`), with absolute values;
            # later ones stay dirty for a later flush.
            due = {group for group in dirty if until_day is None or group[2] <= until_day}
            assert taken == {group: model[group] for group in due}
            sent.update(taken)
            dirty -= due
            counters.drop_before(drop_before)
            for group in [g for g in model if g[2] < drop_before and g not in dirty]:
                del model[group]  # flushed and older than the bound: forgotten
    for group, values in model.items():
        assert counters.counts(group) == values, group
    # Days that were dropped are gone; the kept ones are exactly the model's.
    assert counters.groups() == set(model)


def test_a_thirty_day_run_touches_two_difference_vectors() -> None:
    counters = PartitionCounters(0)
    counters.add_runs(("all", "all"), [("active_users", "30d", 100, 129, 1)])
    assert sorted(counters.diffs[("all", "all")]) == [100, 130]
    assert counters.counts(("all", "all", 129))["active_users/30d"] == 1
    assert counters.counts(("all", "all", 130))["active_users/30d"] == 0
    assert len(dict(counters.take_dirty())) == 30


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.tuples(st.just("run"), run), st.tuples(st.just("take"), st.integers(1, 10))), max_size=50
    ),
    st.none() | st.integers(0, 80),
)
def test_runs_between_the_steps_of_a_suspended_flush_are_neither_lost_nor_wrong(
    steps: list[tuple[str, Any]], until_day: int | None
) -> None:
    """The worker's flush sends partials one by one, and a batch may add runs in between.

    With `until_day`, the later groups a flush leaves dirty must survive runs added while it is suspended.
    """
    counters = PartitionCounters(0)
    model: dict[tuple[str, str, int], dict[str, int]] = {}
    flush = None
    sent: dict[tuple[str, str, int], dict[str, int]] = {}
    for kind, arg in steps:
        if kind == "run":
            segment, (kpi, window), first, extra, delta = arg
            counters.add_runs(segment, [(kpi, window, first, first + extra, delta)])
            for day in range(first, first + extra + 1):
                values = model.setdefault((segment[0], segment[1], day), dict.fromkeys(COUNTER_NAMES, 0))
                values[f"{kpi}/{window}"] += delta
        elif kind == "take":
            flush = flush or counters.take_dirty(until_day)
            for _ in range(arg):
                item = next(flush, None)
                if item is None:
                    flush = None
                    break
                sent[item[0]] = item[1]
    for group, values in flush or {}:
        sent[group] = values
    sent.update(counters.take_dirty())
    # Every group was sent, and the last value sent of each is its current value.
    assert sent == model


def test_groups_after_the_until_day_stay_dirty_until_a_flush_reaches_them() -> None:
    counters = PartitionCounters(0)
    counters.add_runs(("all", "all"), [("active_users", "30d", 100, 129, 1)])
    assert sorted(day for (_, _, day), _ in counters.take_dirty(until_day=101)) == [100, 101]
    counters.add_runs(("all", "all"), [("active_users", "30d", 110, 139, 1)])  # a second user, later
    assert list(counters.take_dirty(until_day=101)) == []  # nothing of days <= 101 changed since
    taken = dict(counters.take_dirty(until_day=120))
    assert sorted(day for _, _, day in taken) == list(range(102, 121))
    # Sent late, with the values of the time they are sent: both users from day 110 on.
    assert taken[("all", "all", 109)]["active_users/30d"] == 1
    assert taken[("all", "all", 110)]["active_users/30d"] == 2
    assert sorted(day for (_, _, day), _ in counters.take_dirty()) == list(range(121, 140))
    assert counters.groups() == {("all", "all", day) for day in range(100, 140)}


def test_dirty_groups_come_newest_first_and_those_not_taken_stay_dirty() -> None:
    counters = PartitionCounters(0)
    counters.add_runs(("all", "all"), [("active_users", "30d", 100, 129, 1)])
    flush = counters.take_dirty(from_day=105, until_day=120)
    first = [next(flush)[0][2] for _ in range(3)]
    assert first == [120, 119, 118]  # the newest days first
    flush.close()  # a flush sent in slices stops early: what it did not take is sent by the next one
    taken = [day for (_, _, day), _ in counters.take_dirty()]
    assert taken == sorted(set(range(100, 130)) - {118, 119, 120}, reverse=True)
