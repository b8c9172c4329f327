"""Faust wiring of the aggregate side: the partials agent, the aggregate table, the publish timer."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from kpimon.agents.pipeline import partials
from kpimon.agents.runtime.tables import table

if TYPE_CHECKING:
    from kpimon.agents.app import Kpimon

log = logging.getLogger(__name__)


def register_aggregate(kpimon: Kpimon) -> None:
    """Register the aggregate agent and table, and the timer that publishes changed KPIs."""
    app, settings, aggregator = kpimon.app, kpimon.settings, kpimon.aggregator
    aggregates = table(app, "aggregates", settings.partitions, "json")
    kpimon.aggregates = aggregates

    last_expiry: dict[int, float] = {}

    async def aggregate(stream: Any) -> None:
        event: Any
        async for event in stream.events():
            message = event.message
            kpimon.engine.positions[(message.topic, message.partition)] = message.offset + 1
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
                    final = kpimon.engine.oldest_accepted_day(int(time.time() * 1000)) - 1
                    dropped = aggregator.expire(aggregates, message.partition, final)
                    if dropped:
                        log.info("expired %d aggregate groups of partition %d", dropped, message.partition)
            else:
                aggregator.on_partial(aggregates, decoded)

    app.agent(kpimon.partials_topic, name="kpimon.aggregate")(aggregate)

    async def publish() -> None:
        await kpimon.publish()

    app.timer(settings.flush_interval, name="kpimon.publish")(publish)

    async def on_aggregates_recovered() -> None:
        aggregator.recover(aggregates, kpimon.owned(settings.partials))

    aggregates.on_recover(on_aggregates_recovered)
