"""Issue #7's candidate levers on Faust's per-event cost: the bare Faust child, changed one lever at a time.

Run as its own process by the bench's `candidates` stage (`python -m bench.faust_variants --help`), on the
same topics and counted the same way as `bench.bare_faust` (the variant "Faust defaults"): a message
counts once the agent has it, and the child is done when it has seen every message. Each variant changes
one thing only, so its ratio to bare Faust is that lever's worth:

  settings   consumer and fetcher settings: up to 10,000 records per poll (Faust's default: no limit
             but the fetch size), 8 MiB fetched per partition (default 1 MiB) and a stream buffer of
             131,072 events (default 4,096, the value Faust's documentation suggests for throughput)
  conductor  cython_optimizations=True, the setting that enables the repaired Cython fast paths of
             the conductor (decode once per message) and of the stream iterator (take what is queued
             without awaiting); Faust exposes no other conductor setting
  take       the agent iterates `stream.take(1000, within=1)`: batches of up to 1,000 events
  channel    many messages as one event: a Faust task reads all input partitions in bulk with a plain
             aiokafka consumer (`getmany`, up to 10,000 records, as kpimon's source reader) and sends
             each partition's batch as ONE event to an in-memory `app.channel()`, whose agent counts the
             batch: Faust's per-event cost is paid once per batch
"""

from __future__ import annotations

import argparse
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.child import Progress, child_app, child_arguments, serve_child

#: Variant name -> what it changes (the report's labels say the same, shorter).
VARIANTS = ("settings", "conductor", "take", "channel")

#: The settings variant's Faust settings (the defaults in the comments).
TUNED_SETTINGS: dict[str, Any] = {
    "broker_max_poll_records": 10_000,  # None: whatever the fetched data holds
    "consumer_max_fetch_size": 8 * 1024 * 1024,  # aiokafka's max_partition_fetch_bytes; 1 MiB
    "stream_buffer_maxsize": 131_072,  # 4,096
}
TAKE = 1000
TAKE_WITHIN = 1.0
#: Records per getmany of the channel variant's bulk reader: kpimon's batch_max_messages.
BULK_RECORDS = 10_000

_RAW = {"key_serializer": "raw", "value_serializer": "raw"}


def _per_event(app: faust.App, topic: Any, progress: Progress) -> None:
    """The bare Faust agent: one event per message."""

    @app.agent(topic)
    async def iterate(stream: Any) -> None:
        async for _value in stream:
            progress.tick()


def _take(app: faust.App, topic: Any, progress: Progress) -> None:
    """The agent iterates batches of up to TAKE events (or what arrived within TAKE_WITHIN seconds)."""

    @app.agent(topic)
    async def iterate(stream: Any) -> None:
        async for values in stream.take(TAKE, within=TAKE_WITHIN):
            progress.add(len(values))


def _channel(app: faust.App, args: argparse.Namespace, progress: Progress) -> None:
    """A bulk reader task forwarding each fetched partition batch as one event to a channel's agent."""
    batches = app.channel()

    @app.agent(batches)
    async def count(stream: Any) -> None:
        async for records in stream:
            progress.add(len(records))

    async def read() -> None:
        # No consumer group: this process reads every partition, as a single worker of kpimon's source
        # reader does once Faust has assigned them all to it. From the beginning, like the other stages.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=args.broker,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in args.topics.split(",") for p in range(args.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                fetched = await consumer.getmany(timeout_ms=500, max_records=BULK_RECORDS)
                for records in fetched.values():
                    # The ConsumerRecords themselves: keys, values, offsets and timestamps, undecoded.
                    await batches.send(value=records)
        finally:
            await consumer.stop()

    app.task(read)


def build(args: argparse.Namespace, progress: Progress) -> faust.App:
    """The Faust app of `args.variant`, its agent counting into `progress`."""
    variant = args.variant
    if variant == "settings":
        app, topic = child_app(args, **_RAW, **TUNED_SETTINGS)
        _per_event(app, topic, progress)
    elif variant == "conductor":
        app, topic = child_app(args, **_RAW, cython_optimizations=True)
        _per_event(app, topic, progress)
    elif variant == "take":
        app, topic = child_app(args, **_RAW)
        _take(app, topic, progress)
    elif variant == "channel":
        app, _topic = child_app(args, **_RAW)
        _channel(app, args, progress)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return app


def main() -> None:
    """Run the variant's worker until the parent stops it."""
    args = child_arguments(__doc__ or "", variants=VARIANTS)
    progress = Progress(args.expected, args.status)
    app = build(args, progress)

    serve_child(app, progress)


if __name__ == "__main__":
    main()
