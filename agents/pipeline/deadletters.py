"""The dead-letter record: the original bytes with why and where in Kafka headers, or a redacted copy.

Headers instead of a JSON envelope keep the original bytes byte for byte (even non-UTF-8 or 1 MB of
garbage) in the message value and key, the convention of Kafka Connect's dead-letter queues.

With `dead_letter_redact` the copy is pseudonymised instead (docs/security.md): the key and a top-level
`user_id` become `hmac-sha256:<hex>` under a secret key (the same user gives the same pseudonym, so dead
letters can still be grouped by user, but nobody without the key can tell or test who it is), `comment`
(free text) is dropped, and a value that is not a JSON object (bad JSON, an array, a number) is dropped
entirely: it cannot be searched for personal data, so only the reason and the metadata headers remain.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from kpimon.streams.validation import Rejected

HEADER_PREFIX = "kpimon-"
#: Header of a redacted dead letter: what was done (`pseudonymised` or `payload-dropped`).
REDACTED_HEADER = "kpimon-redacted"
#: Free-text fields dropped from a redacted copy.
FREE_TEXT_FIELDS = ("comment",)


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
        """`hmac-sha256:<64 hex>` of a user id (or key) under the secret."""
        return "hmac-sha256:" + hmac.new(self._secret, user_id, hashlib.sha256).hexdigest()

    def redact(
        self, key: bytes | None, value: bytes | None
    ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """(key, value, extra headers) of the redacted copy of a rejected message."""
        new_key = self.pseudonym(key).encode() if key is not None else None
        if value is None:
            return new_key, None, [(REDACTED_HEADER, b"pseudonymised")]
        try:
            document: Any = msgspec.json.decode(value)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
            document = None
        if not isinstance(document, dict):
            return new_key, b"", [(REDACTED_HEADER, b"payload-dropped")]
        for name in FREE_TEXT_FIELDS:
            document.pop(name, None)
        if "user_id" in document:
            user_id = document["user_id"]
            raw = (
                user_id.encode("utf-8", "surrogatepass") if isinstance(user_id, str) else value_bytes(user_id)
            )
            document["user_id"] = self.pseudonym(raw)
        return new_key, msgspec.json.encode(document), [(REDACTED_HEADER, b"pseudonymised")]


def value_bytes(value: Any) -> bytes:
    """A JSON value's canonical bytes (a non-string user_id is still pseudonymised, not kept)."""
    return msgspec.json.encode(value)
