"""Read the worker's assigned source partitions in bulk and apply them batch by batch.

Faust decides which partitions of clicks, surveys and kpimon-rekeyed this worker owns (with the
user-state table partitions that go with them) and recovers the table; this reader then fetches those
partitions with its own aiokafka consumer, thousands of messages per call, and hands each partition's
batch to `BatchProcessor`. Table writes go through Faust's table, so its changelog and store stay
Faust's; only the per-event delivery is bypassed.

Offsets: the reader starts each partition at the consumer group's committed offset, and commits what it
processed through its `Checkpoint` (flush, then commit through Faust's consumer, the group member) every
`commit_interval` seconds, when partitions are revoked, and when the worker stops.

It works through narrow interfaces (runtime/ports.py): a fetcher, an outbox, the checkpoint, the user
store; `kafka_io` adapts the real clients, and tests/unit/test_source_reader.py uses in-memory fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kpimon.agents import compat
from kpimon.agents.pipeline.batch import BatchResult
from kpimon.agents.pipeline.deadletters import Redactor
from kpimon.agents.pipeline.pacing import BatchSizer, Turns
from kpimon.agents.runtime.checkpoint import Checkpoint
from kpimon.agents.runtime.outage import Backoff
from kpimon.agents.runtime.ports import Fetcher, FetchError, Outbox, StateStore, TopicPartition

log = logging.getLogger(__name__)

#: Changelog records are handed to the producer once this many bytes are pending (and before a commit).
SEND_AT_BYTES = 256 * 1024
#: Seconds a stop waits for its last commit (it cannot finish while no broker answers).
STOP_COMMIT_TIMEOUT = 10.0
#: How often (per partition) a batch also expires old days from a slice of idle users' states.
SWEEP_INTERVAL_MS = 10_000


class Processor(Protocol):
    """Applies one partition's batch (pipeline/batch.py's `BatchProcessor`)."""

    def process(
        self, topic: str, partition: int, records: Sequence[Any], users: Any, now_ms: int
    ) -> BatchResult:
        """Validate and apply the records; return what must be sent."""

    def sweep(self, users: Any, partition: int, now_ms: int) -> None:
        """Expire old days from a slice of the partition's idle users."""


@dataclass(frozen=True)
class ReaderConfig:
    """What the reader reads and how it paces itself (from the worker's settings)."""

    source_topics: frozenset[str]
    dead_letters_topic: str
    rekeyed_topic: str
    batch_max_messages: int
    commit_interval: float


