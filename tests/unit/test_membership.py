"""Static membership: the instance id setting, the announcements, the topic a worker creates for them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kpimon.agents.app import static_identity
from kpimon.agents.cli.worker import topic_specs
from kpimon.agents.config.settings import Settings
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import versioned
from kpimon.agents.pipeline.partials import Partial
from kpimon.agents.runtime.membership import (
    Announcement,
    announcement,
    decode,
    in_use_message,
    instances_topic,
)
from kpimon.agents.runtime.ownership import Ownership


def test_an_instance_id_is_what_kafka_accepts_as_a_group_instance_id() -> None:
    assert Settings.from_env({"KPIMON_INSTANCE_ID": "kpimon-worker-0"}).instance_id == "kpimon-worker-0"
    assert Settings.from_env({}).instance_id == ""  # dynamic membership
    for bad in ("has space", "a/b", "x" * 250, "é"):
        with pytest.raises(ValueError, match="instance_id must be"):
            Settings.from_env({}, instance_id=bad)


def test_announcements_round_trip_and_foreign_records_are_ignored() -> None:
    decoded = decode(announcement("run-1", "running"))
    assert decoded is not None and (decoded.run, decoded.state) == ("run-1", "running")
    assert decoded.pid > 0 and decoded.host
    for foreign in (None, b"", b"not json", b'{"run": 1}', b"[]"):
        assert decode(foreign) is None


def test_the_in_use_error_names_the_id_and_the_holder() -> None:
    message = in_use_message("worker-0", Announcement("r", "host-a", 42, "running"))
    assert "instance_id 'worker-0' is in use by a running worker" in message
    assert "host-a" in message and "pid 42" in message


def test_only_a_static_member_creates_the_instances_topic_and_gets_a_stable_url() -> None:
    dynamic = Settings.from_env({}, app_id="app")
    static = Settings.from_env({}, app_id="app", instance_id="w0", web_port=7001)
    assert instances_topic("app") not in {spec.name for spec in topic_specs(dynamic)}
    (spec,) = [spec for spec in topic_specs(static) if spec.name == instances_topic("app")]
    assert spec.partitions == 1 and spec.config == {"cleanup.policy": "compact"}
    assert static_identity(dynamic) == {}
    # The same whatever the web port: the broker hands a restarted member its previous assignment.
    assert static_identity(static) == static_identity(Settings.from_env({}, instance_id="w0", web_port=7002))


def test_a_restarted_static_member_sends_partials_that_win_over_its_previous_incarnation() -> None:
    """Same generation (no rebalance), later start, lower offsets: its partials are newer all the same."""
    app = SimpleNamespace(consumer_generation_id=7)
    topics = frozenset({"clicks"})
    before = Ownership(app, topics, incarnation=1_764_000_000_000)
    after = Ownership(app, topics, incarnation=before.incarnation + 3_000)
    aggregator = Aggregator(4)
    table: dict[bytes, Any] = {}

    def partial(owner: Ownership, processed: int, active: int) -> Partial:
        return Partial(
            source=2,
            version=versioned(owner.epoch(), processed),
            dimension="all",
            segment="all",
            day=20_000,
            counts={"active_1d": active},
        )

    assert aggregator.on_partial(table, partial(before, 5_000, 40))
    # The restart re-reads from the committed offsets, below what the previous incarnation had passed.
    assert aggregator.on_partial(table, partial(after, 1_200, 12))
    assert not aggregator.on_partial(table, partial(before, 5_001, 41))  # a late message of the dead one
    # A rebalance (a higher generation) still orders first, whatever the start times.
    rebalanced = Ownership(SimpleNamespace(consumer_generation_id=8), topics, incarnation=1)
    assert rebalanced.epoch() > after.epoch()
