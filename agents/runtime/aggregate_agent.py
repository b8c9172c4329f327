"""Faust wiring of the aggregate side: the partials agent, the aggregate table, the publish timer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from faust.serializers import codecs
from prometheus_client import Gauge

from kpimon.agents import compat
from kpimon.agents.config.settings import Settings
from kpimon.agents.pipeline import partials
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.pacing import Turns
from kpimon.agents.runtime.faust_app import KpimonApp
from kpimon.agents.runtime.kafka_io import read_committed
from kpimon.agents.runtime.ownership import Ownership
from kpimon.agents.runtime.publishing import KpiPublisher, heal
from kpimon.agents.runtime.tables import table

log = logging.getLogger(__name__)


class WideIntJson(codecs.Codec):
    """The aggregates table's changelog encoding: JSON by the standard library.

    Faust's `json` codec uses orjson when it is installed (the bench's Quix Streams extra brings it), and
    orjson refuses integers beyond 64 bits; an entry's versions are wider (engine.versioned shifts the
    epoch, itself the group generation shifted above a start time in ms). The bytes are the same JSON.
    """

    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def _loads(self, s: bytes) -> Any:
        return json.loads(s)


codecs.register("kpimon_json", WideIntJson())


@dataclass(frozen=True)
class Aggregate:
    """The aggregate side as registered on the app."""

    #: The Faust aggregates table: the latest partial per (KPI group, source partition).
    aggregates: Any
    publisher: KpiPublisher


def register_aggregate(
    app: KpimonApp,
    settings: Settings,
    engine: SourceEngine,
    aggregator: Aggregator,
    ownership: Ownership,
    turns: Turns,
    partials_topic: Any,
    kpis_topic: Any,
    caught_up: Callable[[], bool],
    last_snapshot: Gauge | None = None,
) -> Aggregate:
    """Register the aggregate agent and table, and the timer that publishes changed KPIs."""
    aggregates = table(app, "aggregates", settings.partitions, "kpimon_json")
    publisher = KpiPublisher(
        aggregator,
        aggregates,
        kpis_topic,
        owned=lambda: ownership.owned(settings.partials),
        turns=turns,
        stopping=lambda: bool(app.should_stop),
        caught_up=caught_up,
        last_snapshot=last_snapshot,
        rebalancing=lambda: bool(app.rebalancing),
    )
    last_expiry: dict[int, float] = {}

    async def aggregate(stream: Any) -> None:
        event: Any
        async for event in stream.events():
            message = event.message
            engine.positions[(message.topic, message.partition)] = message.offset + 1
            if message.value is None:
                continue  # a tombstone of an expired group's partial (below)
            try:
                decoded = partials.decode(message.value)
            except (msgspec.DecodeError, TypeError) as exc:  # written by kpimon; never stop on it anyway
                log.warning("skipping an unreadable partial at offset %d: %s", message.offset, exc)
                continue
            if isinstance(decoded, partials.Watermark):
                aggregator.on_watermark(aggregates, message.partition, decoded)
                # At most once a minute per partition: forget final days (table writes are only allowed
                # here, while processing an event of that partition).
                now = time.monotonic()
                if now - last_expiry.get(message.partition, 0.0) > 60:
                    last_expiry[message.partition] = now
                    # One day of margin: a partial of the last changeable day flushed just before midnight
                    # must find its group still there.
                    final = engine.oldest_accepted_day(int(time.time() * 1000)) - 1
                    removed: list[bytes] = []
                    dropped = aggregator.expire(aggregates, message.partition, final, removed)
                    # Their partials go too: kpimon-partials is compacted, and a restore re-reads it from the
                    # beginning (`heal`), so without tombstones it would grow with the whole history.
                    for key in removed:
                        await partials_topic.send(key=key, value=None, partition=message.partition)
                    if dropped:
                        log.info(
                            "expired %d aggregate groups of partition %d (%d partials tombstoned)",
                            dropped,
                            message.partition,
                            len(removed),
                        )
            else:
                # A final day's partial is published before the next message (KpiPublisher.on_partial).
                await publisher.on_partial(decoded, engine.oldest_accepted_day(int(time.time() * 1000)))

    app.agent(partials_topic, name="kpimon.aggregate")(aggregate)

    async def publish() -> None:
        await publisher.publish()

    app.timer(settings.flush_interval, name="kpimon.publish")(publish)

    async def on_aggregates_recovered() -> None:
        # As the user states' (runtime/ingest_agent.py): only groups this recovery restored.
        restored = compat.restored_partitions(app, aggregates)
        if restored is None:
            return
        owned = ownership.owned(settings.partials) & restored
        # The groups the expiry deletes next (one day of margin, as `aggregate`'s) are settled.
        settled_before = engine.oldest_accepted_day(int(time.time() * 1000)) - 1
        aggregator.recover(aggregates, owned, settled_before)
        if not owned:
            return
        started = time.monotonic()
        healed = await heal(
            aggregator,
            aggregates,
            read_committed(settings, settings.partials, owned),
            settled_before,
            lambda partition: compat.writing_partition(settings.partials, partition),
        )
        log.info(
            "re-read kpimon-partials %s up to the committed offsets in %.2f s: %d newer than the restored "
            "entries",
            sorted(owned),
            time.monotonic() - started,
            healed,
        )

    aggregates.on_recover(on_aggregates_recovered)
    return Aggregate(aggregates=aggregates, publisher=publisher)
