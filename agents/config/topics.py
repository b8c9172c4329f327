"""Create the topics kpimon reads and writes, with the partition counts, replication and configs it expects.

Replication follows the cluster (`choose_replication`): on a cluster of three brokers or more, a topic kpimon
creates has 3 replicas and `min.insync.replicas=2`, so one broker can die without losing an acknowledged
write or stopping the writers (every kpimon producer uses `DURABLE_PRODUCER`: acks=all, idempotent); on
two live brokers (a third one away, or a cluster of two), 2 replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long admin requests are retried on retriable errors (a broker of the cluster that just died).
ADMIN_RETRY_SECONDS = 30.0

#: The replication factor and min.insync.replicas of topics kpimon creates on 3 live brokers or more: one
#: broker may be away (a crash, a rolling restart) and writes with acks=all still succeed, each stored on two
#: brokers at least.
DEFAULT_REPLICATION_FACTOR = 3
DEFAULT_MIN_INSYNC_REPLICAS = 2
#: Options of every aiokafka producer kpimon creates (Faust's gets the same, agents/compat.py): a write
#: counts once every in-sync replica has it, and a retry after a lost acknowledgement (a leader dying
#: mid-request) is stored once, not twice.
DURABLE_PRODUCER: Mapping[str, Any] = {"acks": "all", "enable_idempotence": True}


class ReplicationError(ValueError):
    """The configured replication cannot be had on this cluster; the message says why and what to set."""


@dataclass(frozen=True)
class Replication:
    """Replication factor and min.insync.replicas of the topics kpimon creates."""

    factor: int
    min_insync: int

    def topic_config(self) -> dict[str, str]:
        """The topic-level config that goes with it (set even when 1: a broker default may be higher)."""
        return {"min.insync.replicas": str(self.min_insync)}


def choose_replication(brokers: int, factor: int = 0, min_insync: int = 0) -> Replication:
    """The replication of new topics on a cluster of `brokers` live brokers; 0 means automatic.

    Automatic: factor 3 with at least 3 brokers, else one per live broker (a topic created while one broker
    of three is away keeps a copy on each of the other two, not one); min.insync.replicas 2 with a factor
    of 3 or more, else 1 (with a factor of 2, a min.insync.replicas of 2 would stop every write while a
    broker is away).
    """
    if factor == 0:
        factor = min(DEFAULT_REPLICATION_FACTOR, max(brokers, 1))
    if min_insync == 0:
        min_insync = DEFAULT_MIN_INSYNC_REPLICAS if factor >= DEFAULT_REPLICATION_FACTOR else 1
    if factor > brokers:
        raise ReplicationError(
            f"replication_factor {factor} needs at least {factor} brokers, the cluster has {brokers} live; "
            "lower replication_factor (0: automatic) or start the missing brokers"
        )
    if min_insync > factor:
        raise ReplicationError(
            f"min_insync_replicas {min_insync} exceeds the replication factor {factor}: no write could be "
            "acknowledged"
        )
    return Replication(factor, min_insync)


@dataclass(frozen=True)
class TopicSpec:
    """A topic to exist: name, partitions and topic-level configs (e.g. cleanup.policy=compact)."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


