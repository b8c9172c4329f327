"""Flushing partials and publishing KPIs without Kafka: what is sent, where, and when pacing holds back."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from kpimon.agents.pipeline import partials
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.pacing import Pacer, Turns
from kpimon.agents.runtime.publishing import KpiPublisher, PartialsFlusher, heal
from kpimon.streams import output
from kpimon.streams.events import MS_PER_DAY
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Accepted, Policy, validate
from tests.unit.fakes import FakeSender, click_record

PARTITIONS = 4


class NeverDue(Pacer):
    def due(self) -> bool:
        return False


def engine_with_clicks(*users: str, days_apart: int = 0) -> SourceEngine:
    """An engine whose partition 1 saw a click of each user, the first now, each next `days_apart` earlier."""
    engine, states = SourceEngine(30), dict[bytes, UserState]()
    now = int(time.time() * 1000)
    for offset, user in enumerate(users):
        record = click_record(offset, user, now - offset * days_apart * MS_PER_DAY)
        verdict = validate("clicks", record.key, record.value, now, Policy(max_lateness_days=30))
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
    paced = {"pacer": NeverDue(), "fresh_pacer": NeverDue()}
    assert await flusher(engine, sender, **paced).flush() == 0
    assert sender.sent == []
    assert await flusher(engine, sender, **paced, caught_up=lambda: True).flush() > 0
    engine2, sender2 = engine_with_clicks("b"), FakeSender()
    assert await flusher(engine2, sender2, **paced).flush(final=True) > 0


class Clock:
    """A pacer clock that moves on by `step` seconds at every reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def test_after_a_rebalance_the_fresh_days_go_first_and_the_backlog_follows_in_slices() -> None:
    """Every group is dirty after a rebalance: the current day's must not wait behind 90 days of others."""
    engine, sender = engine_with_clicks("a", "b", "c", "d", days_apart=5), FakeSender()
    today = int(time.time() * 1000) // MS_PER_DAY
    fresh = set(range(today - 1, today + 2))
    # Every flush in a backfill: the backlog's pacer is not due, the fresh days still go.
    for counters in engine.partitions.values():
        counters.mark_all_dirty()
    await flusher(engine, sender, pacer=NeverDue()).flush()
    days = {partials.decode(v).day for _, v, _ in sender.sent if b'"partial"' in v}  # type: ignore[union-attr]
    assert days and days <= fresh
    # The backlog: in slices of BACKLOG_SLICE_SECONDS (a clock that says 0.3 s per reading ends a slice
    # after a few partials), newest first, until every group was sent once.
    sender.sent.clear()
    slices: list[list[int]] = []
    while True:
        before = len(sender.sent)
        slow = Pacer(clock=Clock(0.3))
        await flusher(engine, sender, pacer=slow, fresh_pacer=NeverDue(), caught_up=lambda: True).flush()
        sent = [partials.decode(v) for _, v, _ in sender.sent[before:]]
        slice_days = [p.day for p in sent if isinstance(p, partials.Partial)]
        if not slice_days:
            break
        slices.append(slice_days)
    assert len(slices) > 3 and all(len(s) <= 5 for s in slices)
    sent_days = [day for s in slices for day in s]
    assert not set(sent_days) & fresh
    assert sent_days == sorted(sent_days, reverse=True)
    until = engine.newest_flushed_day(int(time.time() * 1000))
    groups = {g for c in engine.partitions.values() for g in c.groups() if g[2] <= until}
    assert len(sent_days) == len({g for g in groups if g[2] not in fresh})


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
    # Churn by NPS group is published by the all/all group (its counters live there).
    groups = {("all", "all") if r.dimension == "nps_group" else (r.dimension, r.segment) for r in records}
    assert {partials.partition_of((*group, today), PARTITIONS) for group in groups} == {mine}
    dau = [r for r in records if r.kpi == "active_users" and r.window == "1d" and r.dimension == "all"]
    assert len(dau) == 1 and dau[0].value == 3
    kpis.sent.clear()
    assert await publisher.publish() == 0  # nothing changed
    current, gauges = publisher.gauge_records()
    assert current == today and any(r.key == dau[0].key for r in gauges)


# --- issue #19, item 4: an aggregate entry restored for a day older than the lateness bound ---------------

DAY = 20_781
GROUP = ("platform", "ios", DAY - 1)


def partial_of(source: int, version: int, dau: int) -> partials.Partial:
    return partials.Partial(
        source=source,
        version=version,
        dimension="platform",
        segment="ios",
        day=DAY - 1,
        counts={"active_users/1d": dau, "active_users/30d": dau},
    )


def latest_values(sender: FakeSender) -> dict[str, float | None]:
    """kpimon-kpis as a consumer sees it: the latest record per key."""
    return {key.decode(): output.decode(value).value for key, value, _ in sender.sent}


def publisher_of(aggregator: Aggregator, table: dict[Any, Any], kpis: FakeSender) -> KpiPublisher:
    owned = set(range(PARTITIONS))
    return KpiPublisher(aggregator, table, kpis, lambda: owned, Turns(), lambda: False, lambda: True)


