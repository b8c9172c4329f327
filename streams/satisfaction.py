"""Satisfaction KPI math: what one survey event adds to the windowed counters, and the derived scores.

A survey event on day e counts in the 7d window of days e..e+6 and the 30d window of days e..e+29, so
it becomes runs of +delta over those days (the same shape as the engagement runs), per counter. Counters
are sums, so the counters of a partition are the sum of its users' survey facts, which the user state
keeps for the days that can still change (so a restart can rebuild them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kpimon.streams.segments import SegmentKey
from kpimon.streams.userstate import SurveyFact

Run = tuple[str, str, int, int, int]
"""(kpi, window, first_day, last_day, delta), as in streams.engagement."""

WINDOWS: tuple[tuple[str, int], ...] = (("7d", 7), ("30d", 30))

#: Every satisfaction counter (kpi, window). `survey_events` 30d (every de-duplicated survey event)
#: decides whether a segment-day has satisfaction records; `csat_score_sum` is the numerator of csat_mean.
_PER_WINDOW = (
    "nps_responses",
    "nps_promoters",
    "nps_passives",
    "nps_detractors",
    "nps_shown",
    "nps_dismissed",
    "csat_responses",
    "csat_satisfied",
    "csat_score_sum",
    "csat_shown",
    "csat_dismissed",
)
COUNTERS: tuple[tuple[str, str], ...] = (
    *((kpi, window) for window, _ in WINDOWS for kpi in _PER_WINDOW),
    ("survey_events", "30d"),
)


def nps_bucket(score: int) -> str:
    """promoters (9..10), passives (7..8) or detractors (0..6)."""
    return "nps_promoters" if score >= 9 else "nps_passives" if score >= 7 else "nps_detractors"


def survey_counters(survey: str, action: str, score: int | None) -> list[tuple[str, int]]:
    """The (counter kpi, delta) pairs one de-duplicated survey event adds in each window."""
    if action == "shown":
        return [(f"{survey}_shown", 1)]
    if action == "dismissed":
        return [(f"{survey}_dismissed", 1)]
    if score is None:  # validation guarantees a score on an answer; nothing to count without one
        return []
    if survey == "nps":
        return [("nps_responses", 1), (nps_bucket(score), 1)]
    out = [("csat_responses", 1), ("csat_score_sum", score)]
    if score >= 4:
        out.append(("csat_satisfied", 1))
    return out


def survey_runs(day: int, survey: str, action: str, score: int | None) -> list[Run]:
    """The counter runs of one de-duplicated survey event on `day`."""
    runs: list[Run] = [
        (kpi, window, day, day + size - 1, delta)
        for window, size in WINDOWS
        for kpi, delta in survey_counters(survey, action, score)
    ]
    runs.append(("survey_events", "30d", day, day + 29, 1))
    return runs


def fact_segments(fact: SurveyFact) -> tuple[SegmentKey, ...]:
    """The segments a remembered survey counts in."""
    _, _, _, _, platform, plan, stage = fact
    return (("all", "all"), ("platform", platform), ("plan", plan), ("stage", stage))


def facts_runs(
    facts: Iterable[SurveyFact], from_day: int | None = None
) -> Iterator[tuple[SegmentKey, list[Run]]]:
    """Runs of remembered surveys, clipped to days >= `from_day` (for rebuilding counters)."""
    for fact in facts:
        day, survey, action, score, *_ = fact
        runs = survey_runs(day, survey, action, None if score < 0 else score)
        if from_day is not None:
            runs = [(k, w, max(a, from_day), b, d) for k, w, a, b, d in runs if b >= from_day]
        for segment in fact_segments(fact):
            yield segment, runs


def nps_score(promoters: int, detractors: int, responses: int) -> float | None:
    """100 x (promoters - detractors) / responses; None (undefined) without responses."""
    return 100 * (promoters - detractors) / responses if responses else None


def share(numerator: int, denominator: int) -> float | None:
    """numerator / denominator; None (undefined) when the denominator is 0."""
    return numerator / denominator if denominator else None
