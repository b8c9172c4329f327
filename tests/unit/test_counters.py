"""Per-partition counters (difference vectors) against a plain day-by-day model."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.counters import COUNTER_NAMES, PartitionCounters

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
    st.tuples(st.just("flush"), st.integers(0, 60)),  # take the dirty groups, then drop before a day
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
            taken = dict(counters.take_dirty())
            # Exactly the groups touched since the last flush, with their absolute values.
            assert taken == {group: model[group] for group in dirty}
            sent.update(taken)
            dirty.clear()
            counters.drop_before(arg)
            for group in [g for g in model if g[2] < arg]:
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
    )
)
def test_runs_between_the_steps_of_a_suspended_flush_are_neither_lost_nor_wrong(
    steps: list[tuple[str, Any]],
) -> None:
    """The worker's flush sends partials one by one, and a batch may add runs in between."""
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
            flush = flush or counters.take_dirty()
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
