"""Retention over 120 simulated days with a moving wall clock: state stays bounded (issue #8).

In-process, without Kafka: the source engine (user states, per-partition counters, sweeps) and the
aggregator (aggregate table, expiry) run day after day as the agents drive them. Afterwards no state
holds a day older than the windows need, and the bytes per user do not grow with time.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.partials import parse_group
from kpimon.streams.engagement import expiry_cutoff
from kpimon.streams.events import MS_PER_DAY
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Accepted, Policy, validate
from tests import events

DAYS, USERS, PARTITIONS = 120, 300, 2
LATENESS = 7
START = 1_785_000_000_000 // MS_PER_DAY * MS_PER_DAY  # midnight UTC, mid 2026


def event(kind: str, user: str, event_id: str, ts: int, rng: random.Random) -> dict[str, Any]:
    platform = rng.choice(["ios", "web"])
    if kind == "clicks":
        return events.click(user_id=user, ts=ts, event_id=event_id, platform=platform)
    return events.survey(user_id=user, ts=ts, event_id=event_id, platform=platform, score=rng.randint(0, 10))


def state_size(users: dict[bytes, UserState]) -> float:
    """Mean serialized (changelog) bytes per user."""
    return sum(len(state.to_bytes()) for state in users.values()) / len(users)


def test_state_keeps_no_day_older_than_the_windows_need(record_property: pytest.RecordProperty) -> None:
    rng = random.Random(8)
    engine, users = SourceEngine(LATENESS), dict[bytes, UserState]()
    aggregator, aggregates = Aggregator(PARTITIONS), dict[bytes, dict[str, Any]]()
    policy = Policy(max_lateness_days=LATENESS)
    # A third of the users go quiet after day 40: only the sweep expires their old days.
    quiet_after = {f"u{i}": 40 if i % 3 == 0 else DAYS for i in range(USERS)}
    sizes: dict[int, float] = {}
    for day in range(DAYS):
        now_ms = START + day * MS_PER_DAY + MS_PER_DAY // 2
        for user, last_day in quiet_after.items():
            if day > last_day or rng.random() > 0.4:
                continue
            kind = "surveys" if rng.random() < 0.1 else "clicks"
            late = rng.choice([0, 0, 0, 1, 3])  # some events arrive days late
            ts = now_ms - late * MS_PER_DAY - rng.randint(0, 3_600_000)
            value = events.message(event(kind, user, f"{user}-{day}", ts, rng))
            verdict = validate(kind, user.encode(), value, now_ms, policy)  # type: ignore[arg-type]
            assert isinstance(verdict, Accepted), verdict
            engine.on_event(users, user.encode(), hash(user) % PARTITIONS, verdict, now_ms)
        for partition in range(PARTITIONS):
            engine.sweep(users, partition, now_ms)  # the ingest agent sweeps every few seconds
        for partial in engine.take_partials(now_ms):  # every flush
            aggregator.on_partial(aggregates, partial)
        aggregator.dirty.clear()  # published
        final = engine.oldest_accepted_day(now_ms) - 1
        for partition in range(PARTITIONS):
            aggregator.expire(aggregates, partition, final)  # about once a minute per partition
        sizes[day] = state_size(users)

    cutoff = expiry_cutoff(engine.oldest_accepted_day(now_ms))
    oldest_open = engine.oldest_accepted_day(now_ms)
    for key, state in users.items():
        assert state.base >= cutoff or not state.segments, key
        for segment in state.segments:
            assert min(state.active_days(segment)) >= cutoff, (key, segment)
        assert all(fact[0] >= cutoff for fact in state.surveys.values()), key
    # Counters and aggregate groups: nothing older than the lateness bound (one day of margin).
    for counters in engine.partitions.values():
        assert min((day for _, _, day in counters.groups()), default=oldest_open) >= oldest_open
        # Older days' differences are folded into the oldest kept day, not kept one by one.
        assert all(min(diffs, default=oldest_open) >= oldest_open for diffs in counters.diffs.values())
    groups = [parse_group(key.decode()) for key in aggregates if not key.startswith(b"__watermark__")]
    assert groups and min(day for _, _, day in groups) >= final
    # Bounded: the window needs at most lateness + 60 days, so bytes per user stop growing after that.
    steady = sizes[LATENESS + 60]
    record_property("state_bytes_per_user", {d: round(sizes[d], 1) for d in (30, LATENESS + 60, DAYS - 1)})
    assert sizes[DAYS - 1] <= steady * 1.1, sizes
    assert sizes[DAYS - 1] < 300  # a few dozen to a few hundred bytes per user (docs/architecture.md)