class SourceReader:
    """The bulk reader of one worker's source partitions."""

    def __init__(
        self,
        config: ReaderConfig,
        processor: Processor,
        users: StateStore,
        fetcher: Callable[[], Fetcher],
        outbox: Outbox,
        checkpoint: Checkpoint,
        turns: Turns,
        redactor: Redactor | None = None,
        partition_scope: Callable[[str, int], contextlib.AbstractContextManager[None]] = (
            compat.writing_partition
        ),
        kafka_down: Callable[[], bool] = lambda: False,
    ) -> None:
        """`fetcher` builds the fetcher on first use; `redactor`, when given, pseudonymises dead letters
        (docs/security.md); `partition_scope` routes the table writes of a batch to its partition."""
        self.config = config
        self.source_topics = config.source_topics
        self.processor = processor
        self.users = users
        self._new_fetcher = fetcher
        self.outbox = outbox
        self.checkpoint = checkpoint
        self.turns = turns
        self.redactor = redactor
        self.partition_scope = partition_scope
        #: Whether the outage watch finds no broker (runtime/outage.py): then the reader waits, with backoff.
        self.kafka_down = kafka_down
        self.sizer = BatchSizer(config.batch_max_messages)
        self._fetcher: Fetcher | None = None
        self._assigned: set[TopicPartition] = set()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._stopping = False
        self._last_commit = time.monotonic()
        self._last_sweep: dict[int, int] = {}
        #: Whether the last fetch returned no message (the reader has read all there is).
        self.caught_up = False

    @property
    def fetcher(self) -> Fetcher | None:
        """The fetcher, once started."""
        return self._fetcher

    @property
    def assigned(self) -> set[TopicPartition]:
        """(topic, partition) this reader reads now."""
        return set(self._assigned)

    def highwater(self, partition: TopicPartition) -> int | None:
        """The high watermark last fetched for a partition this reader reads (None when unknown)."""
        if self._fetcher is None or partition not in self._assigned:
            return None
        try:
            return self._fetcher.highwater(partition)
        except Exception:  # not assigned any more
            return None

    async def position(self, partition: TopicPartition) -> int | None:
        """The next offset this reader will fetch of a partition it reads (None when not assigned or unknown).

        Before the first message of a partition is processed, this is the group's committed offset (or
        the earliest one): the start of the partition's lag.
        """
        if self._fetcher is None or partition not in self._assigned:
            return None
        return await self._fetcher.position(partition)

    async def _ensure_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            fetcher = self._new_fetcher()
            await fetcher.start()
            self._fetcher = fetcher
        return self._fetcher

    async def assign(self, owned: set[TopicPartition]) -> None:
        """Read exactly `owned` from now on (after a rebalance and the table's recovery)."""
        owned = {tp for tp in owned if tp[0] in self.source_topics}
        fetcher = await self._ensure_fetcher()
        async with self._lock:
            if self._stopping:
                return
            fetcher.assign(sorted(owned))
            self._assigned = owned
            self.checkpoint.keep_only(owned)
            self._changed.set()
        log.info("reading %d source partitions: %s", len(owned), _describe(owned))

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Stop reading `revoked` partitions, committing what was processed of them first."""
        revoked = {tp for tp in revoked if tp in self._assigned}
        if not revoked:
            return
        async with self._lock:
            await self._commit(revoked)
            self._assigned -= revoked
            if self._fetcher is not None:
                self._fetcher.assign(sorted(self._assigned))

    async def stop(self) -> None:
        """Finish the current batch, flush, commit, close the fetcher."""
        async with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._changed.set()
            # The consumer may be gone already, or the broker away (then the commit cannot finish): what is
            # not committed is read again by the next owner, so nothing is lost either way.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._commit(self._assigned), STOP_COMMIT_TIMEOUT)
            log.info("source reader stopped")
        if self._fetcher is not None:
            await self._fetcher.stop()

    async def run(self) -> None:
        """Fetch and process batches until stopped."""
        backoff = Backoff()
        while not self._stopping:
            if self.kafka_down():
                # No broker answers: nothing to fetch, and a commit could never finish. Wait, with backoff,
                # until the outage watch sees one again.
                await asyncio.sleep(backoff.next())
                continue
            if not self._assigned:
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                continue
            fetcher = await self._ensure_fetcher()
            try:
                batches = await fetcher.getmany(timeout_ms=100, max_records=self.sizer.size)
            except FetchError as exc:  # the broker went away, a partition moved: retry, don't die
                pause = backoff.next()
                log.warning("fetching source partitions failed (%r); retrying in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                continue
            backoff.reset()
            self.caught_up = not any(batches.values())
            await self.turns.wait_for_jobs()  # a flush or publish runs: let it finish first
            async with self._lock:
                if self._stopping:
                    break
                started = time.perf_counter()
                self._apply(batches)
                self.sizer.ran(
                    sum(len(records) for records in batches.values()), time.perf_counter() - started
                )
                self.turns.reader_ran()  # a flush or publish that let this batch in goes on
                await self.users.send_pending(self.outbox.batch_client(), min_bytes=SEND_AT_BYTES)
                await self.outbox.ebb()  # back-pressure: wait while the producer's buffer is full
                if time.monotonic() - self._last_commit >= self.config.commit_interval:
                    await self._commit(self._assigned)
            # getmany returns without suspending when records are buffered: let the timers (flushes,
            # publishing), the web server and Faust's own consumer run between batches.
            await asyncio.sleep(0)

    def _apply(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        now_ms = int(time.time() * 1000)
        for (topic, partition), records in batches.items():
            if (topic, partition) not in self._assigned or not records:
                continue  # revoked while the fetch was in flight
            with self.partition_scope(topic, partition):
                result = self.processor.process(topic, partition, records, self.users, now_ms)
                if now_ms - self._last_sweep.get(partition, 0) > SWEEP_INTERVAL_MS:
                    self._last_sweep[partition] = now_ms
                    self.processor.sweep(self.users, partition, now_ms)
            self.send(result)

    def send(self, result: BatchResult) -> None:
        """Queue a batch's dead letters (redacted when configured) and re-keyed events on the producer."""
        for out in result.dead_letters:
            key, value, headers = out.key, out.value, out.headers
            if self.redactor is not None:
                key, value, headers = self.redactor.redact(key, value, headers)
            self.outbox.send_soon(self.config.dead_letters_topic, key, value, headers)
        for out in result.rekeyed:
            self.outbox.send_soon(self.config.rekeyed_topic, out.key, out.value, out.headers)

    async def _commit(self, partitions: set[TopicPartition]) -> None:
        self._last_commit = time.monotonic()
        await self.checkpoint.commit(sorted(partitions))


def _describe(owned: set[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(owned):
        by_topic.setdefault(topic, []).append(partition)
    return ", ".join(f"{topic}{parts}" for topic, parts in by_topic.items()) or "none"
