"""The `kpimon-partials` topic: absolute per-source-partition counters of one segment-day, and watermarks.

A source partition p owns the counters of the users whose events land in p. Every flush it publishes the
groups (dimension, segment, day) that changed, with absolute values, to the partials partition chosen by
the group, so one aggregator sees every source's counters of a group and can sum them (docs/architecture.md,
"Absolute partials and an idempotent merge"). Each message carries a `version` (the consumer-group
generation, then the source's processed input offsets: engine.versioned) so a late message of a previous
owner of p can never overwrite what the current owner sent after a rebalance.
"""

from __future__ import annotations

import zlib

import msgspec

Group = tuple[str, str, int]
"""(dimension, segment, day)."""


class Partial(msgspec.Struct, tag="partial", kw_only=True):
    """The absolute counters of one source partition for one group."""

    source: int
    version: int
    dimension: str
    segment: str
    day: int
    counts: dict[str, int]

    @property
    def group(self) -> Group:
        return (self.dimension, self.segment, self.day)


class Watermark(msgspec.Struct, tag="watermark", kw_only=True):
    """A source partition's newest accepted event day (its current day), sent to every partials partition."""

    source: int
    version: int
    current_day: int


Message = Partial | Watermark

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Partial | Watermark] = msgspec.json.Decoder(Message)


def encode(message: Message) -> bytes:
    """JSON bytes of a partials message."""
    return _encoder.encode(message)


def decode(raw: bytes) -> Message:
    """A partials message from its bytes."""
    return _decoder.decode(raw)


def group_name(group: Group) -> str:
    """`dimension/segment/day-number`: the aggregate table key of a group."""
    return f"{group[0]}/{group[1]}/{group[2]}"


def parse_group(name: str) -> Group:
    """Inverse of `group_name` (segment values may contain '/')."""
    dimension, rest = name.split("/", 1)
    segment, day = rest.rsplit("/", 1)
    return (dimension, segment, int(day))


def partition_of(group: Group, partitions: int) -> int:
    """The partials partition of a group: stable across processes and Python versions (CRC-32)."""
    return zlib.crc32(group_name(group).encode()) % partitions


def partial_key(group: Group, source: int) -> bytes:
    """Compaction key: the latest message per (group, source partition) survives."""
    return f"{group_name(group)}|{source}".encode()


def watermark_key(target: int, source: int) -> bytes:
    """Compaction key of a watermark: one per (partials partition, source partition)."""
    return f"__watermark__/{target}|{source}".encode()
