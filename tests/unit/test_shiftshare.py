"""Properties of the shift-share split (monitoring/shiftshare.py) against brute force.

The recording rules do the same math in PromQL (their promtool tests: deploy/prometheus/tests/shiftshare.yaml;
the end-to-end test compares Prometheus' values with `decompose` on the reference's KPIs). Here the Python
version is held to what the split promises: for NPS computed from raw answers, the segments' rate and mix
effects sum exactly to the change of the all/all NPS; for any weights and values, to sum(w' r') - sum(w r);
the midpoint convention makes the split antisymmetric in time; a rate that did not move has no rate effect, a
weight that did not move no mix effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.shiftshare import Effect, Segment, decompose

SEGMENTS = ("android", "ios", "web", "unknown")
#: One survey answer: (segment, score 0..10).
answers = st.lists(st.tuples(st.sampled_from(SEGMENTS), st.integers(0, 10)), min_size=1, max_size=200)
segment = st.builds(
    Segment,
    st.integers(0, 1000).map(float),
    st.one_of(st.none(), st.floats(-100, 100, allow_nan=False)),
).map(lambda s: Segment(0.0, None) if s.n == 0 or s.value is None else s)
weeks = st.dictionaries(st.sampled_from(SEGMENTS), segment, max_size=len(SEGMENTS))


def nps(scores: list[int]) -> float:
    """100 x (promoters - detractors) / answers: the KPI's definition (docs/definitions.md)."""
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return 100 * (promoters - detractors) / len(scores)


def by_segment(week: list[tuple[str, int]]) -> dict[str, Segment]:
    """Per segment: its answers and its NPS (segments without answers have no series, like the gauges)."""
    out: dict[str, Segment] = {}
    for name in SEGMENTS:
        scores = [score for seg, score in week if seg == name]
        if scores:
            out[name] = Segment(float(len(scores)), nps(scores))
    return out


def weighted_mean(week: Mapping[str, Segment]) -> float:
    """Brute force: sum(n_s r_s) / sum(n_s) over the segments with a value (0 without any)."""
    total = sum(s.n for s in week.values())
    return sum(s.n * s.value for s in week.values() if s.value is not None) / total if total else 0.0


def parts(split: Mapping[str, Effect]) -> float:
    return sum(effect.total for effect in split.values())


@settings(max_examples=300, deadline=None)
@given(answers, answers)
def test_the_parts_sum_to_the_all_all_nps_change(
    before: list[tuple[str, int]], after: list[tuple[str, int]]
) -> None:
    """Every answer is in exactly one platform: the parts are the all/all change, no overlap."""
    change = nps([s for _, s in after]) - nps([s for _, s in before])
    split = decompose(by_segment(before), by_segment(after))
    assert math.isclose(parts(split), change, abs_tol=1e-9)
    assert set(split) == {seg for seg, _ in before} | {seg for seg, _ in after}


@settings(max_examples=300, deadline=None)
@given(weeks, weeks)
def test_the_parts_sum_to_the_change_of_the_weighted_mean(
    before: dict[str, Segment], after: dict[str, Segment]
) -> None:
    """Any weights, any values, segments missing or without a value in either week."""
    split = decompose(before, after)
    assert math.isclose(parts(split), weighted_mean(after) - weighted_mean(before), abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(weeks, weeks)
def test_the_midpoint_split_is_antisymmetric_in_time(
    before: dict[str, Segment], after: dict[str, Segment]
) -> None:
    """Going back from `after` to `before` undoes each segment's rate and mix effect exactly."""
    forward, backward = decompose(before, after), decompose(after, before)
    assert forward.keys() == backward.keys()
    for name, effect in forward.items():
        assert math.isclose(effect.rate, -backward[name].rate, abs_tol=1e-9)
        assert math.isclose(effect.mix, -backward[name].mix, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(weeks, st.lists(st.integers(1, 1000), min_size=len(SEGMENTS), max_size=len(SEGMENTS)))
def test_unchanged_rates_have_no_rate_effect_unchanged_weights_no_mix_effect(
    week: dict[str, Segment], counts: list[int]
) -> None:
    defined = {name: seg for name, seg in week.items() if seg.value is not None}
    reweighted = {name: Segment(float(counts[i]), seg.value) for i, (name, seg) in enumerate(defined.items())}
    assert all(effect.rate == 0 for effect in decompose(defined, reweighted).values())
    moved = {name: Segment(seg.n, (seg.value or 0.0) - 7.5) for name, seg in defined.items()}
    split = decompose(defined, moved)
    assert all(math.isclose(effect.mix, 0.0, abs_tol=1e-9) for effect in split.values())
    if defined:
        assert math.isclose(parts(split), -7.5, abs_tol=1e-9)  # every rate down 7.5: the mean too


def test_a_worked_example() -> None:
    """The promtool test's numbers: android's drop carries 25 of the 27.5 points, ios' lost answers 2.5."""
    before = {"android": Segment(100, 40), "ios": Segment(100, 20), "web": Segment(200, 60)}
    after = {"android": Segment(150, -40), "ios": Segment(50, 20), "web": Segment(200, 60)}
    split = decompose(before, after)
    assert split == {"android": Effect(-25.0, 0.0), "ios": Effect(0.0, -2.5), "web": Effect(0.0, 0.0)}


@given(
    st.dictionaries(st.sampled_from(SEGMENTS), st.integers(0, 10_000), max_size=4),
    st.dictionaries(st.sampled_from(SEGMENTS), st.integers(0, 10_000), max_size=4),
)
def test_a_count_splits_into_the_segments_own_changes(before: dict[str, int], after: dict[str, int]) -> None:
    """DAU: a segment's part is its own change (from or to 0 when missing), the mix effect 0."""
    split = decompose(
        {s: Segment(1.0, float(v)) for s, v in before.items()},
        {s: Segment(1.0, float(v)) for s, v in after.items()},
        count=True,
    )
    assert parts(split) == sum(after.values()) - sum(before.values())
    assert all(effect.mix == 0 for effect in split.values())
