"""Flushing partials and publishing KPIs without Kafka: what is sent, where, and when pacing holds back."""

from __future__ import annotations

import time
from typing import Any

from kpimon.agents.pipeline import partials
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.pacing import Pacer, Turns
from kpimon.agents.runtime.publishing import KpiPublisher, PartialsFlusher
from kpimon.streams import output
from kpimon.streams.events import MS_PER_DAY
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Accepted, Policy, validate
from tests.unit.fakes import FakeSender, click_record

PARTITIONS = 4


class NeverDue(Pacer):
    def due(self) -> bool:
        return False


def engine_with_clicks(*users: str) -> SourceEngine:
    engine, states = SourceEngine(7), dict[bytes, UserState]()
    now = int(time.time() * 1000)
    for offset, user in enumerate(users):
        record = click_record(offset, user, now)
        verdict = validate("clicks", record.key, record.value, now, Policy())
        assert isinstance(verdict, Accepted)
        engine.on_event(states, user.encode(), 1, verdict, now)
    engine.processed("clicks", 1, len(users) - 1)
    return engine


def flusher(engine: SourceEngine, sender: FakeSender, **overrides: Any) -> PartialsFlusher:
    options: dict[str, Any] = {
        "turns": Turns(),
        "stopping": lambda: False,
        "generation": lambda: 3,
        "caught_up": lambda: False,
    }
    options.update(overrides)
    return PartialsFlusher(engine, sender, PARTITIONS, **options)


async def test_a_flush_sends_each_changed_group_to_its_partition_and_a_watermark_to_every_partition() -> None:
    engine, sender = engine_with_clicks("a", "b"), FakeSender()
    sent = await flusher(engine, sender).flush()
    decoded = [(partials.decode(value), partition) for _, value, partition in sender.sent]
    groups = [(p, part) for p, part in decoded if isinstance(p, partials.Partial)]
    marks = [(p, part) for p, part in decoded if isinstance(p, partials.Watermark)]
    assert sent == len(groups) > 0
    for partial, partition in groups:
        assert partition == partials.partition_of(partial.group, PARTITIONS)
        assert partial.version >> 40 == 3  # the generation comes first in the version
    assert sorted(partition for _, partition in marks) == list(range(PARTITIONS))
    # Nothing changed since: the next flush sends no partial.
    sender.sent.clear()
    assert await flusher(engine, sender).flush() == 0


async def test_pacing_holds_a_flush_back_unless_caught_up_or_final() -> None:
    engine, sender = engine_with_clicks("a"), FakeSender()
    assert await flusher(engine, sender, pacer=NeverDue()).flush() == 0
    assert sender.sent == []
    assert await flusher(engine, sender, pacer=NeverDue(), caught_up=lambda: True).flush() > 0
    engine2, sender2 = engine_with_clicks("b"), FakeSender()
    assert await flusher(engine2, sender2, pacer=NeverDue()).flush(final=True) > 0


async def test_a_stopping_worker_stops_flushing_but_the_final_flush_still_sends() -> None:
    engine, sender = engine_with_clicks("a"), FakeSender()
    assert await flusher(engine, sender, stopping=lambda: True).flush() == 0
    engine2, sender2 = engine_with_clicks("a"), FakeSender()
    assert await flusher(engine2, sender2, stopping=lambda: True).flush(final=True) > 0


async def test_published_records_are_the_changed_kpis_of_owned_groups_only() -> None:
    engine, to_aggregate = engine_with_clicks("a", "b", "c"), FakeSender()
    await flusher(engine, to_aggregate).flush()
    aggregator, aggregates = Aggregator(PARTITIONS), dict[Any, Any]()
    for _, value, partition in to_aggregate.sent:
        decoded = partials.decode(value)
        if isinstance(decoded, partials.Partial):
            aggregator.on_partial(aggregates, decoded)
        else:
            assert partition is not None
            aggregator.on_watermark(aggregates, partition, decoded)
    today = int(time.time() * 1000) // MS_PER_DAY
    mine = partials.partition_of(("all", "all", today), PARTITIONS)
    kpis = FakeSender()
    publisher = KpiPublisher(
        aggregator, aggregates, kpis, lambda: {mine}, Turns(), lambda: False, lambda: True
    )
    assert await publisher.publish() > 0
    records = [output.decode(value) for _, value, _ in kpis.sent]
    assert {partials.partition_of((r.dimension, r.segment, today), PARTITIONS) for r in records} == {mine}
    dau = [r for r in records if r.kpi == "active_users" and r.window == "1d" and r.dimension == "all"]
    assert len(dau) == 1 and dau[0].value == 3
    kpis.sent.clear()
    assert await publisher.publish() == 0  # nothing changed
    current, gauges = publisher.gauge_records()
    assert current == today and any(r.key == dau[0].key for r in gauges)
