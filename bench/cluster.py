"""The bench's own Kafka (a `LocalKafka` on a free port in a temporary home) and small topic helpers."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from kpimon.agents.devtools.localkafka import LocalKafka, pick_free_port

#: The broker is a bench fixture, not a subject: give it room so it is not the bottleneck. The initial
#: rebalance delay (Kafka's default is 3 s; LocalKafka sets 0 for fast tests) lets workers started together
#: join the group's first generation: a second worker joining after the first one has processed events
#: makes Faust recover table changelogs, which is a rebalance measurement, not a throughput one.
BROKER_PROPERTIES = {
    "log.retention.hours": "-1",
    "message.max.bytes": str(8 * 1024 * 1024),
    "group.initial.rebalance.delay.ms": "8000",
}


@contextlib.contextmanager
def local_kafka(keep: bool = False) -> Iterator[tuple[str, Path]]:
    """A fresh broker on a free port: (bootstrap, scratch dir); stopped and removed on exit.

    The run directory (data, logs) is a temporary directory; the jar cache is the default one
    (`$KPIMON_HOME/cache`), like the test suite's, so the jars are fetched once per machine.
    """
    scratch = Path(tempfile.mkdtemp(prefix="kpimon-bench-"))
    broker = LocalKafka(port=pick_free_port(), home=scratch / "kafka", properties=BROKER_PROPERTIES)
    logging.getLogger("kpimon.agents.devtools.localkafka").setLevel(logging.WARNING)
    try:
        yield broker.start(), scratch
    finally:
        broker.stop()
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The end offset of each partition of `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        await consumer.stop()
