"""The ceiling: a plain aiokafka consumer reading every message of the input topics and decoding it.

No framework, no state: `getmany` with a large `max_records`, `msgspec.json.decode` of every value into
Python objects. Whatever a Python worker does per event comes on top of this, so it bounds what any
worker built on aiokafka can reach on this machine and broker.

With `plain=True` (the `ceiling-plain` stage) the consumer hands out aiokafka's record objects instead of
building a `ConsumerRecord` per record (`kpimon.agents.compat.plain_records`, as the worker's source
reader does): the difference between the two is what that conversion costs per record.
"""

from __future__ import annotations

import time

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.fill import DataSet
from bench.stats import StageResult
from kpimon.agents import compat


async def run(bootstrap: str, data: DataSet, timeout: float, plain: bool = False) -> StageResult:
    """Consume both topics from the beginning to their end offsets; events/s from first to last message.

    `plain`: without aiokafka's `ConsumerRecord` objects (see the module docstring)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    if plain and not compat.plain_records(consumer):
        raise RuntimeError("this aiokafka cannot hand out plain records")
    decode = msgspec.json.decode
    try:
        tps = [TopicPartition(t, p) for t in data.topics for p in range(data.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = {tp: int(o) for tp, o in (await consumer.end_offsets(tps)).items()}
        remaining = {tp for tp in tps if ends[tp] > 0}
        count = decoded_fields = 0
        # Timed from the first fetch request, so the first batch's fetch counts too.
        first = last = time.monotonic()
        cpu_first = time.process_time()
        deadline = first + timeout
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=100_000)
            for tp, records in batches.items():
                for record in records:
                    decoded_fields += len(decode(record.value))
                count += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            last = time.monotonic()
        cpu = time.process_time() - cpu_first
    finally:
        await consumer.stop()
    result = StageResult.from_count(
        "ceiling-plain" if plain else "ceiling",
        count,
        last - first,
        complete=not remaining,
        note=f"{decoded_fields / max(1, count):.1f} fields/event decoded",
    )
    result.figures["cpu_seconds"] = cpu
    return result
