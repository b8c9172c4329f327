"""The composition root: `create_app` builds every part of a worker and hands each to what uses it.

Data flow (docs/architecture.md):
  clicks, surveys -> ingest agent (validate; rejected -> kpimon-dead-letters)
    -> user-state table -> per-partition counters (SourceEngine)
    -> every flush: changed counters -> kpimon-partials
  kpimon-partials -> aggregate agent -> aggregates table (Aggregator)
    -> every flush: changed KPIs -> kpimon-kpis; owned groups -> /metrics gauges
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from kpimon.agents import compat
from kpimon.agents.config.preflight import check_access
from kpimon.agents.config.settings import Settings
from kpimon.agents.exporter.folding_collector import FoldedCollector
from kpimon.agents.exporter.kpi_collector import KpiCollector
from kpimon.agents.exporter.lag_collector import LagCollector
from kpimon.agents.exporter.runtime_metrics import register_runtime_metrics
from kpimon.agents.exporter.web import register_web, web_options
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.metrics import PipelineMetrics
from kpimon.agents.pipeline.pacing import Turns
from kpimon.agents.runtime.aggregate_agent import Aggregate, register_aggregate
from kpimon.agents.runtime.faust_app import KpimonApp, faust_options
from kpimon.agents.runtime.ingest_agent import Ingest, register_ingest
from kpimon.agents.runtime.outage import ClientLogThrottle, KafkaWatch, install_throttle
from kpimon.agents.runtime.ownership import Ownership
from kpimon.agents.runtime.sensor import MetricsSensor
from kpimon.agents.runtime.tables import TABLE_NAMES, changelog_topic_name, raw_topic
from kpimon.streams.targets import Targets

log = logging.getLogger(__name__)

#: Faust table stores by `Settings.store`: in memory (rebuilt from the changelogs at every start), or
#: RocksDB on local disk (rocksdict; state beyond memory, and a restart reads only the changelog's tail).
STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}
#: Seconds between looks at the consumer positions of owned partitions nothing was processed from yet.
LAG_START_INTERVAL = 5.0


@dataclass
class Health:
    """Whether the worker has started (Faust ran its tasks); /ready reads it."""

    started: bool = False


@dataclass(frozen=True)
class Kpimon:
    """A configured worker: the Faust app and the typed parts its agents, timers and web views share.

    Built only by `create_app`, the composition root: every part is made there and handed to what uses it.
    """

    settings: Settings
    app: KpimonApp
    registry: CollectorRegistry
    metrics: PipelineMetrics
    engine: SourceEngine
    aggregator: Aggregator
    ownership: Ownership
    ingest: Ingest
    aggregate: Aggregate
    health: Health
    #: Whether a Kafka broker answers (runtime/outage.py).
    kafka: KafkaWatch

    @property
    def users(self) -> Any:
        """The Faust user-state table."""
        return self.ingest.users

    @property
    def aggregates(self) -> Any:
        """The Faust aggregates table."""
        return self.aggregate.aggregates

    @property
    def ready(self) -> bool:
        """Ready once started, not in the middle of a rebalance, and while a Kafka broker answers."""
        return self.health.started and not self.app.rebalancing and not self.kafka.down

    def highwater(self, topic_partition: tuple[str, int]) -> int | None:
        """The high watermark last seen for a partition: the source reader's for its topics, else Faust's."""
        reader = self.ingest.reader
        if topic_partition[0] in reader.source_topics:
            return reader.highwater(topic_partition)
        return self.ownership.highwater(topic_partition)

    async def position(self, topic_partition: tuple[str, int]) -> int | None:
        """The next offset to process of an owned partition: the source reader's, or Faust's consumer's."""
        reader = self.ingest.reader
        if topic_partition[0] in reader.source_topics:
            return await reader.position(topic_partition)
        return await self.ownership.position(topic_partition)


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


def kafka_watch(
    app: KpimonApp, settings: Settings, registry: CollectorRegistry, clients: list[Callable[[], Any]]
) -> KafkaWatch:
    """The outage watch of a worker, run as a Faust task; it throttles the Kafka clients' repeated logs.

    `clients` gives kpimon's own Kafka clients (besides Faust's producer and consumer) whose retries back
    off with the watch's probes.
    """
    throttle = ClientLogThrottle()

    async def probe() -> None:
        await check_access(settings, timeout=5.0)

    def on_backoff(seconds: float | None) -> None:
        # The Kafka clients retry no more often than the watch probes (aiokafka's default after an outage).
        current = [compat.aiokafka_producer(app), compat.faust_consumer_client(app)]
        current += [client() for client in clients]
        compat.set_retry_backoff(current, compat.DEFAULT_RETRY_BACKOFF if seconds is None else seconds)

    watch = KafkaWatch(probe, registry, throttle, on_backoff=on_backoff)

    async def run() -> None:
        # Installed here, once the worker has set up logging and imported every Kafka client module.
        install_throttle(throttle)
        await watch.run(lambda: bool(app.should_stop))

    app.task(run)
    return watch


