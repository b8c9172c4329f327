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
from kpimon.agents.pipeline import partials
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.pacing import Pacer, Turns
from kpimon.agents.runtime.faust_app import KpimonApp
from kpimon.agents.runtime.tables import raw_topic
from kpimon.streams import output
from kpimon.streams.output import KpiRecord
from kpimon.streams.targets import Targets

log = logging.getLogger(__name__)

#: Faust table stores by `Settings.store`: in memory (rebuilt from the changelogs at every start), or
#: RocksDB on local disk (rocksdict; state beyond memory, and a restart reads only the changelog's tail).
STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}


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
    #: The outage watch (agents/runtime/outage.py), once the app is created.
    kafka: Any = None
    aggregates: Any = None
    partials_topic: Any = None
    kpis_topic: Any = None
    started: bool = False
    last_snapshot: Gauge | None = field(default=None)
    flush_pacer: Pacer = field(default_factory=Pacer)
    publish_pacer: Pacer = field(default_factory=Pacer)
    #: When this process started (Unix ms): orders the partials of a static member's restarts (epoch()).
    incarnation: int = field(default_factory=lambda: int(time.time() * 1000))
    #: Flushes and publishing run as jobs the source reader waits for (agents/pipeline/pacing.py).
    turns: Turns = field(default_factory=Turns)

    @property
    def ready(self) -> bool:
        """Ready once started, not in the middle of a rebalance, and while a Kafka broker answers."""
        return self.started and not self.app.rebalancing and not self.kafka_down()

    def kafka_down(self) -> bool:
        """Whether the outage watch found no Kafka broker answering (agents/runtime/outage.py)."""
        return self.kafka is not None and bool(self.kafka.down)

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

    def epoch(self) -> int:
        """What orders this worker's partials before their processed offsets: generation, then start time.

        A partial's version is (epoch, processed input offsets) (engine.versioned): an aggregator keeps the
        newest per source partition, so a late message of a previous owner cannot overwrite what the
        current owner sent. A rebalance raises the group generation, which Faust's aiokafka driver
        records. A static member restarted in place gets its partitions back without a rebalance, in the
        same generation, and re-reads input its previous incarnation had already passed: its offsets are
        lower than those the previous incarnation sent, and its partials would be refused as late --
        leaving the aggregates short of what it re-read. Its later start time orders it after the
        previous incarnation (start times in ms fit in 48 bits; a clock set back by more than the
        restart takes would break this order).
        """
        generation = int(getattr(self.app, "consumer_generation_id", 0) or 0)
        return (generation << 48) + self.incarnation

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
        generation = self.epoch()
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
        """Records of the owned groups of the current and the previous day, for the KPI gauges.

        None while a rebalance is in progress: the consumer's assignment still lists the partitions it
        is giving up until the new assignment arrives, while their new owner may already export them.
        """
        current = self.aggregator.current_day
        if current is None or self.aggregates is None or self.app.rebalancing:
            return None, []
        owned = self.owned(self.settings.partials)
        records: list[KpiRecord] = []
        for group in self.aggregator.groups_on(self.aggregates, {current, current - 1}, owned):
            records.extend(self.aggregator.records(self.aggregates, group))
        return current, records


def register_outage_watch(kpimon: Kpimon) -> None:
    """Watch whether a broker answers; throttle the Kafka clients' repeated log lines (outage.py)."""
    from kpimon.agents.config.preflight import check_access
    from kpimon.agents.runtime.faust_app import (
        DEFAULT_RETRY_BACKOFF,
        faust_consumer_client,
        set_retry_backoff,
    )
    from kpimon.agents.runtime.outage import ClientLogThrottle, KafkaWatch, install_throttle

    settings, app = kpimon.settings, kpimon.app
    throttle = ClientLogThrottle()

    async def probe() -> None:
        await check_access(settings, timeout=5.0)

    def on_backoff(seconds: float | None) -> None:
        clients = [app.producer_client(), faust_consumer_client(app)]
        if kpimon.reader is not None:
            clients.append(kpimon.reader.client)
        set_retry_backoff(clients, DEFAULT_RETRY_BACKOFF if seconds is None else seconds)

    kpimon.kafka = KafkaWatch(probe, kpimon.registry, throttle, on_backoff=on_backoff)

    async def watch() -> None:
        # Installed here, once the worker has set up logging and imported every Kafka client module.
        install_throttle(throttle)
        await kpimon.kafka.run(lambda: bool(app.should_stop))

    app.task(watch)


def static_identity(settings: Settings) -> dict[str, str]:
    """Faust's canonical URL of a static member: derived from its instance id, not its web address.

    Faust's partition assignor puts each member's canonical URL into the assignment and refuses an
    assignment whose URL is not its own. A static member restarted with another web port or host would get
    its previous assignment back from the broker -- with the old URL -- and its consumer would die. kpimon
    routes nothing by this URL (it serves no table queries between workers).
    """
    if not settings.instance_id:
        return {}
    return {"canonical_url": f"http://{settings.instance_id}"}


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
        # Static membership (agents/runtime/membership.py): None keeps dynamic membership.
        consumer_group_instance_id=settings.instance_id or None,
        **static_identity(settings),
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
    registry.register(LagCollector(kpimon.assigned, kpimon.engine.positions, kpimon.highwater))
    register_outage_watch(kpimon)
    register_ingest(kpimon)
    register_aggregate(kpimon)
    register_web(kpimon)

    async def _mark_started() -> None:
        kpimon.started = True

    app.task(_mark_started)  # Faust runs tasks once the worker has started

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
