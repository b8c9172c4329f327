"""Create the topics kpimon reads and writes, with the partition counts and configs it expects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic to exist: name, partitions and topic-level configs (e.g. cleanup.policy=compact)."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


async def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    client_id: str = "kpimon-admin",
    options: Mapping[str, Any] | None = None,
    leader_timeout: float = 30.0,
) -> None:
    """Create the topics of `specs` that do not exist yet; warn when one exists with other partitions.

    Returns once every partition of them has a leader (at most `leader_timeout` seconds later). `options`
    are extra client options, e.g. the security ones of `kafka_security.aiokafka_options`.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id, **(options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        for spec in missing:
            try:
                await admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, 1, topic_configs=dict(spec.config))]
                )
                log.info("created topic %s (%d partitions)", spec.name, spec.partitions)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
        present = [s for s in specs if s.name in existing]
        if present:
            described = await admin.describe_topics([s.name for s in present])
            counts = {d["topic"]: len(d["partitions"]) for d in described}
            for spec in present:
                if counts.get(spec.name, spec.partitions) != spec.partitions:
                    log.warning(
                        "topic %s has %s partitions, expected %d",
                        spec.name,
                        counts[spec.name],
                        spec.partitions,
                    )
        await _wait_for_leaders(admin, [s.name for s in specs], leader_timeout)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> None:
    """Wait until every partition of the topics has a leader (or `timeout` passes, then go on).

    A topic just created (here or by another process) can be without leaders for a moment; a producer that
    sends then gets NotLeaderForPartition and retries, and on a busy machine its first batches expired that
    way: `kpimon demo`'s replay failed on a broker under a load of 25.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics(names)
        leaderless = sorted(
            {
                d["topic"]
                for d in described
                if not d["partitions"] or any(p["leader"] < 0 for p in d["partitions"])
            }
        )
        if not leaderless or loop.time() > deadline:
            if leaderless:
                log.warning("topics without a leader after %.0f s: %s", timeout, ", ".join(leaderless))
            return
        await asyncio.sleep(0.1)


async def topic_partitions(bootstrap: str, topic: str, options: Mapping[str, Any] | None = None) -> list[int]:
    """The partition numbers of a topic ([] when it does not exist); `options`: security client options."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options or {}))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        described = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described[0]["partitions"])
    finally:
        await admin.close()


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
