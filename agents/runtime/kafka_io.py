"""The real Kafka and Faust clients behind the narrow interfaces of runtime/ports.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP

from kpimon.agents import compat
from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.settings import Settings
from kpimon.agents.runtime.ports import FetchError, Headers
from kpimon.agents.runtime.ports import TopicPartition as Partition
from kpimon.agents.runtime.tables import raw_topic

log = logging.getLogger(__name__)


async def read_committed(
    settings: Settings, topic: str, partitions: set[int]
) -> AsyncIterator[tuple[int, bytes | None]]:
    """(partition, value) of every record of `partitions` of `topic` before the consumer group's committed
    offset: what the group's members have processed and will not read again."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker,
        client_id=f"{settings.app_id}-reread",
        group_id=settings.app_id,  # only to read the committed offsets: it never joins the group
        enable_auto_commit=False,
        **aiokafka_options(settings),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = {tp: await consumer.committed(tp) or 0 for tp in tps}
        await consumer.seek_to_beginning(*tps)
        left = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield tp.partition, record.value
            left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()


class KafkaFetcher:
    """An aiokafka consumer with manual assignment, reading from the consumer group's committed offsets."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.broker,
            client_id=f"{settings.app_id}-source-reader",
            # The group id only to read the group's committed offsets: with manual assignment this consumer
            # never joins the group, and offsets are committed through Faust's consumer (FaustCommitter).
            group_id=settings.app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A fetch holds several of the ~50 ms batches (8,000 messages of 250 bytes per partition);
            # larger ones only raise a worker's peak memory (fetched data waits in its buffers).
            max_partition_fetch_bytes=2 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            **aiokafka_options(settings),  # TLS / SASL_SSL, as every kpimon Kafka client
        )

    async def start(self) -> None:
        """Connect; from then on the consumer hands out aiokafka's record objects, without building a
        `ConsumerRecord` for each (`compat.plain_records`: a fifth of a worker's CPU)."""
        await self.consumer.start()
        if not compat.plain_records(self.consumer):
            log.warning("this aiokafka cannot hand out plain records: reading ConsumerRecords (slower)")

    async def stop(self) -> None:
        """Disconnect, whatever the broker's state.

        With the broker away (and with it a rebalance under way), a fetch request waits out its retry
        backoff; aiokafka's `stop` cancels it and awaits it, and that task's CancelledError comes out of
        `stop` (aiokafka issue 647) although nothing cancelled this task. Passed on, it cut the app's stop
        short: Faust's agents were never stopped, the loop's shutdown cancelled them (a traceback each,
        "Restarting on rebalance"), and the shutdown watchdog ended the worker 20 s later. It is taken for
        what it is, a fetch given up, unless this task itself is being cancelled.
        """
        try:
            await self.consumer.stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.info("source reader's consumer stopped with a fetch pending (broker away): fetch given up")

    def assign(self, partitions: Sequence[Partition]) -> None:
        """Fetch exactly these partitions."""
        self.consumer.assign([TopicPartition(topic, partition) for topic, partition in partitions])

    async def getmany(self, timeout_ms: int, max_records: int) -> Mapping[Partition, Sequence[Any]]:
        """The fetched records by (topic, partition); `FetchError` when Kafka failed."""
        try:
            batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise FetchError(repr(exc)) from exc
        return {(tp.topic, tp.partition): records for tp, records in batches.items()}

    def highwater(self, partition: Partition) -> int | None:
        """The partition's high watermark as last fetched."""
        value = self.consumer.highwater(TopicPartition(*partition))
        return int(value) if value is not None else None

    async def position(self, partition: Partition) -> int | None:
        """The next offset to fetch; None when unknown (unassigned meanwhile, or the broker is away)."""
        try:
            return int(await asyncio.wait_for(self.consumer.position(TopicPartition(*partition)), 5))
        except Exception:
            return None


class FaustOutbox:
    """Faust's producer (buffered sends, flush, back-pressure) and the aiokafka producer under it."""

    def __init__(self, app: Any, topics: Sequence[str]) -> None:
        """`topics`: the topics `send_soon` may send to (declared with the app before it starts)."""
        self.app = app
        self._topics = {name: raw_topic(app, name) for name in topics}

    def send_soon(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Queue one record on Faust's producer buffer."""
        self._topics[topic].send_soon(key=key, value=value, headers=list(headers))

    async def ebb(self) -> None:
        """Wait while Faust's producer buffer is over its limit."""
        await self.app.producer.buffer.wait_until_ebb()

    async def flush(self) -> None:
        """Wait until everything sent so far is acknowledged."""
        await self.app.producer.flush()

    def batch_client(self) -> Any:
        """aiokafka's producer, for record batches."""
        return compat.aiokafka_producer(self.app)


class FaustCommitter:
    """Commits through Faust's consumer: it is the group member (a non-member's commit is refused while
    the group has members), and it leaves out partitions no longer assigned."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit the offsets."""
        return await compat.commit_offsets(
            self.app.consumer,
            {TP(topic, partition): offset for (topic, partition), offset in offsets.items()},
        )
