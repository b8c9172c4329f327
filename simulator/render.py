"""Drafts to message bytes: valid JSON values, and the deliberately broken ones.

Pure and deterministic: the same draft always gives the same bytes, which is what makes a duplicate a
byte-for-byte repeat. `EXPECTED_REASON` says which rejection `streams.validation` must give each broken kind.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec

from kpimon.simulator.model import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    TS_EPOCH_MS,
    TS_LOCAL,
    TS_UTC,
    Draft,
    InvalidKind,
)
from kpimon.streams.validation import Reason

#: The rejection reason each broken kind must get from `streams.validation.validate`.
EXPECTED_REASON: dict[InvalidKind, Reason] = {
    InvalidKind.NOT_JSON: Reason.INVALID_JSON,
    InvalidKind.NOT_OBJECT: Reason.NOT_AN_OBJECT,
    InvalidKind.MISSING_FIELD: Reason.MISSING_FIELD,
    InvalidKind.WRONG_TYPE: Reason.WRONG_TYPE,
    InvalidKind.EMPTY_STRING: Reason.INVALID_VALUE,
    InvalidKind.BAD_TIMESTAMP: Reason.INVALID_TIMESTAMP,
    InvalidKind.FUTURE_TIMESTAMP: Reason.FUTURE_TIMESTAMP,
    InvalidKind.NOT_UTF8: Reason.INVALID_JSON,
    InvalidKind.UNKNOWN_ENUM: Reason.INVALID_VALUE,
    InvalidKind.SCORE_OUT_OF_RANGE: Reason.SCORE_OUT_OF_RANGE,
    InvalidKind.SCORE_MISSING: Reason.SCORE_MISSING,
    InvalidKind.SCORE_FORBIDDEN: Reason.SCORE_FORBIDDEN,
    InvalidKind.COMMENT_TOO_LONG: Reason.INVALID_VALUE,
}

_EPOCH = datetime(1970, 1, 1)  # naive on purpose: the offset is written by hand below
_encoder = msgspec.json.Encoder()


def format_ts(ms: int, style: int, tz_min: int) -> str | int:
    """An event time as a client writes it: RFC 3339 in UTC or in local time with the offset, or epoch ms."""
    if style == TS_EPOCH_MS:
        return ms
    offset = tz_min if style == TS_LOCAL else 0
    # Hand-rolled rather than datetime.isoformat: this runs for most of the lines and is twice as fast.
    day, rest = divmod(ms + offset * MINUTE_MS, DAY_MS)
    hour, rest = divmod(rest, HOUR_MS)
    minute, rest = divmod(rest, MINUTE_MS)
    second, milli = divmod(rest, 1000)
    suffix = "Z" if style == TS_UTC else _offset_text(offset)
    return f"{_date_text(day)}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}{suffix}"


@lru_cache(maxsize=1 << 12)
def _date_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).date().isoformat()


@lru_cache(maxsize=64)
def _offset_text(offset_min: int) -> str:
    hours, minutes = divmod(abs(offset_min), 60)
    return f"{'-' if offset_min < 0 else '+'}{hours:02d}:{minutes:02d}"


@lru_cache(maxsize=1 << 16)
def format_signup(ms: int, style: int) -> str | int:
    """signup_ts as the backend writes it: RFC 3339 UTC to the second, or epoch ms (cached: one per user)."""
    if style == TS_EPOCH_MS:
        return ms
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="seconds") + "Z"


def fields(draft: Draft) -> dict[str, Any]:
    """The JSON object of a valid event, optional fields left out when absent."""
    obj: dict[str, Any] = {"event_id": draft.event_id, "user_id": draft.user_id}
    if draft.topic == "clicks":
        obj["type"] = draft.type
    else:
        obj["survey"] = draft.survey
        obj["action"] = draft.action
        if draft.score is not None:
            obj["score"] = draft.score
        if draft.comment is not None:
            obj["comment"] = draft.comment
    obj["ts"] = format_ts(draft.ts_ms, draft.ts_style, draft.tz_min)
    if draft.session_id is not None:
        obj["session_id"] = draft.session_id
    if draft.platform is not None:
        obj["platform"] = draft.platform
    if draft.plan is not None:
        obj["plan"] = draft.plan
    if draft.signup_ms is not None:
        obj["signup_ts"] = format_signup(draft.signup_ms, draft.signup_style)
    if draft.properties is not None:
        obj["properties"] = draft.properties
    return obj


def render(draft: Draft) -> bytes:
    """The message value of a draft (no trailing newline); broken drafts are broken their way."""
    obj = fields(draft)
    if draft.invalid is None:
        return _encoder.encode(obj)
    return _BREAKERS[draft.invalid](draft, obj, draft.variant)


# ---------------------------------------------------------------------------------------------------------
# Breaking messages. Each breaker changes exactly one thing, so exactly one rule is violated.


def _pick(options: tuple[Any, ...], variant: int) -> Any:
    return options[variant % len(options)]


def _answered(draft: Draft, obj: dict[str, Any], variant: int) -> dict[str, Any]:
    """The object as an answered survey with a valid score (for breakers that need one)."""
    if "score" not in obj:
        obj["action"] = "answered"
        obj["score"] = variant % 11 if draft.survey == "nps" else 1 + variant % 5
    return obj


def _not_json(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    encoded = _encoder.encode(obj)
    match variant % 4:
        case 0:
            return encoded[: len(encoded) // 2]  # truncated on the way
        case 1:
            return encoded[:-1] + b",}"  # trailing comma from a hand-rolled serializer
        case 2:
            return repr(obj).encode()  # a Python dict printed instead of serialized
        case _:
            return b"ERROR 502 Bad Gateway: upstream timed out"


def _not_object(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    match variant % 4:
        case 0:
            return _encoder.encode([obj])  # a batch sent as one message
        case 1:
            return _encoder.encode(draft.ts_ms)  # a number
        case 2:
            return _encoder.encode(_encoder.encode(obj).decode())  # JSON encoded twice: a string
        case _:
            return b"null"


_REQUIRED_CLICK = ("event_id", "user_id", "ts", "type")
_REQUIRED_SURVEY = ("event_id", "user_id", "ts", "survey", "action")


def _missing_field(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    required = _REQUIRED_CLICK if draft.topic == "clicks" else _REQUIRED_SURVEY
    del obj[_pick(required, variant)]
    return _encoder.encode(obj)


def _wrong_type(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    # Only fields the topic's schema knows: an unknown field of the wrong type would be ignored, not rejected.
    options: tuple[str, ...] = ("ts_seconds", "user_id", "platform")
    options += ("session_id", "type", "properties") if draft.topic == "clicks" else ("score",)
    match _pick(options, variant):
        case "ts_seconds":
            obj["ts"] = draft.ts_ms / 1000  # epoch seconds as a float
        case "user_id":
            obj["user_id"] = 100_000 + variant  # a numeric id from another system
        case "platform":
            obj["platform"] = ["ios", "web"]
        case "session_id":
            obj["session_id"] = variant
        case "type":
            obj["type"] = [draft.type]
        case "properties":
            obj["properties"] = "feature=export"
        case _:
            obj = _answered(draft, obj, variant)
            obj["score"] = str(obj["score"])
    return _encoder.encode(obj)


def _empty_string(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    options = ("event_id", "user_id", "platform", "plan") + (("type",) if draft.topic == "clicks" else ())
    obj[_pick(options, variant)] = ""
    return _encoder.encode(obj)


def _bad_timestamp(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    text = str(format_ts(draft.ts_ms, TS_UTC, 0))  # 2026-11-24T10:00:00.123Z
    match variant % 4:
        case 0:
            obj["ts"] = text[:-1]  # local time without an offset
        case 1:
            obj["ts"] = text[:-1].replace("T", " ")
        case 2:
            obj["ts"] = f"{text[8:10]}/{text[5:7]}/{text[:4]} {text[11:16]}"  # 24/11/2026 10:00
        case _:
            obj["signup_ts"] = text[:10]  # a date without a time
    return _encoder.encode(obj)


def _future_timestamp(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    return _encoder.encode(obj)  # the model already moved ts into the future


def _not_utf8(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    # Latin-1 text where UTF-8 is required: é and è as single bytes.
    if draft.topic == "clicks":
        obj["properties"] = {"search_text": "café crème"}
    else:
        obj["comment"] = "très bien, café compris"
    return _encoder.encode(obj).replace("é".encode(), b"\xe9").replace("è".encode(), b"\xe8")


def _unknown_enum(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    if variant % 2:
        obj["survey"] = _pick(("ces", "NPS", "csat_v2"), variant >> 1)
    else:
        obj["action"] = _pick(("clicked", "submitted", "closed"), variant >> 1)
    return _encoder.encode(obj)


def _score_out_of_range(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    obj = _answered(draft, obj, variant)
    obj["score"] = _pick((11, -1, 100) if draft.survey == "nps" else (0, 6, 10), variant)
    return _encoder.encode(obj)


def _score_missing(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    obj["action"] = "answered"
    obj.pop("score", None)
    return _encoder.encode(obj)


def _score_forbidden(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    score = obj.get("score", variant % 11 if draft.survey == "nps" else 1 + variant % 5)
    obj["action"] = _pick(("shown", "dismissed"), variant)
    obj["score"] = score
    return _encoder.encode(obj)


_RANT = "The export keeps failing on large projects and support has not answered my ticket for days. "


def _comment_too_long(draft: Draft, obj: dict[str, Any], variant: int) -> bytes:
    obj = _answered(draft, obj, variant)
    length = 2001 + variant % 1000
    obj["comment"] = (_RANT * (length // len(_RANT) + 1))[:length]
    return _encoder.encode(obj)


_BREAKERS: dict[InvalidKind, Callable[[Draft, dict[str, Any], int], bytes]] = {
    InvalidKind.NOT_JSON: _not_json,
    InvalidKind.NOT_OBJECT: _not_object,
    InvalidKind.MISSING_FIELD: _missing_field,
    InvalidKind.WRONG_TYPE: _wrong_type,
    InvalidKind.EMPTY_STRING: _empty_string,
    InvalidKind.BAD_TIMESTAMP: _bad_timestamp,
    InvalidKind.FUTURE_TIMESTAMP: _future_timestamp,
    InvalidKind.NOT_UTF8: _not_utf8,
    InvalidKind.UNKNOWN_ENUM: _unknown_enum,
    InvalidKind.SCORE_OUT_OF_RANGE: _score_out_of_range,
    InvalidKind.SCORE_MISSING: _score_missing,
    InvalidKind.SCORE_FORBIDDEN: _score_forbidden,
    InvalidKind.COMMENT_TOO_LONG: _comment_too_long,
}
