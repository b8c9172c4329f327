"""The dead-letter record: the original bytes with why and where in Kafka headers, or a redacted copy.

Headers instead of a JSON envelope keep the original bytes byte for byte (even non-UTF-8 or 1 MB of
garbage) in the message value and key, the convention of Kafka Connect's dead-letter queues.

With `dead_letter_redact` the copy is pseudonymised instead (docs/security.md, "Dead letters"): nothing
that can quote the input survives as it was. The key and every free-text, id or label value become
`hmac-sha256:<hex>` under a secret key (the same value gives the same pseudonym, so dead letters can still
be grouped, but nobody without the key can tell or test what it was); only values from a closed set stay
readable (the survey kind and action, well-formed timestamps, small integer scores, booleans and null).
`comment` and `properties` (free-form) and fields the schemas do not know (their names are input too) are
dropped, and so is a value that is not a JSON object (bad JSON, an array, a number): it cannot be searched.
Of the headers, `kpimon-detail` (it may quote the offending value) becomes a fixed sentence per reason and
`kpimon-field` stays only when it names a schema field.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Annotated, Any, get_args

import msgspec

from kpimon.streams.events import ClickEvent, SurveyAction, SurveyEvent, SurveyKind
from kpimon.streams.validation import Reason, Rejected

HEADER_PREFIX = "kpimon-"
#: Header of a redacted dead letter: what was done (`pseudonymised` or `payload-dropped`).
REDACTED_HEADER = "kpimon-redacted"
#: Free-form fields dropped from a redacted copy (free text, and a map of anything).
FREE_TEXT_FIELDS = ("comment", "properties")
#: The field names of both input schemas: any other key of a message is input, and dropped.
SCHEMA_FIELDS = frozenset(ClickEvent.__struct_fields__) | frozenset(SurveyEvent.__struct_fields__)
#: Fields whose values stay readable when they are one of these (a closed vocabulary).
VOCABULARY: dict[str, frozenset[str]] = {
    "survey": frozenset(get_args(SurveyKind)),
    "action": frozenset(get_args(SurveyAction)),
}
TIMESTAMP_FIELDS = ("ts", "signup_ts")
#: A redacted `score` keeps an integer of at most this size (enough to see why it is out of range; a
#: longer number could be a phone number).
MAX_KEPT_SCORE = 1000
#: Headers a redacted copy keeps as they are: none of them holds bytes of the message.
KEPT_HEADERS = frozenset(
    (
        "kpimon-reason",
        "kpimon-source-topic",
        "kpimon-source-partition",
        "kpimon-source-offset",
        "kpimon-source-timestamp-ms",
    )
)
#: The `kpimon-detail` of a redacted copy, per reason: the validator's own detail may quote the value.
REDACTED_DETAIL: dict[Reason, str] = {
    Reason.TOO_LARGE: "the message is larger than max_message_bytes",
    Reason.INVALID_JSON: "not UTF-8, or not well-formed JSON",
    Reason.NOT_AN_OBJECT: "valid JSON, but not an object",
    Reason.MISSING_FIELD: "a required field is absent",
    Reason.WRONG_TYPE: "a field has the wrong JSON type",
    Reason.INVALID_VALUE: "a field value is empty, too long or not one of the allowed values",
    Reason.INVALID_TIMESTAMP: "ts or signup_ts is not RFC 3339 with an offset",
    Reason.SCORE_MISSING: "an answered survey needs a score",
    Reason.SCORE_FORBIDDEN: "a shown or dismissed survey carries no score",
    Reason.SCORE_OUT_OF_RANGE: "the score is outside the survey's range",
    Reason.KEY_MISMATCH: "user_id differs from the message key",
    Reason.FUTURE_TIMESTAMP: "ts is ahead of the wall clock by more than max_future_seconds",
    Reason.TOO_LATE: "the event day is older than max_lateness_days",
    Reason.INTERNAL_ERROR: "kpimon failed to process a valid event (see the worker log)",
}
_Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


def dead_letter_headers(
    rejected: Rejected, topic: str, partition: int, offset: int, timestamp_ms: int | None
) -> list[tuple[str, bytes]]:
    """Headers of the dead-letter message for a message rejected at topic/partition/offset."""
    headers = [
        ("kpimon-reason", rejected.reason.value.encode()),
        ("kpimon-detail", rejected.detail.encode("utf-8", "replace")),
        ("kpimon-source-topic", topic.encode()),
        ("kpimon-source-partition", str(partition).encode()),
        ("kpimon-source-offset", str(offset).encode()),
    ]
    if rejected.field is not None:
        headers.append(("kpimon-field", rejected.field.encode("utf-8", "replace")))
    if timestamp_ms is not None:
        headers.append(("kpimon-source-timestamp-ms", str(timestamp_ms).encode()))
    return headers


class Redactor:
    """Pseudonymises dead letters with HMAC-SHA256 under a secret key (never shown by repr)."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the redaction key must not be empty")
        self._secret = secret

    def __repr__(self) -> str:
        return "Redactor(<secret>)"

    def pseudonym(self, user_id: bytes) -> str:
        """`hmac-sha256:<64 hex>` of a user id (or key, or any value's bytes) under the secret."""
        return "hmac-sha256:" + hmac.new(self._secret, user_id, hashlib.sha256).hexdigest()

    def redact(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """(key, value, headers) of the redacted copy of a rejected message with dead-letter `headers`."""
        new_key = self.pseudonym(key).encode() if key is not None else None
        new_headers = redact_headers(headers or [])
        if value is None:
            return new_key, None, [*new_headers, (REDACTED_HEADER, b"pseudonymised")]
        try:
            document: Any = msgspec.json.decode(value)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
            document = None
        if not isinstance(document, dict):
            return new_key, b"", [*new_headers, (REDACTED_HEADER, b"payload-dropped")]
        redacted = {
            name: self._field(name, field_value)
            for name, field_value in document.items()
            if name in SCHEMA_FIELDS and name not in FREE_TEXT_FIELDS
        }
        return new_key, msgspec.json.encode(redacted), [*new_headers, (REDACTED_HEADER, b"pseudonymised")]

    def _field(self, name: str, value: Any) -> Any:
        """A field's value in a redacted copy: itself when from a closed set, else its pseudonym."""
        if value is None or isinstance(value, bool):
            return value
        if name in VOCABULARY and value in VOCABULARY[name]:
            return value
        if name in TIMESTAMP_FIELDS and _is_timestamp(value):
            return value
        if name == "score" and isinstance(value, int) and abs(value) <= MAX_KEPT_SCORE:
            return value
        raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value_bytes(value)
        return self.pseudonym(raw)


def redact_headers(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Dead-letter headers without anything of the message: a fixed detail, a schema field name or none."""
    out: list[tuple[str, bytes]] = []
    for name, value in headers:
        schema_field = name == "kpimon-field" and value.decode("utf-8", "replace") in SCHEMA_FIELDS
        if name in KEPT_HEADERS or schema_field:
            out.append((name, value))
    reason = dict(headers).get("kpimon-reason", b"").decode("utf-8", "replace")
    if reason in Reason.__members__.values():
        out.append(("kpimon-detail", REDACTED_DETAIL[Reason(reason)].encode()))
    return out


def _is_timestamp(value: Any) -> bool:
    """An integer (epoch ms) or an RFC 3339 string with an offset: neither says anything about a person."""
    if isinstance(value, int):
        return abs(value) < 10**15  # epoch ms within +-31,000 years; not an arbitrary long number
    if not isinstance(value, str):
        return False
    try:
        msgspec.convert(value, _Timestamp)
    except msgspec.ValidationError:
        return False
    return True


def value_bytes(value: Any) -> bytes:
    """A JSON value's canonical bytes (a non-string value is still pseudonymised, not kept)."""
    return msgspec.json.encode(value)
