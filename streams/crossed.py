"""Engagement x satisfaction: the engagement level of a survey respondent, and the NPS group of a churn
base user (docs/definitions.md, "Engagement x satisfaction"). Read together, measured separately: both
come from the per-user state the stream already keeps (the activity bitmap of dimension all and the
remembered survey facts), so late clicks and late answers revise them exactly.

- **Engagement level.** A survey event of day e counts, besides its own segments, in dimension
  `engagement`, segment `level(active days of its user in [e-27, e])`. A click that adds an active day
  x moves the surveys of days e in [x, x+27] whose level changes: their runs leave the old level's
  segment and join the new one's. The four levels' records exist together (ANY_LEVEL).
- **NPS group.** The churn counters of a day d are also cut by the NPS group of each base user's latest
  NPS answer (by day and time of day, then by arrival) whose day lies in the base period
  [d-2W+1, d-W]. These counters live in the group of dimension all (kpi `churn_base:promoter` and so
  on): their records exist exactly when the all/all engagement record does, and the owner of that group
  publishes them as dimension `nps_group` (streams.records). Group `none` is not counted: it is the rest
  of the base, churn_base minus the three groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from kpimon.streams.activity import spread
from kpimon.streams.engagement import diff_runs, record_click_runs
from kpimon.streams.satisfaction import Run, fact_segments, facts_runs, survey_runs
from kpimon.streams.segments import ALL, SegmentKey
from kpimon.streams.userstate import SurveyFact, UserState

ENGAGEMENT = "engagement"
#: Engagement levels by active days in the 28 days up to the survey's day.
LEVELS: tuple[str, ...] = ("none", "light", "regular", "heavy")
#: Days of the engagement look-back: [e - 27, e].
LOOKBACK = 28

NPS_GROUP = "nps_group"
#: The counted NPS groups; `none` (no answer in the base period) is the rest of the base.
GROUPS: tuple[str, ...] = ("promoter", "passive", "detractor")
NO_GROUP = "none"
#: Churn windows W, as in streams.engagement.
CHURN_WINDOWS: tuple[tuple[str, int], ...] = (("7d", 7), ("30d", 30))


def level_of(active_days: int) -> str:
    """0 `none`, 1..4 `light`, 5..14 `regular`, 15 and more `heavy`."""
    if active_days <= 0:
        return "none"
    if active_days <= 4:
        return "light"
    if active_days <= 14:
        return "regular"
    return "heavy"


def active_days_in(bits: int, base: int, first: int, last: int) -> int:
    """How many days of [first, last] are set in `bits` (bit i = day base + i)."""
    first = max(first - base, 0)
    last -= base
    if last < first:
        return 0
    return ((bits >> first) & ((1 << (last - first + 1)) - 1)).bit_count()


def survey_level(all_bits: int, base: int, day: int) -> str:
    """The engagement level of a survey of `day` by a user with active days `all_bits` (dimension all)."""
    return level_of(active_days_in(all_bits, base, day - LOOKBACK + 1, day))


def level_segment(level: str) -> SegmentKey:
    """The segment of an engagement level."""
    return (ENGAGEMENT, level)


#: Counts every survey event in each of the four level segments (window 30d, like survey_events): the
#: levels' records exist together, whenever the all/all satisfaction records do, so a level emptied by a
#: late click keeps its records (zeros) instead of leaving stale ones in the compacted topic.
ANY_LEVEL: tuple[str, str] = ("any_level_survey_events", "30d")


def any_level_runs(day: int, from_day: int | None = None) -> list[tuple[SegmentKey, list[Run]]]:
    """The ANY_LEVEL runs of one survey event of `day`, in every level segment (clipped to `from_day`)."""
    first, last = day if from_day is None else max(day, from_day), day + 29
    if last < first:
        return []
    runs: list[Run] = [(*ANY_LEVEL, first, last, 1)]
    return [(level_segment(level), runs) for level in LEVELS]


def fact_runs(fact: SurveyFact, from_day: int | None = None) -> list[Run]:
    """The satisfaction runs of a remembered survey, clipped to days >= `from_day`."""
    day, survey, action, score, *_ = fact
    runs = survey_runs(day, survey, action, None if score < 0 else score)
    if from_day is not None:
        runs = [(k, w, max(a, from_day), b, d) for k, w, a, b, d in runs if b >= from_day]
    return runs


def level_runs(
    facts: Iterable[SurveyFact], all_bits: int, base: int, from_day: int | None = None
) -> Iterator[tuple[SegmentKey, list[Run]]]:
    """The runs of remembered surveys in their engagement segments (for rebuilding counters)."""
    for fact in facts:
        yield level_segment(survey_level(all_bits, base, fact[0])), fact_runs(fact, from_day)


def level_moves(
    facts: Iterable[SurveyFact],
    day: int,
    old_bits: int,
    old_base: int,
    new_bits: int,
    new_base: int,
) -> list[tuple[SegmentKey, list[Run]]]:
    """The runs that move surveys between engagement segments when the user's active days (dimension all)
    go from `old_bits` (base `old_base`) to `new_bits` (base `new_base`) by a click on `day`.

    Only surveys of days [day, day + 27] can change level. Each moved survey gives its runs negated in the
    old level's segment and as they are in the new one's.
    """
    out: list[tuple[SegmentKey, list[Run]]] = []
    for fact in facts:
        if not day <= fact[0] < day + LOOKBACK:
            continue
        old = survey_level(old_bits, old_base, fact[0])
        new = survey_level(new_bits, new_base, fact[0])
        if old == new:
            continue
        runs = fact_runs(fact)
        out.append((level_segment(old), [(k, w, a, b, -d) for k, w, a, b, d in runs]))
        out.append((level_segment(new), runs))
    return out


# ---------------------------------------------------------------------------------------------------------
# NPS group of churn base users.

Answer = tuple[int, int, int]
"""(day, ms of day, score) of an answered NPS survey."""

#: Every NPS-group churn counter (kpi, window), kept in the group of dimension all, in the order
#: `churn_contribution` returns their bitmaps.
COUNTERS: tuple[tuple[str, str], ...] = tuple(
    (f"{kpi}:{group}", window)
    for window, _ in CHURN_WINDOWS
    for kpi in ("churn_base", "churned")
    for group in GROUPS
)


def nps_group(score: int) -> str:
    """9..10 `promoter`, 7..8 `passive`, 0..6 `detractor`."""
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def answers_of(facts: Iterable[SurveyFact]) -> list[Answer]:
    """The answered NPS surveys among a user's facts, in arrival order (the facts' order)."""
    return [
        (fact[0], fact[7], fact[3])
        for fact in facts
        if fact[1] == "nps" and fact[2] == "answered" and fact[3] >= 0
    ]


def group_masks(answers: Sequence[Answer], base: int, width: int) -> tuple[int, ...]:
    """Per group of GROUPS, the bitmap (relative to `base`) of days d whose base period [d-2W+1, d-W]
    holds an answer and whose latest such answer (by day, time of day, then arrival) is in that group.

    An answer of day e is in the base period of the days [e+W, e+2W-1]. Going through the answers from the
    earliest to the latest, each one takes its days from the earlier ones: what remains is the latest.
    """
    masks = [0] * len(GROUPS)
    # sorted() is stable: answers of the same day and time keep their arrival order, the later arrival last.
    for day, _, score in sorted(answers, key=lambda answer: (answer[0], answer[1])):
        first, last = day + width - base, day + 2 * width - 1 - base
        if last < 0:
            continue
        span = ((1 << (last - max(first, 0) + 1)) - 1) << max(first, 0)
        index = GROUPS.index(nps_group(score))
        for i in range(len(masks)):
            masks[i] &= ~span
        masks[index] |= span
    return tuple(masks)


def churn_contribution(active_all: int, base: int, answers: Sequence[Answer]) -> tuple[int, ...]:
    """Per counter of COUNTERS, the bitmap of days on which the user counts in it: in the churn base (and
    churned) of W with the latest answer of the base period in that group. All zero without answers."""
    if not answers:
        return (0,) * len(COUNTERS)
    out: list[int] = []
    for _, width in CHURN_WINDOWS:
        active_w = spread(active_all, width)
        in_base = active_w << width
        churned = in_base & ~active_w
        masks = group_masks(answers, base, width)
        out.extend(in_base & mask for mask in masks)
        out.extend(churned & mask for mask in masks)
    return tuple(out)


def churn_runs(before: Sequence[int], before_base: int, after: Sequence[int], after_base: int) -> list[Run]:
    """The runs that turn one `churn_contribution` into another (the bases may differ: a click before
    the user's first remembered day moves the base down)."""
    base = min(before_base, after_base)
    was = [bits << (before_base - base) for bits in before]
    now = [bits << (after_base - base) for bits in after]
    out: list[Run] = []
    diff_runs(COUNTERS, was, now, base, out)
    return out


def churn_deltas(
    active_all: int, base: int, answers: Sequence[Answer], from_day: int | None = None
) -> dict[tuple[str, str, int], int]:
    """The user's whole NPS-group churn contribution as +1 deltas, for days >= `from_day` (rebuilds)."""
    out: dict[tuple[str, str, int], int] = {}
    for run in churn_runs((0,) * len(COUNTERS), base, churn_contribution(active_all, base, answers), base):
        kpi, window, first, last, delta = run
        for day in range(first if from_day is None else max(first, from_day), last + 1):
            out[kpi, window, day] = delta
    return out


# ---------------------------------------------------------------------------------------------------------
# Whole events: what the source engine calls.


def record_click(
    state: UserState, day: int, signup_day: int | None, segments: Sequence[SegmentKey]
) -> list[tuple[SegmentKey, list[Run]]] | None:
    """streams.engagement.record_click_runs, plus what the click changes of the user's surveys: their
    engagement levels and the NPS groups of the churn counters (dimension all).

    None when the click changes nothing (the state need not be written); otherwise (segment, runs) pairs,
    a segment possibly more than once. The lists are shared: treat them as read-only.
    """
    old_bits, old_base = state.segments.get(ALL, 0), state.base
    changes = record_click_runs(state, day, signup_day, segments)
    if changes is None:
        return None
    out = list(changes.items())
    if not state.surveys:
        return out
    new_bits, new_base = state.segments.get(ALL, 0), state.base
    if new_bits << (new_base - min(new_base, old_base)) == old_bits << (old_base - min(new_base, old_base)):
        return out  # the day was active in dimension all already: no level and no base changes
    out.extend(level_moves(state.surveys.values(), day, old_bits, old_base, new_bits, new_base))
    answers = answers_of(state.surveys.values())
    if answers:
        runs = churn_runs(
            churn_contribution(old_bits, old_base, answers),
            old_base,
            churn_contribution(new_bits, new_base, answers),
            new_base,
        )
        if runs:
            out.append((ALL, runs))
    return out


def record_survey(state: UserState, event_id: str, fact: SurveyFact) -> list[tuple[SegmentKey, list[Run]]]:
    """Remember a new (not yet de-duplicated away) survey fact; return the runs it adds: in its own
    segments, in its engagement level's segment and, for an NPS answer, of the NPS-group churn counters."""
    is_answer = fact[1] == "nps" and fact[2] == "answered" and fact[3] >= 0
    answers = answers_of(state.surveys.values()) if is_answer else []
    state.surveys[event_id] = fact
    runs = fact_runs(fact)
    out: list[tuple[SegmentKey, list[Run]]] = [(segment, runs) for segment in fact_segments(fact)]
    all_bits, base = state.segments.get(ALL, 0), state.base
    out.append((level_segment(survey_level(all_bits, base, fact[0])), runs))
    out.extend(any_level_runs(fact[0]))
    if is_answer and all_bits:
        churn = churn_runs(
            churn_contribution(all_bits, base, answers),
            base,
            churn_contribution(all_bits, base, [*answers, (fact[0], fact[7], fact[3])]),
            base,
        )
        if churn:
            out.append((ALL, churn))
    return out


def rebuild_runs(state: UserState, from_day: int | None = None) -> Iterator[tuple[SegmentKey, list[Run]]]:
    """Every survey run of the user for days >= `from_day`: the facts' own segments, their engagement
    levels and the NPS-group churn counters (with streams.engagement.full_contribution: the user's whole
    contribution, for rebuilding a partition's counters from the states)."""
    facts = list(state.surveys.values())
    if not facts:
        return
    yield from facts_runs(facts, from_day)
    all_bits, base = state.segments.get(ALL, 0), state.base
    yield from level_runs(facts, all_bits, base, from_day)
    for fact in facts:
        yield from any_level_runs(fact[0], from_day)
    answers = answers_of(facts)
    if answers and all_bits:
        deltas = churn_deltas(all_bits, base, answers, from_day)
        if deltas:
            yield ALL, [(kpi, window, day, day, delta) for (kpi, window, day), delta in deltas.items()]