async def _retrying(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """`attempt()`, again on a retriable Kafka error (with backoff) for up to ADMIN_RETRY_SECONDS.

    Right after a broker of a cluster dies, the metadata still lists it until the controller fences it
    (Kafka's broker.session.timeout.ms, 9 s): an admin request sent to it fails with NodeNotReadyError, and
    aiokafka's admin client does not retry. A new attempt asks another broker.
    """
    deadline = time.monotonic() + ADMIN_RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            return await attempt()
        except KafkaError as err:
            if not err.retriable or time.monotonic() + delay > deadline:
                raise
            log.info("%s: %r; retrying in %.1f s", what, err, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    client_id: str = "kpimon-admin",
    options: Mapping[str, Any] | None = None,
    replication_factor: int = 0,
    min_insync_replicas: int = 0,
    leader_timeout: float = 30.0,
) -> Replication:
    """Create the topics of `specs` that do not exist yet; warn when one exists with other partitions.

    `options` are extra client options, e.g. the security ones of `kafka_security.aiokafka_options`. New
    topics get the replication `choose_replication` picks for the cluster's live brokers (0: automatic),
    which is returned; an existing topic with fewer replicas is only warned about (kpimon never moves data).
    Retriable Kafka errors (a broker that just died) are retried for a while. Returns once every partition
    of the topics has a leader (at most `leader_timeout` seconds later).
    """

    async def attempt() -> Replication:
        return await _ensure_topics(
            bootstrap, specs, client_id, options, replication_factor, min_insync_replicas, leader_timeout
        )

    return await _retrying(attempt, "checking the topics")


async def _ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    client_id: str,
    options: Mapping[str, Any] | None,
    replication_factor: int,
    min_insync_replicas: int,
    leader_timeout: float,
) -> Replication:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id, **(options or {}))
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        replication = choose_replication(len(cluster["brokers"]), replication_factor, min_insync_replicas)
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        for spec in missing:
            config = {**replication.topic_config(), **spec.config}
            try:
                await admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, replication.factor, topic_configs=config)]
                )
                log.info(
                    "created topic %s (%d partitions, %d replicas, min.insync.replicas %s)",
                    spec.name,
                    spec.partitions,
                    replication.factor,
                    config["min.insync.replicas"],
                )
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
        present = [s for s in specs if s.name in existing]
        if present:
            described = await admin.describe_topics([s.name for s in present])
            by_name = {d["topic"]: d["partitions"] for d in described}
            for spec in present:
                _warn_on_shape(spec, by_name.get(spec.name) or [], replication)
        await _wait_for_leaders(admin, [s.name for s in specs], leader_timeout)
        return replication
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> None:
    """Wait until every partition of the topics has a leader (or `timeout` passes, then go on).

    A topic just created (here or by another process) can be without leaders for a moment; a producer that
    sends then gets NotLeaderForPartition and retries, and on a busy machine its first batches expired that
    way: `kpimon demo`'s replay failed on a broker under a load of 25.
    """
    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topics(names)
        leaderless = sorted(
            {
                d["topic"]
                for d in described
                if not d["partitions"] or any(p["leader"] < 0 for p in d["partitions"])
            }
        )
        if not leaderless or time.monotonic() > deadline:
            if leaderless:
                log.warning("topics without a leader after %.0f s: %s", timeout, ", ".join(leaderless))
            return
        await asyncio.sleep(0.1)


def _warn_on_shape(spec: TopicSpec, partitions: list[Any], replication: Replication) -> None:
    """Warn when an existing topic has another partition count or fewer replicas than new ones get."""
    if not partitions:  # not described (deleted meanwhile): nothing to say
        return
    if len(partitions) != spec.partitions:
        log.warning("topic %s has %d partitions, expected %d", spec.name, len(partitions), spec.partitions)
    replicas = min(len(p["replicas"]) for p in partitions)
    if replicas < replication.factor:
        log.warning(
            "topic %s has %d replicas, expected %d: losing a broker may stop it or lose its data; add "
            "replicas with kafka-reassign-partitions",
            spec.name,
            replicas,
            replication.factor,
        )


async def topic_partitions(bootstrap: str, topic: str, options: Mapping[str, Any] | None = None) -> list[int]:
    """The partition numbers of a topic ([] when it does not exist); `options`: security client options."""

    async def attempt() -> list[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options or {}))
        await admin.start()
        try:
            if topic not in await admin.list_topics():
                return []
            described = await admin.describe_topics([topic])
            return sorted(p["partition"] for p in described[0]["partitions"])
        finally:
            await admin.close()

    return await _retrying(attempt, f"describing {topic}")


def key_of(line: bytes) -> bytes | None:
    """The message key: the line's user_id when it is a JSON object with a string user_id, else none."""
    try:
        value = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
        return None
    if isinstance(value, dict):
        user_id = value.get("user_id")
        if isinstance(user_id, str):
            return user_id.encode("utf-8", "surrogatepass")
    return None
