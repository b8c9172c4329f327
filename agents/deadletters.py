"""The dead-letter record: the original bytes, untouched, with why and where in Kafka headers.

Headers instead of a JSON envelope keep the original bytes byte for byte (even non-UTF-8 or 1 MB of
garbage) in the message value and key, the convention of Kafka Connect's dead-letter queues.
"""

from __future__ import annotations

from streams.validation import Rejected

HEADER_PREFIX = "kpimon-"


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
