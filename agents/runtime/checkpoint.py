"""Flush, then commit: a source offset is committed only once everything its messages caused is in Kafka.

What a batch of input causes (user-state changelog records, dead letters, re-keyed events) must be
acknowledged before the batch's offsets are committed: a worker that dies in between must re-read the
messages, not skip them. `Checkpoint` owns that order, and nothing else commits source offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from kpimon.agents.runtime.ports import ChangelogWriter, Committer, Outbox, TopicPartition

log = logging.getLogger(__name__)

#: Seconds a commit waits for the producer's flush before it gives up (the next commit tries again).
FLUSH_TIMEOUT = 10.0


class Checkpoint:
    """Commits the processed offsets of source partitions, after flushing what they caused."""

    def __init__(
        self,
        changelog: ChangelogWriter,
        outbox: Outbox,
        committer: Committer,
        positions: Mapping[TopicPartition, int],
    ) -> None:
        """`positions` is the next offset to process per partition (kept up to date by the pipeline)."""
        self.changelog = changelog
        self.outbox = outbox
        self.committer = committer
        self.positions = positions
        self._committed: dict[TopicPartition, int] = {}

    @property
    def committed(self) -> dict[TopicPartition, int]:
        """The offsets this checkpoint committed, per partition it still tracks."""
        return dict(self._committed)

    def keep_only(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget what was committed for partitions not in `partitions` (they moved away)."""
        keep = set(partitions)
        self._committed = {tp: offset for tp, offset in self._committed.items() if tp in keep}

    async def commit(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Commit the processed offsets of `partitions` that moved on since the last commit.

        First the changelog records still held back go out (whatever is committed: a partition that moves
        must find its users' latest states in the changelog), then the producer is flushed, then the
        offsets are committed. Returns the offsets committed.
        """
        await self.changelog.send_pending(self.outbox.batch_client())
        offsets = {
            tp: self.positions[tp]
            for tp in partitions
            if tp in self.positions and self.positions[tp] > self._committed.get(tp, -1)
        }
        if not offsets:
            return {}
        flush = asyncio.ensure_future(self.outbox.flush())
        try:
            # Shielded: cancelling a flush half-way could drop a record it had taken from the buffer.
            await asyncio.wait_for(asyncio.shield(flush), FLUSH_TIMEOUT)
        except TimeoutError:
            # The broker is away: these offsets are committed by a later commit, or re-read by the next owner.
            log.warning("the producer did not flush within %.0f s; not committing now", FLUSH_TIMEOUT)
            return {}
        if not await self.committer.commit(offsets):
            log.debug("nothing committed of %d partitions (no longer assigned)", len(offsets))
            return {}
        self._committed.update(offsets)
        return offsets
