"""The Faust app: one `Kpimon` holds the app, its settings, its state and its metrics registry.

Data flow (docs/architecture.md):
  clicks, surveys -> ingest agent (validate; rejected -> kpimon-dead-letters)
    -> user-state table -> per-partition counters (SourceEngine)
    -> every flush: changed counters -> kpimon-partials
  kpimon-partials -> aggregate agent -> aggregates table (Aggregator)
    -> every flush: changed KPIs -> kpimon-kpis; owned groups -> /metrics gauges
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP
from prometheus_client import CollectorRegistry, Gauge

from kpimon.agents.config.settings import Settings
from kpimon.agents.exporter.folding_collector import FoldedCollector
from kpimon.agents.exporter.kpi_collector import KpiCollector
from kpimon.agents.exporter.lag_collector import LagCollector
from kpimon.agents.exporter.pipeline_metrics import PipelineMetrics
from kpimon.agents.exporter.runtime_metrics import register_runtime_metrics
from kpimon.agents.exporter.sensor import MetricsSensor
from kpimon.agents.pipeline import partials
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.pacing import Pacer, Turns
from kpimon.agents.runtime.faust_app import KpimonApp
from kpimon.agents.runtime.tables import TABLE_NAMES, changelog_topic_name, raw_topic
from kpimon.streams import output
from kpimon.streams.output import KpiRecord
from kpimon.streams.targets import Targets

log = logging.getLogger(__name__)

#: Faust table stores by `Settings.store`: in memory (rebuilt from the changelogs at every start), or
#: RocksDB on local disk (rocksdict; state beyond memory, and a restart reads only the changelog's tail).
STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}
#: Seconds between looks at the consumer positions of owned partitions nothing was processed from yet.
LAG_START_INTERVAL = 5.0


@dataclass
class Kpimon:
    """A configured worker: the Faust app and what its agents, timers and web views share."""

    settings: Settings
    app: KpimonApp
    registry: CollectorRegistry
    metrics: PipelineMetrics
    engine: SourceEngine
    aggregator: Aggregator
    users: Any = None
    reader: Any = None
    aggregates: Any = None
    partials_topic: Any = None
    kpis_topic: Any = None
    started: bool = False
    last_snapshot: Gauge | None = field(default=None)
    flush_pacer: Pacer = field(default_factory=Pacer)
    publish_pacer: Pacer = field(default_factory=Pacer)
    #: Flushes and publishing run as jobs the source reader waits for (agents/pipeline/pacing.py).
    turns: Turns = field(default_factory=Turns)
    #: Consumer positions of owned partitions nothing was processed from yet: their lag's start.
    start_positions: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Ready once started and not in the middle of a rebalance."""
        return self.started and not self.app.rebalancing

    def owned(self, topic: str) -> set[int]:
        """The partitions of `topic` assigned to this worker right now."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # before the consumer exists
            return set()
        return {tp.partition for tp in assignment if tp.topic == topic}

    def assigned(self) -> list[tuple[str, int]]:
        """(topic, partition) of every partition of kpimon's own topics this worker owns."""
        mine = {self.settings.clicks, self.settings.surveys, self.settings.rekeyed, self.settings.partials}
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # before the consumer exists
            return []
        return [(tp.topic, tp.partition) for tp in assignment if tp.topic in mine]

    def highwater(self, topic_partition: tuple[str, int]) -> int | None:
        """The high watermark the consumer last saw for a partition (None when unknown)."""
        if self.reader is not None and topic_partition[0] in self.reader.source_topics:
            value: int | None = self.reader.highwater(topic_partition)
            return value
        try:
            value = self.app.consumer.highwater(TP(*topic_partition))
        except Exception:  # not assigned (any more), or nothing fetched yet
            return None
        return int(value) if value is not None else None

    async def refresh_start_positions(self) -> None:
        """Note the consumer position of each owned partition without a processed message, for the lag."""
        assigned = self.assigned()
        found: dict[tuple[str, int], int] = {}
        for topic_partition in assigned:
            if topic_partition in self.engine.positions:
                continue
            position: int | None = None
            if self.reader is not None and topic_partition[0] in self.reader.source_topics:
                position = await self.reader.position(topic_partition)
            else:
                try:
                    position = await self.app.consumer.position(TP(*topic_partition))
                except Exception:  # not assigned any more, or the consumer is restarting
                    position = None
            if position is not None:
                found[topic_partition] = position
        self.start_positions.clear()
        self.start_positions.update(found)

    def rebuild_counters(self) -> None:
        """After table recovery: drop counters of lost partitions, rebuild those of new ones from state.

        The partials of the partitions this worker keeps are sent again as well. An aggregate group that
        moved to another worker is restored there from the aggregates changelog, which can lack the
        previous owner's last merges: Faust commits the partials' offsets before its producer has
        flushed those changelog writes, so they may land after the new owner's restore, and the
        partials are not read again. A source partition that did not move would then never correct the
        group's stale entry (found by the scaling reliability test). Partials are absolute and newer by
        generation, so sending them again is harmless.
        """
        owned = self.owned(self.settings.clicks)
        engine = self.engine
        engine.forget([p for p in engine.partitions if p not in owned])
        for counters in engine.partitions.values():
            counters.mark_all_dirty()
        missing = owned - set(engine.partitions)
        if not missing:
            return
        now_ms = int(time.time() * 1000)
        by_partition: dict[int, list[Any]] = {p: [] for p in missing}
        for state in self.users.values():
            bucket = by_partition.get(state.partition)
            if bucket is not None:
                bucket.append(state)
        for partition in sorted(missing):
            engine.rebuild(partition, by_partition[partition], now_ms)

    def caught_up(self) -> bool:
        """Whether the source reader's last fetch found nothing new: pacing then holds nothing back.

        Pacing keeps flushes from starving a backfill; once the input is read, the last values should
        come out at the next interval, not after a pause sized by the backfill's long flushes.
        """
        return self.reader is not None and bool(self.reader.caught_up)

    async def flush_partials(self, final: bool = False) -> None:
        """Send the changed counters of owned partitions, and their current days, to kpimon-partials.

        `final`: the last flush while the worker stops (not paced; the producer still runs).
        """
        if not final and not self.flush_pacer.due() and not self.caught_up():
            return
        async with self.turns.job():
            await self._flush_partials(final)

    async def _flush_partials(self, final: bool) -> None:
        started = self.flush_pacer.now()
        settings, app, topic = self.settings, self.app, self.partials_topic
        now_ms = int(time.time() * 1000)
        count = 0
        # Faust's aiokafka driver records the group generation of the current assignment.
        generation = int(getattr(app, "consumer_generation_id", 0) or 0)
        for partial in self.engine.take_partials(now_ms, generation):
            if app.should_stop and not final:
                # Stopping: the producer may be gone after the final flush. The groups this flush took and
                # did not send are not lost: whoever reads the partition next rebuilds its counters from the
                # user states and sends every group.
                return
            await topic.send(
                key=partials.partial_key(partial.group, partial.source),
                value=partials.encode(partial),
                partition=partials.partition_of(partial.group, settings.partitions),
            )
            count += 1
        for watermark in self.engine.take_watermarks(generation):
            for target in range(settings.partitions):
                await topic.send(
                    key=partials.watermark_key(target, watermark.source),
                    value=partials.encode(watermark),
                    partition=target,
                )
        self.flush_pacer.ran(started)
        if count:
            log.log(logging.INFO if final else logging.DEBUG, "flushed %d partials", count)

    async def publish(self) -> None:
        """Send the changed global KPIs of owned groups to kpimon-kpis."""
        if self.aggregates is None or not (self.publish_pacer.due() or self.caught_up()):
            return
        async with self.turns.job():
            await self._publish()

    async def _publish(self) -> None:
        started = self.publish_pacer.now()
        owned = self.owned(self.settings.partials)
        sent = 0
        for record in self.aggregator.take_publishable(self.aggregates, owned):
            if self.app.should_stop:
                # Stopping: this worker is leaving the group and may no longer own the group; the next
                # owner re-publishes everything it takes over. Sending on would also race the producer's
                # shutdown (a send after it stopped crashes the app, and the worker exits non-zero).
                return
            await self.kpis_topic.send(key=record.key.encode(), value=output.encode(record))
            sent += 1
        if self.last_snapshot is not None and owned:
            self.last_snapshot.set(time.time())
        self.publish_pacer.ran(started)
        if sent:
            log.debug("published %d KPI records", sent)

    def gauge_records(self) -> tuple[int | None, list[KpiRecord]]:
        """Records of the owned groups of the current and the previous day, for the KPI gauges."""
        current = self.aggregator.current_day
        if current is None or self.aggregates is None:
            return None, []
        owned = self.owned(self.settings.partials)
        records: list[KpiRecord] = []
        for group in self.aggregator.groups_on(self.aggregates, {current, current - 1}, owned):
            records.extend(self.aggregator.records(self.aggregates, group))
        return current, records


