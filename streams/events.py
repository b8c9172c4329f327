"""Input event models: the `clicks` and `surveys` topics, exactly as docs/events.md defines them.

The models are msgspec Structs, so one pass over the bytes decodes *and* validates, and the same
definitions generate the JSON Schemas shipped in docs/schemas/ for producers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

# Field types shared by both topics.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
#: RFC 3339 with an offset, or integer epoch milliseconds.
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)] | int
Comment = Annotated[str, msgspec.Meta(max_length=2000)]

SurveyKind = Literal["nps", "csat"]
SurveyAction = Literal["shown", "answered", "dismissed"]

#: Inclusive score range per survey kind.
SCORE_RANGE: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5)}


class ClickEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An engagement event: a user did something. Marks the user active on the event's UTC day."""

    event_id: Id
    user_id: Id
    ts: Timestamp
    type: Label
    session_id: str | None = None
    signup_ts: Timestamp | None = None
    platform: Label | None = None
    plan: Label | None = None
    properties: dict[str, Any] | None = None


class SurveyEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A satisfaction event: an NPS or CSAT question shown to, answered or dismissed by a user."""

    event_id: Id
    user_id: Id
    ts: Timestamp
    survey: SurveyKind
    action: SurveyAction
    score: int | None = None
    comment: Comment | None = None
    signup_ts: Timestamp | None = None
    platform: Label | None = None
    plan: Label | None = None


Event = ClickEvent | SurveyEvent

MS_PER_DAY = 86_400_000


def epoch_ms(ts: datetime | int) -> int:
    """Epoch milliseconds of an event timestamp (exact integer arithmetic, no float rounding)."""
    if isinstance(ts, int):
        return ts
    return (ts - _EPOCH) // _ONE_MS


def day_of(ms: int) -> int:
    """UTC day number (days since 1970-01-01) of an epoch-milliseconds instant."""
    return ms // MS_PER_DAY


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_ONE_MS = datetime.fromisoformat("1970-01-01T00:00:00.001+00:00") - _EPOCH
