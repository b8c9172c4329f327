"""Segments of an event: the (dimension, segment) pairs it counts in, and the derived lifecycle stage.

docs/definitions.md, "Activity and segments": dimensions are cut one at a time, never crossed, so an event
counts in exactly one segment per dimension, `("all", "all")` included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from kpimon.streams.events import day_of, epoch_ms

#: The segment dimensions, in a fixed order (the per-user state stores a dimension as its index here, so
#: new dimensions may only be appended).
DIMENSIONS: tuple[str, ...] = ("all", "platform", "plan", "stage")

SegmentKey = tuple[str, str]
"""(dimension, segment), e.g. ("platform", "ios")."""

Stage = Literal["onboarding", "established"]

ALL: SegmentKey = ("all", "all")
UNKNOWN = "unknown"
ONBOARDING: Stage = "onboarding"
ESTABLISHED: Stage = "established"
#: An event is `onboarding` while its day is less than this many days after the signup day.
ONBOARDING_DAYS = 14


class Segmentable(Protocol):
    """What segment extraction reads from an event (both ClickEvent and SurveyEvent have it)."""

    @property
    def platform(self) -> str | None: ...

    @property
    def plan(self) -> str | None: ...


def stage_of(event_day: int, signup_day: int) -> Stage:
    """`onboarding` when event_day - signup_day < 14 (a signup after the event too), else `established`."""
    return ONBOARDING if event_day - signup_day < ONBOARDING_DAYS else ESTABLISHED


def signup_day_of(signup_ts: datetime | int | None) -> int | None:
    """UTC day of an event's `signup_ts` (a datetime or epoch ms, as decoded), None when absent."""
    return None if signup_ts is None else day_of(epoch_ms(signup_ts))


def segments_of(event: Segmentable, stage: Stage) -> tuple[SegmentKey, ...]:
    """Every (dimension, segment) the event counts in, ("all", "all") first; absent platform/plan: unknown."""
    return segments_for(event.platform, event.plan, stage)


def segments_for(platform: str | None, plan: str | None, stage: Stage) -> tuple[SegmentKey, ...]:
    """As `segments_of`, from the attribute values: for a caller that folds rare values into `other`
    (at most N values per dimension, a stateful policy that is not this module's) before segmenting."""
    return (
        ALL,
        ("platform", platform or UNKNOWN),
        ("plan", plan or UNKNOWN),
        ("stage", stage),
    )


def event_stage(event_day: int, signup_day: int | None, first_seen_day: int) -> Stage:
    """Stage of an event: its own signup day, else the first day kpimon saw the user stands in for it.

    `first_seen_day` must already include this event (UserState.note_seen before this call), so a user's
    very first event without signup_ts is `onboarding`. That fallback depends on arrival order
    (docs/architecture.md, "What is not guaranteed").
    """
    return stage_of(event_day, first_seen_day if signup_day is None else signup_day)