async def test_a_stale_restored_entry_of_a_final_day_never_replaces_its_published_value() -> None:
    """The new owner of a group restores its entry from the changelog, which can lack the previous
    owner's last merge (engine.rebuild_counters); for a day older than the lateness bound no source sends
    that merge again. With a bound of 0 days, the previous day is such a day and still has gauges."""
    dau_key = f"active_users/1d/platform/ios/{output.day_name(DAY - 1)}"
    table: dict[Any, Any] = {}
    kpis = FakeSender()
    old = Aggregator(PARTITIONS)
    old.on_watermark(table, 0, partials.Watermark(source=0, version=1, current_day=DAY))
    old_owner = publisher_of(old, table, kpis)
    await old_owner.on_partial(partial_of(0, 1, 3), final_from=DAY)
    await old_owner.on_partial(partial_of(1, 1, 2), final_from=DAY)
    # The changelog as the new owner will restore it: without the next merge.
    restored = {key: dict(value) for key, value in table.items()}
    # The source's last partial of the day, sent after midnight made it final: published at once, before
    # the agent takes the next message (so before Faust can commit this one).
    assert await old_owner.on_partial(partial_of(0, 2, 4), final_from=DAY) > 0
    assert latest_values(kpis)[dau_key] == 6

    new = Aggregator(PARTITIONS)
    new.recover(restored, set(range(PARTITIONS)), final_before=DAY)
    new_owner = publisher_of(new, restored, kpis)
    await new_owner.publish()
    assert latest_values(kpis)[dau_key] == 6  # the stale 5 was not published
    current, gauges = new_owner.gauge_records()
    assert current == DAY and not [r for r in gauges if r.day == output.day_name(DAY - 1)]
    # The same day restored while it could still change: published again, as sources send it again.
    again = Aggregator(PARTITIONS)
    again.recover(restored, set(range(PARTITIONS)), final_before=DAY - 1)
    assert {r.day for r in again.take_publishable(restored, set(range(PARTITIONS)))} == {
        output.day_name(DAY - 1)
    }


async def test_a_settled_group_that_a_source_sends_again_is_published_and_shown_again() -> None:
    table: dict[Any, Any] = {}
    old = Aggregator(PARTITIONS)
    old.on_watermark(table, 0, partials.Watermark(source=0, version=1, current_day=DAY))
    old.on_partial(table, partial_of(0, 1, 3))
    new, kpis = Aggregator(PARTITIONS), FakeSender()
    new.recover(table, set(range(PARTITIONS)), final_before=DAY)
    publisher = publisher_of(new, table, kpis)
    await publisher.on_partial(partial_of(0, 2, 7), final_from=DAY)  # a kept source re-sent its last one
    assert latest_values(kpis)[f"active_users/1d/platform/ios/{output.day_name(DAY - 1)}"] == 7
    assert [r for r in publisher.gauge_records()[1] if r.day == output.day_name(DAY - 1)]


async def test_entries_restored_without_the_last_merges_are_healed_from_kpimon_partials() -> None:
    """A restarted static member restores an entry that lacks a partial the other worker sent before the
    kill (its offset was committed, its changelog record lost): no rebalance makes that worker send it
    again, so the restarted one re-reads kpimon-partials (compacted: the latest per group and source)."""
    log: list[tuple[int, bytes | None]] = []  # kpimon-partials, as (partition, value)
    table: dict[Any, Any] = {}
    old = Aggregator(PARTITIONS)
    mine = partials.partition_of(GROUP, PARTITIONS)
    mark = partials.Watermark(source=0, version=1, current_day=DAY)
    for message in (mark, partial_of(0, 1, 3), partial_of(1, 1, 2)):
        log.append((mine, partials.encode(message)))
        if isinstance(message, partials.Watermark):
            old.on_watermark(table, mine, message)
        else:
            old.on_partial(table, message)
    restored = {key: dict(value) for key, value in table.items()}
    log.append((mine, partials.encode(partial_of(1, 2, 5))))  # merged, committed, not in the changelog
    log.append((mine, None))  # a tombstone, or anything else kpimon did not write, is skipped
    log.append((mine, b"not json"))

    async def messages() -> AsyncIterator[tuple[int, bytes | None]]:
        for item in log:
            yield item

    new, kpis = Aggregator(PARTITIONS), FakeSender()
    new.recover(restored, set(range(PARTITIONS)), final_before=DAY - 5)
    writes: list[int] = []

    @contextlib.contextmanager
    def writing(partition: int) -> Iterator[None]:
        writes.append(partition)
        yield

    assert await heal(new, restored, messages(), DAY - 5, writing) == 1  # only the newer one is merged
    await publisher_of(new, restored, kpis).publish()
    assert latest_values(kpis)[f"active_users/1d/platform/ios/{output.day_name(DAY - 1)}"] == 3 + 5
    assert set(writes) == {mine}
