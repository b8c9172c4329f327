"""Which partitions this worker owns right now, as Faust's consumer (the group member) was assigned them."""

from __future__ import annotations

import time
from typing import Any

from faust.types import TP


class Ownership:
    """Reads the consumer group assignment of a Faust app: owned partitions, group generation, lag."""

    def __init__(self, app: Any, topics: frozenset[str], incarnation: int | None = None) -> None:
        """`topics`: kpimon's own topics, the ones `assigned` reports; `incarnation`: when this process
        started (Unix ms; now when not given), see `epoch`."""
        self.app = app
        self.topics = topics
        self.incarnation = int(time.time() * 1000) if incarnation is None else incarnation

    def _assignment(self) -> set[Any]:
        try:
            assignment: set[Any] = self.app.consumer.assignment()
        except Exception:  # before the consumer exists
            return set()
        return assignment

    def owned(self, topic: str) -> set[int]:
        """The partitions of `topic` assigned to this worker now."""
        return {tp.partition for tp in self._assignment() if tp.topic == topic}

    def assigned(self) -> list[tuple[str, int]]:
        """(topic, partition) of every partition of kpimon's own topics this worker owns."""
        return [(tp.topic, tp.partition) for tp in self._assignment() if tp.topic in self.topics]

    def generation(self) -> int:
        """The consumer group generation of the current assignment (Faust's aiokafka driver records it)."""
        return int(self.app.consumer_generation_id or 0)

    async def position(self, topic_partition: tuple[str, int]) -> int | None:
        """Faust's consumer's next offset of an owned partition (None when unknown)."""
        try:
            value = await self.app.consumer.position(TP(*topic_partition))
        except Exception:  # not assigned any more, or the consumer is restarting
            return None
        return int(value) if value is not None else None

    def epoch(self) -> int:
        """What orders this worker's partials before their processed offsets: generation, then start time.

        A partial's version is (epoch, processed input offsets) (engine.versioned): an aggregator keeps the
        newest per source partition, so a late message of a previous owner cannot overwrite what the
        current owner sent. A rebalance raises the group generation. A static member restarted in place
        (docs/architecture.md#static-membership) gets its partitions back without a rebalance, in the
        same generation, and re-reads input its previous incarnation had already passed: its offsets are
        lower than those the previous incarnation sent, so its partials were refused as late, leaving the
        aggregates short of what it re-read. Its later start time orders it after the previous
        incarnation (start times in ms fit in 48 bits; a clock set back by more than a restart takes
        would break this order).
        """
        return (self.generation() << 48) + self.incarnation

    def highwater(self, topic_partition: tuple[str, int]) -> int | None:
        """The high watermark Faust's consumer last saw for a partition (None when unknown)."""
        try:
            value = self.app.consumer.highwater(TP(*topic_partition))
        except Exception:  # not assigned (any more), or nothing fetched yet
            return None
        return int(value) if value is not None else None
