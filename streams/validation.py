"""Turn the raw bytes of one input message into an accepted event or a rejection with a reason.

Pure: the wall clock and the policy are arguments, so the worker, `kpimon reference` and the tests
apply the very same rules.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

import msgspec

from kpimon.streams.events import SCORE_RANGE, ClickEvent, SurveyEvent, day_of, epoch_ms

Kind = Literal["clicks", "surveys"]


class Reason(enum.StrEnum):
    """Machine-readable rejection reasons (the `reason` label and dead-letter header)."""

    TOO_LARGE = "too_large"  # bigger than the configured maximum message size
    INVALID_JSON = "invalid_json"  # not UTF-8, or not well-formed JSON (NaN and Infinity included)
    NOT_AN_OBJECT = "not_an_object"  # valid JSON, but an array, number, string, ...
    MISSING_FIELD = "missing_field"  # a required field is absent
    WRONG_TYPE = "wrong_type"  # a field has the wrong JSON type
    INVALID_VALUE = "invalid_value"  # right type, but an empty or too long string, unknown enum value, ...
    INVALID_TIMESTAMP = "invalid_timestamp"  # ts/signup_ts not RFC 3339 with an offset
    SCORE_MISSING = "score_missing"  # an answered survey without a score
    SCORE_FORBIDDEN = "score_forbidden"  # a score on a shown or dismissed survey
    SCORE_OUT_OF_RANGE = "score_out_of_range"  # NPS outside 0..10, CSAT outside 1..5
    KEY_MISMATCH = "key_mismatch"  # user_id differs from the message key
    FUTURE_TIMESTAMP = "future_timestamp"  # more than the allowed skew ahead of the wall clock
    TOO_LATE = "too_late"  # event day older than the lateness bound
    #: Not a validation result: a valid event that kpimon failed to process (a bug). It is dead-lettered
    #: rather than lost or allowed to crash the worker.
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Policy:
    """The validation settings; docs/configuration.md, "Settings" gives the defaults."""

    max_lateness_days: int = 7
    max_future_ms: int = 5 * 60 * 1000
    max_message_bytes: int = 1024 * 1024


class Accepted(NamedTuple):
    """A valid event with its event time and its signup day resolved.

    A named tuple, not a frozen dataclass: one is built per valid message, and a frozen dataclass's
    `__init__` (an `object.__setattr__` per field) cost as much as the msgspec decode itself.
    """

    event: ClickEvent | SurveyEvent
    ts_ms: int
    day: int
    #: UTC day of the event's own signup_ts (None without one), computed once here for every consumer.
    signup_day: int | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid message: why, in a machine-readable reason and a human detail."""

    reason: Reason
    detail: str
    field: str | None = None


Verdict = Accepted | Rejected

_DECODERS: dict[str, msgspec.json.Decoder[ClickEvent] | msgspec.json.Decoder[SurveyEvent]] = {
    "clicks": msgspec.json.Decoder(ClickEvent),
    "surveys": msgspec.json.Decoder(SurveyEvent),
}
#: The deepest nesting of arrays and objects a message may have. msgspec's own limit is Python's recursion
#: limit minus the caller's stack depth, so without a fixed bound the same bytes could decode in one process
#: and fail in another (a worker's stack is deeper than a test's or `kpimon reference`'s): the verdict,
#: even accepted or not, would depend on the caller.
MAX_NESTING = 128

_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_TIMESTAMP_FIELDS = {"ts", "signup_ts"}


def validate(kind: Kind, key: bytes | None, value: bytes | None, now_ms: int, policy: Policy) -> Verdict:
    """Decode and check one message of topic kind `kind` received at wall-clock `now_ms`.

    Never raises because of the input: every failure becomes a `Rejected`.
    """
    if value is None:
        return Rejected(Reason.INVALID_JSON, "empty message (null value)")
    if len(value) > policy.max_message_bytes:
        return Rejected(Reason.TOO_LARGE, f"{len(value)} bytes > {policy.max_message_bytes}")
    if _too_deep(value):
        return Rejected(Reason.INVALID_JSON, f"nested deeper than {MAX_NESTING} levels")
    try:
        event = _DECODERS[kind].decode(value)
    except msgspec.ValidationError as exc:
        return _classify(str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError, OverflowError) as exc:
        return Rejected(Reason.INVALID_JSON, _short(str(exc)))
    return _check(event, key, now_ms, policy)


def _too_deep(value: bytes) -> bool:
    """Whether arrays and objects nest deeper than MAX_NESTING (brackets inside strings do not count)."""
    if value.count(b"[") + value.count(b"{") <= MAX_NESTING:  # C speed: nearly every message stops here
        return False
    depth, in_string, escaped = 0, False, False
    for byte in value:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _check(event: ClickEvent | SurveyEvent, key: bytes | None, now_ms: int, policy: Policy) -> Verdict:
    if key is not None:
        try:
            key_text: str | None = key.decode("utf-8")
        except UnicodeDecodeError:
            key_text = None
        if key_text != event.user_id:
            return Rejected(Reason.KEY_MISMATCH, "user_id differs from the message key", "user_id")
    if isinstance(event, SurveyEvent):
        rejected = _check_score(event)
        if rejected is not None:
            return rejected
    ts_ms = epoch_ms(event.ts)
    if ts_ms > now_ms + policy.max_future_ms:
        return Rejected(Reason.FUTURE_TIMESTAMP, f"ts is {ts_ms - now_ms} ms ahead of the wall clock", "ts")
    day = day_of(ts_ms)
    oldest = day_of(now_ms) - policy.max_lateness_days
    if day < oldest:
        return Rejected(Reason.TOO_LATE, f"event day is older than {policy.max_lateness_days} days", "ts")
    signup_ts = event.signup_ts
    signup_day = None if signup_ts is None else day_of(epoch_ms(signup_ts))
    return Accepted(event, ts_ms, day, signup_day)


def _check_score(event: SurveyEvent) -> Rejected | None:
    if event.action == "answered":
        if event.score is None:
            return Rejected(Reason.SCORE_MISSING, "an answered survey needs a score", "score")
        low, high = SCORE_RANGE[event.survey]
        if not low <= event.score <= high:
            return Rejected(
                Reason.SCORE_OUT_OF_RANGE, f"{event.survey} score {event.score} not in {low}..{high}", "score"
            )
    elif event.score is not None:
        return Rejected(Reason.SCORE_FORBIDDEN, f"a {event.action} survey carries no score", "score")
    return None


def _classify(message: str) -> Rejected:
    """Map a msgspec validation message onto a reason (msgspec reports one error, the first)."""
    match = _PATH.search(message)
    field = match.group(1) if match else None
    detail = _short(message)
    if message.startswith("Object missing required field"):
        return Rejected(Reason.MISSING_FIELD, detail, message.split("`")[1] if "`" in message else None)
    if field is None or field == "":
        return Rejected(Reason.NOT_AN_OBJECT, detail)
    top = field.split(".")[0].split("[")[0]
    if top in _TIMESTAMP_FIELDS and ("datetime" in message and "got" not in message):
        return Rejected(Reason.INVALID_TIMESTAMP, detail, top)
    if message.startswith("Expected `") and ", got `" in message:
        return Rejected(Reason.WRONG_TYPE, detail, top)
    return Rejected(Reason.INVALID_VALUE, detail, top)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
