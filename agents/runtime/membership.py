"""Static group membership: one running worker per `instance_id`, announced on a compacted topic.

With `instance_id` set, the worker joins the consumer group as a static member (Kafka's
`group.instance.id`, KIP-345): a worker restarted with the same id gets its own partitions back at once,
without a rebalance, instead of waiting for the session timeout of its dead predecessor.

Kafka itself lets a second process with an id already in use take the id over: the coordinator fences the
first one, which rejoins and fences the second, and so on. So each worker with an id announces itself on
the compacted topic `<app_id>-instances` (key: the id), once a second while it runs and once more when it
stops cleanly, and a starting worker first reads that topic: when the last announcement of its id is not a
clean stop, it watches the topic for `CLAIM_WINDOW` seconds, and an announcement in that time means a
running worker has the id: the new one exits with an error naming it. A worker killed with SIGKILL sends
nothing more, so its successor starts after the window. No clock is compared across hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from kpimon.agents.config.topics import DURABLE_PRODUCER

if TYPE_CHECKING:
    from kpimon.agents.config.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between a running worker's announcements.
ANNOUNCE_INTERVAL = 1.0
#: Seconds a starting worker watches for announcements of its id before it takes the id.
CLAIM_WINDOW = 2.0 * ANNOUNCE_INTERVAL


class InstanceInUseError(Exception):
    """Another running worker has this worker's instance id; str() is one line for the user."""


class Announcement(msgspec.Struct, frozen=True):
    """The value of an `<app_id>-instances` record: who runs the id now, or that it stopped cleanly."""

    run: str
    host: str
    pid: int
    state: str  # "running" or "stopped"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Announcement)


def instances_topic(app_id: str) -> str:
    """The compacted topic the workers of `app_id` announce their instance ids on."""
    return f"{app_id}-instances"


def announcement(run: str, state: str) -> bytes:
    """The encoded announcement of this process for run `run`."""
    return _encoder.encode(Announcement(run, socket.gethostname(), os.getpid(), state))


def decode(value: bytes | None) -> Announcement | None:
    """An announcement, or None for anything else (a record kpimon did not write is ignored)."""
    if value is None:
        return None
    try:
        return _decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def in_use_message(instance_id: str, holder: Announcement) -> str:
    """The error of a worker whose id another running worker has."""
    return (
        f"instance_id {instance_id!r} is in use by a running worker (host {holder.host}, pid {holder.pid}); "
        "give every worker its own instance_id, or stop the other one first"
    )


async def claim(settings: Settings, options: Mapping[str, Any], window: float = CLAIM_WINDOW) -> str:
    """Check that no running worker has `settings.instance_id`; return this run's id.

    Raises InstanceInUseError when one does. Waits up to `window` seconds only when the id's last
    announcement is not a clean stop (its worker runs, or was killed).
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    instance_id = settings.instance_id
    key = instance_id.encode()
    tp = TopicPartition(instances_topic(settings.app_id), 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker,
        client_id=f"{settings.app_id}-instance-claim",
        enable_auto_commit=False,
        **options,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        last: Announcement | None = None
        # The topic is compacted and holds one record per id: reading all of it is cheap.
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if record.key == key:
                    last = decode(record.value)
        if last is not None and last.state != "stopped":
            log.info(
                "instance_id %r was last announced by %s (pid %d) without a clean stop; watching %.0f s",
                instance_id,
                last.host,
                last.pid,
                window,
            )
            deadline = time.monotonic() + window
            while (left := deadline - time.monotonic()) > 0:
                batch = await consumer.getmany(tp, timeout_ms=int(min(left, 0.5) * 1000) + 1)
                for record in batch.get(tp, []):
                    seen = decode(record.value) if record.key == key else None
                    if seen is not None and seen.state == "running":
                        raise InstanceInUseError(in_use_message(instance_id, seen))
    finally:
        await consumer.stop()
    run = uuid.uuid4().hex
    # Announced at once: a second worker starting now must see this one before Faust's timer first runs.
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker,
        client_id=f"{settings.app_id}-instance-claim",
        **options,
        **DURABLE_PRODUCER,
    )
    await producer.start()
    try:
        await producer.send_and_wait(tp.topic, announcement(run, "running"), key=key, partition=0)
    finally:
        await producer.stop()
    return run


def register_membership(app: Any, settings: Settings, run: str) -> None:
    """Announce `run` on the instances topic every ANNOUNCE_INTERVAL, and a clean stop at the end.

    `app` is the worker's KpimonApp (its timers and `before_stop` hooks).
    """
    from kpimon.agents.runtime.tables import raw_topic

    topic = raw_topic(app, instances_topic(settings.app_id))
    key = settings.instance_id.encode()

    async def announce() -> None:
        # send_soon: never blocks the timer, whatever the broker's state.
        topic.send_soon(key=key, value=announcement(run, "running"), partition=0)

    app.timer(ANNOUNCE_INTERVAL, name="kpimon.announce")(announce)

    async def announce_stop() -> None:
        # Lets a restart skip the claim window; lost when the broker is away, which only delays it.
        with contextlib.suppress(Exception):
            topic.send_soon(key=key, value=announcement(run, "stopped"), partition=0)
        await asyncio.sleep(0)

    app.before_stop.append(announce_stop)
