"""Plain aiokafka helpers for tests: produce a batch, read a whole topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def produce(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes]],
    options: Mapping[str, Any] | None = None,
) -> None:
    """Send (key, value) messages to `topic` and wait until the broker acknowledged all.

    `options` are extra client options (TLS, SASL)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **(options or {}))
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout: float = 60,
    options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Every record of `topic`, once `expected` arrived (or `timeout` ran out); fails on extra records."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(options or {}),
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        # Make sure nothing beyond the expected count arrives.
        end = await consumer.end_offsets(partitions)
        total = sum(end.values()) - sum((await consumer.beginning_offsets(partitions)).values())
        assert total == len(records), f"topic holds {total} records, read {len(records)}"
        return records
    finally:
        await consumer.stop()
