"""The Faust app: one `Kpimon` holds the app, its settings and its metrics registry.

Data flow: `clicks` / `surveys` -> ingest agents (validate; rejected -> dead-letter topic) -> counters
-> /metrics. See docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from prometheus_client import CollectorRegistry

from agents.metrics import PipelineMetrics
from agents.settings import Settings


@dataclass
class Kpimon:
    """A configured worker: the Faust app and what its agents and web views share."""

    settings: Settings
    app: faust.App
    registry: CollectorRegistry
    metrics: PipelineMetrics
    started: bool = False

    @property
    def ready(self) -> bool:
        """Ready once started and not in the middle of a rebalance."""
        return self.started and not self.app.rebalancing


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Kpimon:
    """Build the Faust app with all agents and web views registered."""
    # Imported here: both modules register on an app, and importing them must not need one.
    from agents.ingest import register_ingest
    from agents.web import register_web

    registry = registry if registry is not None else CollectorRegistry()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.broker}",
        store="memory://",
        datadir=str(settings.data_dir / settings.app_id),
        topic_partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        # Input is validated by kpimon itself; a message Faust cannot decode must never stop the agent.
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Rebalances on a laptop should not take Faust's default 3 s extra.
        broker_rebalance_timeout=60,
    )
    kpimon = Kpimon(
        settings=settings,
        app=app,
        registry=registry,
        metrics=PipelineMetrics(registry, topics=(settings.clicks, settings.surveys)),
    )
    register_ingest(kpimon)
    register_web(kpimon)

    async def _mark_started() -> None:
        kpimon.started = True

    app.task(_mark_started)  # Faust runs tasks once the worker has started

    return kpimon
