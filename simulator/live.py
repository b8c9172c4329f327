"""Sending simulated traffic to Kafka: a whole batch as fast as possible, or live traffic at a rate.

Messages are keyed exactly as `kpimon replay` keys a line (the user_id of a JSON object with a string
user_id, else no key), so a simulation sent here and the same simulation written to files and replayed
reach the worker identically.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.preflight import check_access
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import DURABLE_PRODUCER, TopicSpec, ensure_topics, key_of
from kpimon.simulator.model import Counts, LiveModel, Population, Scenario
from kpimon.simulator.render import render

#: Unacknowledged batches before waiting for their acks: bounds memory, keeps the pipeline full.
_WINDOW = 64
_PARTITIONER = DefaultPartitioner()
#: Live mode sends in ticks of this many seconds.
_TICK_S = 0.1


def _producer(settings: Settings) -> AIOKafkaProducer:
    # Linger and large batches for throughput; acks from all replicas so "sent" means stored, idempotent so
    # a retry after a broker failure does not send an event twice.
    return AIOKafkaProducer(
        bootstrap_servers=settings.broker,
        **aiokafka_options(settings),
        client_id="kpimon-simulate",
        **DURABLE_PRODUCER,
        linger_ms=20,
        max_batch_size=256 * 1024,
    )


async def _ensure(settings: Settings) -> None:
    await check_access(settings)
    specs = [TopicSpec(topic, settings.partitions) for topic in (settings.clicks, settings.surveys)]
    await ensure_topics(
        settings.broker,
        specs,
        options=aiokafka_options(settings),
        replication_factor=settings.replication_factor,
        min_insync_replicas=settings.min_insync_replicas,
    )


async def send_messages(settings: Settings, messages: Iterable[tuple[str, bytes]]) -> int:
    """Send (topic kind, value) pairs in order; return the count once Kafka acknowledged every one.

    Builds the record batches itself (aiokafka's per-message `send` costs tens of microseconds, which
    would make sending several times slower than generating). Keyed messages go to the partition the
    default partitioner picks for their key, as `producer.send` (and so `kpimon replay`) would, in order;
    keyless ones are spread round robin.
    """
    await _ensure(settings)
    topics = {"clicks": settings.clicks, "surveys": settings.surveys}
    producer = _producer(settings)
    await producer.start()
    sent = 0
    try:
        partitions = {t: sorted(await producer.partitions_for(t)) for t in topics.values()}
        batches: dict[tuple[str, int], BatchBuilder] = {}
        acks: list[asyncio.Future[object]] = []
        for kind, value in messages:
            topic = topics[kind]
            key = key_of(value)
            choices = partitions[topic]
            partition = choices[sent % len(choices)] if key is None else _PARTITIONER(key, choices, choices)
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: ship it, start another
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[(topic, partition)] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a message of {len(value)} bytes does not fit in a batch")
            sent += 1
            if len(acks) >= _WINDOW:
                await asyncio.gather(*acks)  # bounds memory; raises on the first failed delivery
                acks = []
        for (topic, partition), batch in batches.items():
            if batch.record_count():
                acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return sent


def send_all(settings: Settings, messages: Iterable[tuple[str, bytes]]) -> int:
    """`send_messages` from synchronous code (the batch CLI)."""
    return asyncio.run(send_messages(settings, messages))


async def live_traffic(
    settings: Settings,
    model: LiveModel,
    rate: float,
    stop: asyncio.Event,
    counts: Counts | None = None,
    on_scenario: Callable[[], None] | None = None,
) -> int:
    """Send about `rate` click events per second (plus surveys, duplicates, broken messages) until `stop`.

    Returns the number of messages sent, all acknowledged. Deliveries that fail are counted and reported
    by raising after the flush, so a broken broker does not go unnoticed.
    """
    await _ensure(settings)
    topics = {"clicks": settings.clicks, "surveys": settings.surveys}
    producer = _producer(settings)
    await producer.start()
    loop = asyncio.get_running_loop()
    failures: list[BaseException] = []

    def _check(future: asyncio.Future[object]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            failures.append(error)

    sent = 0
    clicks_sent = 0
    started = loop.time()
    scenario_seen = False
    try:
        while not stop.is_set():
            # Catch up to the rate from the start, so slow ticks do not lower the average.
            due = int((loop.time() - started) * rate) - clicks_sent
            now_ms = time.time_ns() // 1_000_000
            for out in model.step(now_ms, due):
                value = render(out.draft)
                future = await producer.send(topics[out.draft.topic], value=value, key=key_of(value))
                future.add_done_callback(_check)
                if counts is not None:
                    counts.add(out)
                sent += 1
            clicks_sent += due
            if model.scenario_started and not scenario_seen:
                scenario_seen = True
                if on_scenario is not None:
                    on_scenario()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK_S)
    finally:
        await producer.stop()  # flushes what is still buffered and waits for the acks
    if failures:
        raise RuntimeError(f"{len(failures)} messages were not delivered, e.g. {failures[0]!r}")
    return sent


def run_live(
    settings: Settings,
    *,
    users: int,
    seed: int,
    rate: float,
    late_fraction: float,
    lateness_days: float,
    duplicate_fraction: float,
    invalid_fraction: float,
    scenarios: Sequence[Scenario],
    scenario_after: float,
    counts: Counts | None = None,
    population: Population | None = None,
) -> int:
    """Live mode from the CLI: runs until SIGINT (Ctrl-C) or SIGTERM, then flushes and returns.

    `population`: the users' state a history left (their traffic continues it), else `users` new ones.
    """
    import click

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        model = LiveModel(
            users,
            seed,
            time.time_ns() // 1_000_000,
            rate,
            late_fraction=late_fraction,
            duplicate_fraction=duplicate_fraction,
            invalid_fraction=invalid_fraction,
            lateness_days=lateness_days,
            scenarios=scenarios,
            scenario_after_s=scenario_after,
            population=population,
        )
        names = ", ".join(map(str, scenarios)) or "no scenario"
        click.echo(
            f"simulate: live, {len(model.users)} users ({len(model.active)} active today), about {rate:g} "
            f"events/s to {settings.clicks} and {settings.surveys} at {settings.broker}; {names}"
            + (f" from {scenario_after:g} s on" if scenarios else "")
            + "; Ctrl-C stops",
            err=True,
        )

        def announce() -> None:
            click.echo(f"simulate: scenario started: {names}", err=True)

        try:
            return await live_traffic(settings, model, rate, stop, counts, announce if scenarios else None)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