def create_app(
    settings: Settings, registry: CollectorRegistry | None = None, targets: Targets | None = None
) -> Kpimon:
    """Build the Faust app with all agents, tables, timers and web views registered."""
    # Imported here: these modules register on an app, and importing them must not need one.
    from kpimon.agents.config.kafka_security import faust_options
    from kpimon.agents.exporter.web import register_web, web_options
    from kpimon.agents.runtime.aggregate_agent import register_aggregate
    from kpimon.agents.runtime.ingest_agent import register_ingest

    registry = registry if registry is not None else CollectorRegistry()
    app = KpimonApp(
        settings.app_id,
        bulk_topics=(settings.clicks, settings.surveys, settings.rekeyed),
        **faust_options(settings),  # broker_credentials for TLS / SASL_SSL
        broker=f"kafka://{settings.broker}",
        store=STORES[settings.store],
        datadir=str(settings.data_dir / settings.app_id),
        topic_partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        # Faust's views off, auth on every other route, timeouts, a safe error log (docs/security.md).
        **web_options(settings, registry),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # The user-state changelog goes out in record batches (runtime/user_store.py): bigger batches, fewer
        # produce round trips. Within Faust's default max request size (1,000,000 bytes).
        producer_max_batch_size=512 * 1024,
        broker_rebalance_timeout=60,
        broker_session_timeout=settings.session_timeout,
    )
    kpimon = Kpimon(
        settings=settings,
        app=app,
        registry=registry,
        metrics=PipelineMetrics(registry, topics=(settings.clicks, settings.surveys)),
        engine=SourceEngine(
            settings.max_lateness_days,
            settings.passive,
            settings.max_segment_values,
            settings.policy.max_future_ms,
            settings.segment_personal_pattern,
        ),
        aggregator=Aggregator(settings.partitions, targets),
    )
    kpimon.last_snapshot = Gauge(
        "kpimon_last_snapshot_timestamp_seconds",
        "When this worker last published its KPI snapshot (Unix time).",
        registry=registry,
    )
    kpimon.partials_topic = raw_topic(app, settings.partials)
    kpimon.kpis_topic = raw_topic(app, settings.kpis)
    registry.register(KpiCollector(kpimon.gauge_records))
    registry.register(FoldedCollector(kpimon.engine.folder))
    registry.register(
        LagCollector(kpimon.assigned, kpimon.engine.positions, kpimon.highwater, kpimon.start_positions)
    )
    register_runtime_metrics(registry)
    # The produce-error series of every topic a worker writes, at 0 from the start (rate() needs a start).
    changelogs = [changelog_topic_name(settings.app_id, name) for name in TABLE_NAMES]
    for topic in (settings.dead_letters, settings.rekeyed, settings.partials, settings.kpis, *changelogs):
        kpimon.metrics.produce_errors.labels(topic=topic)
    app.sensors.add(MetricsSensor(kpimon.metrics))
    register_ingest(kpimon)
    register_aggregate(kpimon)
    register_web(kpimon)

    async def _mark_started() -> None:
        kpimon.started = True

    app.task(_mark_started)  # Faust runs tasks once the worker has started

    async def _refresh_start_positions() -> None:
        await kpimon.refresh_start_positions()

    app.timer(LAG_START_INTERVAL, name="kpimon.lag_start_positions")(_refresh_start_positions)

    async def _final_flush(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Sent by Faust on stop after the consumer stopped (offsets committed) and before the producer
        # is flushed: the counters are final, so their partials go out now rather than never. Not needed
        # for correctness (the next owner rebuilds the counters from the user states), but it keeps
        # kpimon-partials current when the last worker stops.
        try:
            await kpimon.flush_partials(final=True)
        except Exception:  # a failed last flush must not turn a clean stop into a crash
            log.exception("final flush of partials failed")

    app.on_before_shutdown.connect(_final_flush)
    return kpimon
