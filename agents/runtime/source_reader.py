"""Read the worker's assigned source partitions in bulk and apply them batch by batch.

Faust decides which partitions of clicks, surveys and kpimon-rekeyed this worker owns (with the
user-state table partitions that go with them) and recovers the table; this reader then fetches those
partitions with its own aiokafka consumer, thousands of messages per call, and hands each partition's
batch to `BatchProcessor`. Table writes go through Faust's table, so its changelog and store stay
Faust's; only the per-event delivery is bypassed.

Offsets: the reader starts each partition at the consumer group's committed offset, and commits what it
processed -- through Faust's consumer, the group member -- only after the producer has flushed every
changelog record, dead letter and re-keyed event of those messages. It commits every `commit_interval`
seconds, when partitions are revoked, and when the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.streams import _current_event
from faust.types import TP

from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.pipeline.batch import BatchProcessor, BatchResult
from kpimon.agents.pipeline.deadletters import Redactor
from kpimon.agents.pipeline.pacing import BatchSizer
from kpimon.agents.runtime.user_store import UserStore

if TYPE_CHECKING:
    from kpimon.agents.app import Kpimon

log = logging.getLogger(__name__)

#: Changelog records are handed to the producer once this many bytes are pending (and before a commit).
SEND_AT_BYTES = 256 * 1024
#: How often (per partition) a batch also expires old days from a slice of idle users' states.
SWEEP_INTERVAL_MS = 10_000


class _PartitionEvent:
    """Stands in for Faust's current event while a batch of one partition writes the table.

    Faust's table writes its changelog record (and a RocksDB store its row) to the partition of the
    event being processed; a batch has no Faust event, so this names the partition instead.
    """

    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _PartitionMessage(topic, partition)


class _PartitionMessage:
    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


@contextlib.contextmanager
def writing_partition(topic: str, partition: int) -> Iterator[None]:
    """Table writes inside this block go to `partition` (of the table's changelog and store)."""
    event = _PartitionEvent(topic, partition)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


class SourceReader:
    """The bulk reader of one worker's source partitions."""

    def __init__(
        self,
        kpimon: Kpimon,
        processor: BatchProcessor,
        users: UserStore,
        topics: dict[str, Any],
        redactor: Redactor | None = None,
    ) -> None:
        """`topics` has the Faust topics to send to: "dead_letters" and "rekeyed"; `redactor`, when
        given, pseudonymises dead letters (docs/security.md)."""
        self.redactor = redactor
        self.kpimon = kpimon
        self.processor = processor
        self.users = users
        self.topics = topics
        settings = kpimon.settings
        self.source_topics = frozenset((settings.clicks, settings.surveys, settings.rekeyed))
        self.sizer = BatchSizer(settings.batch_max_messages)
        self.commit_interval = settings.commit_interval
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._committed: dict[tuple[str, int], int] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._stopping = False
        self._last_commit = time.monotonic()
        self._last_sweep: dict[int, int] = {}
        #: Whether the last fetch returned no message (the reader has read all there is).
        self.caught_up = False

    @property
    def assigned(self) -> set[tuple[str, int]]:
        """(topic, partition) this reader reads now."""
        return set(self._assigned)

    def highwater(self, topic_partition: tuple[str, int]) -> int | None:
        """The high watermark last fetched for a partition this reader reads (None when unknown)."""
        if self._consumer is None or topic_partition not in self._assigned:
            return None
        try:
            value = self._consumer.highwater(TopicPartition(*topic_partition))
        except Exception:  # not assigned any more
            return None
        return int(value) if value is not None else None

    async def position(self, topic_partition: tuple[str, int]) -> int | None:
        """The next offset this reader will fetch of a partition it reads (None when not assigned or unknown).

        Before the first message of a partition is processed, this is the group's committed offset (or
        the earliest one): the start of the partition's lag.
        """
        if self._consumer is None or topic_partition not in self._assigned:
            return None
        try:
            return int(await asyncio.wait_for(self._consumer.position(TopicPartition(*topic_partition)), 5))
        except Exception:  # unassigned meanwhile, or the broker is away: unknown for now
            return None

    async def _ensure_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            settings = self.kpimon.settings
            consumer = AIOKafkaConsumer(
                bootstrap_servers=settings.broker,
                client_id=f"{settings.app_id}-source-reader",
                # The group id only to read the group's committed offsets: with manual assignment this
                # consumer never joins the group, and it commits through Faust's consumer.
                group_id=settings.app_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # A fetch holds several of the ~50 ms batches (8,000 messages of 250 bytes per partition);
                # larger ones only raise a worker's peak memory (fetched data waits in its buffers).
                max_partition_fetch_bytes=2 * 1024 * 1024,
                fetch_max_bytes=16 * 1024 * 1024,
                **aiokafka_options(settings),  # TLS / SASL_SSL, as every kpimon Kafka client
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def assign(self, owned: set[tuple[str, int]]) -> None:
        """Read exactly `owned` from now on (after a rebalance and the table's recovery)."""
        owned = {tp for tp in owned if tp[0] in self.source_topics}
        consumer = await self._ensure_consumer()
        async with self._lock:
            if self._stopping:
                return
            consumer.assign([TopicPartition(t, p) for t, p in sorted(owned)])
            self._assigned = owned
            self._committed = {tp: offset for tp, offset in self._committed.items() if tp in owned}
            self._changed.set()
        log.info("reading %d source partitions: %s", len(owned), _describe(owned))

    async def release(self, revoked: set[tuple[str, int]]) -> None:
        """Stop reading `revoked` partitions, committing what was processed of them first."""
        revoked = {tp for tp in revoked if tp in self._assigned}
        if not revoked:
            return
        async with self._lock:
            await self._commit(only=revoked)
            self._assigned -= revoked
            if self._consumer is not None:
                self._consumer.assign([TopicPartition(t, p) for t, p in sorted(self._assigned)])

    async def stop(self) -> None:
        """Finish the current batch, flush, commit, close the consumer."""
        async with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._changed.set()
            with contextlib.suppress(Exception):  # the consumer may be gone already; nothing to lose
                await self._commit()
            log.info("source reader stopped")
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self) -> None:
        """Fetch and process batches until stopped."""
        while not self._stopping:
            if not self._assigned:
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                continue
            consumer = await self._ensure_consumer()
            try:
                batches = await consumer.getmany(timeout_ms=100, max_records=self.sizer.size)
            except KafkaError as exc:  # the broker went away, a partition moved: retry, don't die
                log.warning("fetching source partitions failed (%r); retrying in 1 s", exc)
                await asyncio.sleep(1.0)
                continue
            self.caught_up = not any(batches.values())
            await self.kpimon.turns.wait_for_jobs()  # a flush or publish runs: let it finish first
            async with self._lock:
                if self._stopping:
                    break
                started = time.perf_counter()
                self._apply(batches)
                self.sizer.ran(
                    sum(len(records) for records in batches.values()), time.perf_counter() - started
                )
                await self.users.send_pending(self.kpimon.app.producer_client(), min_bytes=SEND_AT_BYTES)
                # Back-pressure: wait while Faust's producer buffer is over its limit.
                await self.kpimon.app.producer.buffer.wait_until_ebb()
                if time.monotonic() - self._last_commit >= self.commit_interval:
                    await self._commit()
            # getmany returns without suspending when records are buffered: let the timers (flushes,
            # publishing), the web server and Faust's own consumer run between batches.
            await asyncio.sleep(0)

    def _apply(self, batches: dict[TopicPartition, list[Any]]) -> None:
        now_ms = int(time.time() * 1000)
        engine = self.processor.engine
        for tp, records in batches.items():
            key = (tp.topic, tp.partition)
            if key not in self._assigned or not records:
                continue  # revoked while the fetch was in flight
            with writing_partition(tp.topic, tp.partition):
                result = self.processor.process(tp.topic, tp.partition, records, self.users, now_ms)
                if now_ms - self._last_sweep.get(tp.partition, 0) > SWEEP_INTERVAL_MS:
                    self._last_sweep[tp.partition] = now_ms
                    engine.sweep(self.users, tp.partition, now_ms)
            self.send(result)

    def send(self, result: BatchResult) -> None:
        """Queue a batch's dead letters (redacted when configured) and re-keyed events on the producer."""
        dead_letters, rekeyed = self.topics["dead_letters"], self.topics["rekeyed"]
        for out in result.dead_letters:
            key, value, headers = out.key, out.value, out.headers
            if self.redactor is not None:
                key, value, headers = self.redactor.redact(key, value, headers)
            dead_letters.send_soon(key=key, value=value, headers=headers)
        for out in result.rekeyed:
            rekeyed.send_soon(key=out.key, value=out.value, headers=out.headers)

    async def _commit(self, only: set[tuple[str, int]] | None = None) -> None:
        """Flush the producer, then commit the processed offsets (of `only`, or of all partitions)."""
        self._last_commit = time.monotonic()
        # Changelog records still held back go out first, whatever is committed now: a partition that
        # moves must find its users' latest states in the changelog.
        await self.users.send_pending(self.kpimon.app.producer_client())
        positions = self.processor.engine.positions
        offsets = {
            tp: positions[tp]
            for tp in (only if only is not None else self._assigned)
            if tp in positions and positions[tp] > self._committed.get(tp, -1)
        }
        if not offsets:
            return
        # Every record caused by these messages must be in Kafka before their offsets are committed.
        await self.kpimon.app.producer.flush()
        # Faust's consumer is the group member, so it commits (a non-member commit is refused while the
        # group has members). It filters out partitions no longer assigned.
        consumer: Any = self.kpimon.app.consumer
        committed = await consumer._commit({TP(t, p): o for (t, p), o in offsets.items()})
        if committed:
            self._committed.update(offsets)


def _describe(owned: set[tuple[str, int]]) -> str:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(owned):
        by_topic.setdefault(topic, []).append(partition)
    return ", ".join(f"{topic}{parts}" for topic, parts in by_topic.items()) or "none"
