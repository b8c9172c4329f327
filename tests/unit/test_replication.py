"""Replication of the topics kpimon creates, and the options of the producers it creates (issue #19)."""

from __future__ import annotations

import pytest
from aiokafka.errors import NodeNotReadyError, TopicAuthorizationFailedError

from kpimon.agents import compat
from kpimon.agents.cli.worker import topic_specs
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import (
    DURABLE_PRODUCER,
    Replication,
    ReplicationError,
    _retrying,
    choose_replication,
)


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [(1, Replication(1, 1)), (2, Replication(2, 1)), (3, Replication(3, 2)), (5, Replication(3, 2))],
)
def test_automatic_replication_follows_the_live_brokers(brokers: int, expected: Replication) -> None:
    assert choose_replication(brokers) == expected


def test_configured_replication_wins_and_min_insync_follows_the_factor() -> None:
    assert choose_replication(5, factor=5) == Replication(5, 2)
    assert choose_replication(3, factor=2) == Replication(2, 1)  # 2 in sync of 2 stops writes on a crash
    assert choose_replication(3, factor=3, min_insync=3) == Replication(3, 3)
    assert choose_replication(1, min_insync=1) == Replication(1, 1)


def test_impossible_replication_is_refused_saying_what_to_change() -> None:
    with pytest.raises(ReplicationError, match="replication_factor 3 needs at least 3 brokers, the cluster"):
        choose_replication(2, factor=3)
    with pytest.raises(ReplicationError, match="min_insync_replicas 2 exceeds the replication factor 1"):
        choose_replication(1, min_insync=2)


def test_min_insync_replicas_is_always_part_of_the_topic_config() -> None:
    # Set even at 1: a cluster whose default is 2 would otherwise refuse every write to a 1-replica topic.
    assert Replication(1, 1).topic_config() == {"min.insync.replicas": "1"}
    assert Replication(3, 2).topic_config() == {"min.insync.replicas": "2"}


def test_settings_refuse_negative_or_inconsistent_replication() -> None:
    assert Settings.from_env({"KPIMON_REPLICATION_FACTOR": "3"}).replication_factor == 3
    with pytest.raises(ValueError, match="must be >= 0"):
        Settings.from_env({}, replication_factor=-1)
    with pytest.raises(
        ValueError, match=r"min_insync_replicas \(3\) must not exceed replication_factor \(2\)"
    ):
        Settings.from_env({}, replication_factor=2, min_insync_replicas=3)


def test_the_worker_creates_fausts_leader_topic_itself() -> None:
    """So it is replicated like every other topic (Faust would create it with its own settings)."""
    names = {spec.name: spec.partitions for spec in topic_specs(Settings(app_id="app"))}
    assert names["app-__assignor-__leader"] == 1


def test_every_kpimon_producer_is_idempotent_with_acks_all() -> None:
    assert DURABLE_PRODUCER == {"acks": "all", "enable_idempotence": True}
    # Faust's producer gets the same (compat cannot import the config layer).
    assert compat.DURABLE_PRODUCER_OPTIONS == DURABLE_PRODUCER


async def test_admin_requests_are_retried_while_a_dead_broker_is_still_listed() -> None:
    """Right after a broker dies the metadata still lists it: a request to it fails, the next one works."""
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise NodeNotReadyError("Attempt to send a request to node which is not ready (node id 1).")
        return "done"

    assert await _retrying(flaky, "test") == "done"
    assert len(calls) == 3

    async def refused() -> str:
        calls.append(1)
        raise TopicAuthorizationFailedError("no")

    with pytest.raises(TopicAuthorizationFailedError):  # not retriable: at once
        await _retrying(refused, "test")
    assert len(calls) == 4
