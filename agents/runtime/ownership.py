"""Which partitions this worker owns right now, as Faust's consumer (the group member) was assigned them."""

from __future__ import annotations

from typing import Any

from faust.types import TP


class Ownership:
    """Reads the consumer group assignment of a Faust app: owned partitions, group generation, lag."""

    def __init__(self, app: Any, topics: frozenset[str]) -> None:
        """`topics`: kpimon's own topics, the ones `assigned` reports."""
        self.app = app
        self.topics = topics

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

    def highwater(self, topic_partition: tuple[str, int]) -> int | None:
        """The high watermark Faust's consumer last saw for a partition (None when unknown)."""
        try:
            value = self.app.consumer.highwater(TP(*topic_partition))
        except Exception:  # not assigned (any more), or nothing fetched yet
            return None
        return int(value) if value is not None else None
