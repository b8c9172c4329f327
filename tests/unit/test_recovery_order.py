"""Faust runs the tables' recovery callbacks before it checks for a newer rebalance (issue #19).

`Recovery.on_recovery_completed(generation)` calls every table's recovery callbacks, and only then compares
the generation it restored with the consumer's: by then the consumer's assignment can hold partitions of
the next generation, whose changelogs are not restored yet. A worker that rebuilt their counters then (from
no user states) and started reading them kept wrong counters for good: the next recovery found the
partition's counters present and did not rebuild them. The callbacks now take only the partitions the
recovery restored (compat.restored_partitions); these tests drive Faust's own recovery code with the
worker's real callbacks, the group assignment and the changelog records standing in for Kafka.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from kpimon.agents import compat
from kpimon.agents.app import Kpimon, create_app
from kpimon.agents.config.settings import Settings
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Accepted, Policy, validate
from tests.unit.fakes import FakeFetcher

NOW = int(time.time() * 1000)
DAY_MS = 86_400_000


def user_states(partition: int, users: int) -> dict[bytes, UserState]:
    """States of `users` users active on the last three days, as the partition's changelog holds them."""
    engine = SourceEngine(max_lateness_days=7)
    states: dict[bytes, UserState] = {}
    for u in range(users):
        user = f"p{partition}-u{u}"
        for back in range(3):
            event = {"event_id": f"{user}-{back}", "user_id": user, "ts": NOW - back * DAY_MS, "type": "view"}
            verdict = validate("clicks", user.encode(), json.dumps(event).encode(), NOW, Policy(7))
            assert isinstance(verdict, Accepted)
            engine.on_event(states, user.encode(), partition, verdict, NOW)
    return states


def restore(kpimon: Kpimon, partition: int, states: dict[bytes, UserState]) -> None:
    """What Faust's recovery does with the changelog records of one user-state partition."""
    events = [
        SimpleNamespace(key=key, value=state, message=SimpleNamespace(partition=partition, value=b"x"))
        for key, state in states.items()
    ]
    kpimon.users.data.apply_changelog_batch(events, lambda k: k, lambda v: v)


def expected_counts(partition: int, states: dict[bytes, UserState]) -> dict[Any, dict[str, int]]:
    counters = SourceEngine(max_lateness_days=7).rebuild(partition, states.values(), NOW)
    return {group: counters.counts(group) for group in counters.groups()}


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Kpimon, list[TP], FakeFetcher]:
    """A worker app (memory store, 2 partitions) whose consumer group assignment the test sets."""
    kpimon = create_app(Settings(app_id="t-recovery", data_dir=tmp_path, partitions=2, max_lateness_days=7))
    assignment: list[TP] = []
    monkeypatch.setattr(kpimon.app.consumer, "assignment", lambda: set(assignment))
    fetcher = FakeFetcher([])
    monkeypatch.setattr(kpimon.ingest.reader, "_new_fetcher", lambda: fetcher)
    return kpimon, assignment, fetcher


def assign(assignment: list[TP], settings: Settings, partitions: list[int]) -> None:
    assignment[:] = [TP(topic, p) for topic in (settings.clicks, settings.surveys) for p in partitions]


async def test_a_recovery_rebuilds_only_the_partitions_it_restored(
    worker: tuple[Kpimon, list[TP], FakeFetcher],
) -> None:
    kpimon, assignment, fetcher = worker
    settings, users = kpimon.settings, kpimon.users
    recovery = kpimon.app.tables.recovery
    changelog = users.changelog_topic.get_topic_name()
    first, second = user_states(0, 5), user_states(1, 7)

    # Generation 1 restored partition 0 ...
    recovery.actives_for_table[users] = {TP(changelog, 0)}
    restore(kpimon, 0, first)
    # ... and before its recovery completes, generation 2 gives this worker partition 1 too: the consumer
    # holds it (its assignment is set in Faust's consumer thread), Faust's recovery has not started on it.
    assign(assignment, settings, [0, 1])
    kpimon.app.consumer_generation_id = 2
    await recovery.on_recovery_completed(1)  # Faust's own: callbacks first, then "rebalancing again"

    engine = kpimon.engine
    assert set(engine.partitions) == {0}, "partition 1 has no restored states yet: not rebuilt"
    assert {p for _, p in fetcher.assignment} == {0}, "nor read"
    assert {g: engine.partitions[0].counts(g) for g in engine.partitions[0].groups()} == expected_counts(
        0, first
    )

    # Generation 2's recovery restores partition 1 and calls the callbacks again: now it is rebuilt, from
    # its restored states, and read.
    recovery.actives_for_table[users] = {TP(changelog, 0), TP(changelog, 1)}
    restore(kpimon, 1, second)
    await users.on_recovery_completed(recovery.actives_for_table[users], set())
    assert set(engine.partitions) == {0, 1}
    assert {g: engine.partitions[1].counts(g) for g in engine.partitions[1].groups()} == expected_counts(
        1, second
    )
    assert {p for _, p in fetcher.assignment} == {0, 1}


async def test_a_callback_after_a_newer_rebalance_began_changes_nothing(
    worker: tuple[Kpimon, list[TP], FakeFetcher],
) -> None:
    kpimon, assignment, fetcher = worker
    users, recovery = kpimon.users, kpimon.app.tables.recovery
    changelog = users.changelog_topic.get_topic_name()
    recovery.actives_for_table[users] = {TP(changelog, 0), TP(changelog, 1)}
    assign(assignment, kpimon.settings, [0, 1])
    # Faust's on_rebalance of the next generation has run: its recovery will restore and call again.
    recovery.signal_recovery_start.set()
    assert compat.restored_partitions(kpimon.app, users) is None
    await users.on_recovery_completed(recovery.actives_for_table[users], set())
    assert kpimon.engine.partitions == {}
    assert fetcher.assignment == []
