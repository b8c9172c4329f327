"""The aggregate side without Kafka: newest partial per source wins, global sums, publishing, gauges."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from kpimon.agents.exporter.kpi_collector import KpiCollector
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.partials import (
    Partial,
    Watermark,
    decode,
    encode,
    parse_group,
    partial_key,
    partition_of,
)
from kpimon.agents.runtime.publishing import heal
from kpimon.streams.output import day_name

DAY = 20_781
GROUP = ("platform", "ios", DAY)


def partial(source: int, version: int, dau: int, mau: int, day: int = DAY) -> Partial:
    return Partial(
        source=source,
        version=version,
        dimension="platform",
        segment="ios",
        day=day,
        counts={"active_users/1d": dau, "active_users/30d": mau},
    )


def test_global_value_is_the_sum_of_the_newest_partial_of_each_source() -> None:
    table: dict[bytes, Any] = {}
    agg = Aggregator(4)
    assert agg.on_partial(table, partial(0, 10, 3, 10))
    assert agg.on_partial(table, partial(1, 5, 2, 5))
    assert agg.on_partial(table, partial(0, 12, 4, 11))  # newer: replaces source 0
    assert not agg.on_partial(table, partial(0, 11, 99, 99))  # a late message of a previous owner
    assert agg.on_partial(table, partial(1, 5, 2, 5))  # the same again: idempotent
    assert agg.global_counts(table, GROUP) == {"active_users/1d": 6, "active_users/30d": 16}


def test_records_wait_for_the_current_day_then_publish_once() -> None:
    table: dict[bytes, Any] = {}
    agg = Aggregator(4)
    owned = set(range(4))
    agg.on_partial(table, partial(0, 1, 3, 10, day=DAY + 1))
    assert list(agg.take_publishable(table, owned)) == []  # no current day known yet
    agg.on_watermark(table, 0, Watermark(source=0, version=1, current_day=DAY))
    assert list(agg.take_publishable(table, owned)) == []  # DAY + 1 is after the current day
    agg.on_watermark(table, 0, Watermark(source=1, version=1, current_day=DAY + 1))
    published = {(r.kpi, r.window): r for r in agg.take_publishable(table, owned)}
    assert published[("active_users", "1d")].value == 3
    assert published[("stickiness", "30d")].value == 0.3
    assert published[("stickiness", "30d")].day == day_name(DAY + 1)
    agg.on_partial(table, partial(0, 2, 3, 10, day=DAY + 1))  # same values again
    assert list(agg.take_publishable(table, owned)) == []  # unchanged records are not re-sent


def test_groups_owned_by_another_worker_are_not_published() -> None:
    table: dict[bytes, Any] = {}
    agg = Aggregator(4)
    agg.on_watermark(table, 0, Watermark(source=0, version=1, current_day=DAY))
    agg.on_partial(table, partial(0, 1, 1, 1))
    owner = partition_of(GROUP, 4)
    assert list(agg.take_publishable(table, set(range(4)) - {owner})) == []


def test_recover_restores_the_current_day_and_republishes_owned_groups() -> None:
    table: dict[bytes, Any] = {}
    first = Aggregator(4)
    first.on_watermark(table, 2, Watermark(source=0, version=1, current_day=DAY))
    first.on_partial(table, partial(0, 1, 1, 2))
    again = Aggregator(4)
    again.recover(table, owned={partition_of(GROUP, 4)})
    assert again.current_day == DAY
    assert {r.kpi for r in again.take_publishable(table, {partition_of(GROUP, 4)})} >= {"active_users"}


def test_partials_round_trip_and_group_names_with_slashes() -> None:
    message = partial(3, 7, 1, 2)
    assert decode(encode(message)) == message
    assert parse_group("plan/a/b/20781") == ("plan", "a/b", 20781)


def test_collector_exports_current_and_previous_day_only_and_never_undefined() -> None:
    table: dict[bytes, Any] = {}
    agg = Aggregator(1)
    for day in (DAY - 2, DAY - 1, DAY):
        agg.on_partial(table, partial(0, 1, 2, 4, day=day))
    agg.on_partial(
        table,
        Partial(
            source=0,
            version=1,
            dimension="all",
            segment="all",
            day=DAY,
            counts={"survey_events/30d": 1, "nps_shown/7d": 1, "nps_shown/30d": 1},
        ),
    )
    agg.on_watermark(table, 0, Watermark(source=0, version=1, current_day=DAY))

    def source() -> tuple[int | None, list[Any]]:
        groups = agg.groups_on(table, {DAY, DAY - 1}, {0})
        return DAY, [r for g in groups for r in agg.records(table, g)]

    registry = CollectorRegistry()
    registry.register(KpiCollector(source))
    labels = {"window": "1d", "dimension": "platform", "segment": "ios"}
    assert registry.get_sample_value("kpimon_active_users", {**labels, "day": "current"}) == 2
    assert registry.get_sample_value("kpimon_active_users", {**labels, "day": "previous"}) == 2
    text = generate_latest(registry).decode()
    assert 'day="current"' in text
    assert text.count("kpimon_active_users{") == 3 * 2  # 3 windows x 2 days; the day before is not exported
    nps = {"window": "7d", "day": "current", "dimension": "all", "segment": "all"}
    assert (
        registry.get_sample_value("kpimon_survey_responses", {**nps, "survey": "nps", "bucket": "shown"}) == 1
    )
    assert registry.get_sample_value("kpimon_nps_score", nps) is None  # undefined: no sample, not 0
    assert registry.get_sample_value("kpimon_survey_response_ratio", {**nps, "survey": "nps"}) == 0


def test_lag_collector_reports_owned_partitions_and_their_lag() -> None:
    from kpimon.agents.exporter.lag_collector import LagCollector

    positions = {("clicks", 0): 90, ("clicks", 1): 10}
    highwaters = {("clicks", 0): 100, ("clicks", 1): 10, ("clicks", 2): 5}
    registry = CollectorRegistry()
    registry.register(LagCollector(lambda: [("clicks", 0), ("clicks", 2)], positions, highwaters.get))
    assert (
        registry.get_sample_value("kpimon_consumer_lag_messages", {"topic": "clicks", "partition": "0"}) == 10
    )
    # Not owned: no series, even though a position is known.
    assert (
        registry.get_sample_value("kpimon_consumer_lag_messages", {"topic": "clicks", "partition": "1"})
        is None
    )
    # Owned but nothing processed yet: ownership shows, lag is unknown rather than made up.
    assert registry.get_sample_value("kpimon_assigned_partitions", {"topic": "clicks", "partition": "2"}) == 1
    assert (
        registry.get_sample_value("kpimon_consumer_lag_messages", {"topic": "clicks", "partition": "2"})
        is None
    )


def test_final_days_are_expired_only_for_the_partition_being_processed() -> None:
    table: dict[bytes, Any] = {}
    agg = Aggregator(4)
    agg.on_watermark(table, 0, Watermark(source=0, version=1, current_day=DAY))
    for day in (DAY - 20, DAY - 3):
        agg.on_partial(table, partial(0, 1, 1, 1, day=day))
    owner = partition_of(("platform", "ios", DAY - 20), 4)
    list(agg.take_publishable(table, set(range(4))))  # published: no longer dirty
    assert (
        agg.expire(table, (owner + 1) % 4, DAY - 10) == 0
        or partition_of(("platform", "ios", DAY - 20), 4) != owner
    )
    assert agg.expire(table, owner, DAY - 10) == 1
    assert agg.global_counts(table, ("platform", "ios", DAY - 20)) == {}
    assert agg.global_counts(table, ("platform", "ios", DAY - 3)) == {
        "active_users/1d": 1,
        "active_users/30d": 1,
    }


def test_retention_gauges_show_the_newest_matured_cohort_as_current() -> None:
    agg, table = Aggregator(partitions=1), dict[bytes, dict[str, Any]]()
    for day, cohort, kept in ((DAY, 10, 4), (DAY - 1, 8, 2)):
        counts = {"active_users/30d": 1, "matured_cohort/7d": cohort, "retained/7d": kept}
        counts |= {"cohort_present/7d": 1, "lifecycle_new/1d": 5}
        agg.on_partial(
            table, Partial(source=0, version=1, dimension="all", segment="all", day=day, counts=counts)
        )
    agg.on_watermark(table, 0, Watermark(source=0, version=1, current_day=DAY))

    def source() -> tuple[int | None, list[Any]]:
        groups = agg.groups_on(table, {DAY, DAY - 1}, {0})
        return DAY, [r for g in groups for r in agg.records(table, g)]

    registry = CollectorRegistry()
    registry.register(KpiCollector(source))
    labels = {"window": "7d", "dimension": "all", "segment": "all"}
    current, previous = {**labels, "day": "current"}, {**labels, "day": "previous"}
    # The cohort of DAY - 7 matured on DAY: current; the cohort of DAY - 8: previous.
    assert registry.get_sample_value("kpimon_retention_ratio", current) == 0.4
    assert registry.get_sample_value("kpimon_retention_ratio", previous) == 0.25
    assert registry.get_sample_value("kpimon_retained_users", current) == 4
    assert registry.get_sample_value("kpimon_retention_cohort_users", previous) == 8
    assert registry.get_sample_value("kpimon_kpi_ci_low", {**current, "kpi": "retention_rate"}) is not None
    # The cohort record of DAY itself (window 1d) has no gauge: its retention is not known yet.
    assert registry.get_sample_value("kpimon_retention_cohort_users", {**current, "window": "1d"}) is None


def test_expired_groups_name_their_partials_for_tombstones_and_a_heal_skips_them() -> None:
    """kpimon-partials holds only the days that can change: each expired group's partials (one per source)
    are tombstoned, and a heal after a restore, reading the topic from the beginning, skips tombstones."""
    table: dict[bytes, Any] = {}
    agg = Aggregator(4)
    old, recent = ("platform", "ios", DAY - 20), ("platform", "ios", DAY - 3)
    sent = [partial(source, 1, 1, 1, day=day) for day in (old[2], recent[2]) for source in (0, 2)]
    agg.on_watermark(table, 0, Watermark(source=0, version=1, current_day=DAY))
    for message in sent:
        agg.on_partial(table, message)
    list(agg.take_publishable(table, set(range(4))))  # published: no longer dirty
    removed: list[bytes] = []
    owner = partition_of(old, 4)
    assert agg.expire(table, owner, DAY - 10, removed) == 1
    assert removed == [partial_key(old, 0), partial_key(old, 2)]
    # The topic as a restore re-reads it: both days' partials, then the tombstones of the old day's.
    topic = [(partition_of(p.group, 4), encode(p)) for p in sent] + [(owner, None) for _ in removed]

    async def messages() -> Any:
        for item in topic:
            yield item

    restored: dict[bytes, Any] = {}
    healer = Aggregator(4)
    healed = asyncio.run(heal(healer, restored, messages(), DAY - 10, lambda _: contextlib.nullcontext()))
    assert healed == 2  # the recent day's two partials; the expired day is settled, tombstones skipped
    assert healer.global_counts(restored, old) == {}
    assert healer.global_counts(restored, recent) == {"active_users/1d": 2, "active_users/30d": 2}