def create_app(
    settings: Settings, registry: CollectorRegistry | None = None, targets: Targets | None = None
) -> Kpimon:
    """Build the Faust app with all agents, tables, timers and web views registered."""
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
        # Topics Faust creates itself (kpimon creates its own first, agents/config/topics.py).
        topic_replication_factor=settings.replication_factor or 1,
        # The user-state changelog goes out in record batches (runtime/user_store.py): bigger batches, fewer
        # produce round trips. Within Faust's default max request size (1,000,000 bytes).
        producer_max_batch_size=512 * 1024,
        broker_rebalance_timeout=60,
        # Recovery starts at once, not after Faust's one-second wait for late tables (agents/compat.py).
        TableManager=compat.prompt_table_manager(),
        broker_session_timeout=settings.session_timeout,
        # Static membership (runtime/membership.py): None keeps dynamic membership.
        consumer_group_instance_id=settings.instance_id or None,
        **static_identity(settings),
    )
    metrics = PipelineMetrics(registry, topics=(settings.clicks, settings.surveys))
    engine = SourceEngine(
        settings.max_lateness_days,
        settings.passive,
        settings.max_segment_values,
        settings.policy.max_future_ms,
        settings.segment_personal_pattern,
    )
    aggregator = Aggregator(settings.partitions, targets)
    ownership = Ownership(
        app, frozenset({settings.clicks, settings.surveys, settings.rekeyed, settings.partials})
    )
    # Flushes and publishing run as jobs the source reader waits for (pipeline/pacing.py).
    turns = Turns()
    turns.observe = metrics.reader_held  # kpimon_reader_held_seconds: how long input waits for the jobs
    partials_topic = raw_topic(app, settings.partials)
    last_snapshot = Gauge(
        "kpimon_last_snapshot_timestamp_seconds",
        "When this worker last published its KPI snapshot (Unix time).",
        registry=registry,
    )
    kafka_clients: list[Callable[[], Any]] = []
    kafka = kafka_watch(app, settings, registry, kafka_clients)
    ingest = register_ingest(
        app, settings, engine, metrics, ownership, turns, partials_topic, kafka_down=lambda: kafka.down
    )
    aggregate = register_aggregate(
        app,
        settings,
        engine,
        aggregator,
        ownership,
        turns,
        partials_topic,
        raw_topic(app, settings.kpis),
        caught_up=lambda: ingest.reader.caught_up,
        last_snapshot=last_snapshot,
    )
    kpimon = Kpimon(
        settings=settings,
        app=app,
        registry=registry,
        metrics=metrics,
        engine=engine,
        aggregator=aggregator,
        ownership=ownership,
        ingest=ingest,
        aggregate=aggregate,
        health=Health(),
        kafka=kafka,
    )
    kafka_clients.append(lambda: getattr(ingest.reader.fetcher, "consumer", None))
    registry.register(KpiCollector(aggregate.publisher.gauge_records))
    registry.register(FoldedCollector(engine.folder))
    # Consumer positions of owned partitions nothing was processed from yet: their lag's start.
    start_positions: dict[tuple[str, int], int] = {}
    registry.register(LagCollector(ownership.assigned, engine.positions, kpimon.highwater, start_positions))
    register_runtime_metrics(registry, ingest.core)
    # The produce-error series of every topic a worker writes, at 0 from the start (rate() needs a start).
    changelogs = [changelog_topic_name(settings.app_id, name) for name in TABLE_NAMES]
    for topic in (settings.dead_letters, settings.rekeyed, settings.partials, settings.kpis, *changelogs):
        metrics.produce_errors.labels(topic=topic)
    app.sensors.add(MetricsSensor(metrics))
    register_web(kpimon)

    async def _refresh_start_positions() -> None:
        found: dict[tuple[str, int], int] = {}
        for topic_partition in ownership.assigned():
            if topic_partition not in engine.positions:
                position = await kpimon.position(topic_partition)
                if position is not None:
                    found[topic_partition] = position
        start_positions.clear()
        start_positions.update(found)

    app.timer(LAG_START_INTERVAL, name="kpimon.lag_start_positions")(_refresh_start_positions)

    async def _mark_started() -> None:
        kpimon.health.started = True

    app.task(_mark_started)  # Faust runs tasks once the worker has started

    async def _final_flush(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Sent by Faust on stop after the consumer stopped (offsets committed) and before the producer
        # is flushed: the counters are final, so their partials go out now rather than never. Not needed
        # for correctness (the next owner rebuilds the counters from the user states), but it keeps
        # kpimon-partials current when the last worker stops.
        try:
            await ingest.flusher.flush(final=True)
        except Exception:  # a failed last flush must not turn a clean stop into a crash
            log.exception("final flush of partials failed")

    app.on_before_shutdown.connect(_final_flush)
    return kpimon
