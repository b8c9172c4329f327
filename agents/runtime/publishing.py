"""The periodic jobs that send what the pipeline computed: partials to kpimon-partials, KPIs to kpimon-kpis.

Both run as jobs of `Turns` (the source reader takes no batch while one runs) and are paced by a `Pacer`
(pipeline/pacing.py). They work through a `Sender` (runtime/ports.py), so tests/unit/test_publishing.py
drives them with in-memory fakes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from prometheus_client import Gauge

from kpimon.agents.pipeline import partials
from kpimon.agents.pipeline.aggregation import Aggregator
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.pacing import Pacer, Turns
from kpimon.agents.runtime.ports import Sender
from kpimon.streams import output
from kpimon.streams.output import KpiRecord

log = logging.getLogger(__name__)


class PartialsFlusher:
    """Sends the changed counters of owned source partitions, and their watermarks, to kpimon-partials."""

    def __init__(
        self,
        engine: SourceEngine,
        sender: Sender,
        partitions: int,
        turns: Turns,
        stopping: Callable[[], bool],
        generation: Callable[[], int],
        caught_up: Callable[[], bool],
        pacer: Pacer | None = None,
    ) -> None:
        """`partitions`: of kpimon-partials; `stopping`: whether the worker is stopping; `generation`: the
        consumer group generation of the current assignment; `caught_up`: whether the source reader has
        read all there is (pacing then holds nothing back)."""
        self.engine = engine
        self.sender = sender
        self.partitions = partitions
        self.turns = turns
        self.stopping = stopping
        self.generation = generation
        self.caught_up = caught_up
        self.pacer = pacer if pacer is not None else Pacer()

    async def flush(self, final: bool = False) -> int:
        """Send what changed, unless paced; `final`: the last flush while the worker stops (not paced).

        Returns how many partials were sent.
        """
        if not final and not self.pacer.due() and not self.caught_up():
            return 0
        async with self.turns.job():
            return await self._flush(final)

    async def _flush(self, final: bool) -> int:
        started = self.pacer.now()
        now_ms = int(time.time() * 1000)
        count = 0
        generation = self.generation()
        for partial in self.engine.take_partials(now_ms, generation):
            if self.stopping() and not final:
                # Stopping: the producer may be gone after the final flush. The groups this flush took and
                # did not send are not lost: whoever reads the partition next rebuilds its counters from the
                # user states and sends every group.
                return count
            await self.sender.send(
                key=partials.partial_key(partial.group, partial.source),
                value=partials.encode(partial),
                partition=partials.partition_of(partial.group, self.partitions),
            )
            count += 1
            if not final:
                await self.turns.share()  # the reader is held back one slice at a time, not the whole flush
        for watermark in self.engine.take_watermarks(generation):
            for target in range(self.partitions):
                await self.sender.send(
                    key=partials.watermark_key(target, watermark.source),
                    value=partials.encode(watermark),
                    partition=target,
                )
            if not final:
                await self.turns.share()
        self.pacer.ran(started)
        if count:
            log.log(logging.INFO if final else logging.DEBUG, "flushed %d partials", count)
        return count


class KpiPublisher:
    """Sends the changed global KPIs of the owned aggregate groups to kpimon-kpis, and serves the gauges."""

    def __init__(
        self,
        aggregator: Aggregator,
        aggregates: MutableMapping[Any, Any],
        sender: Sender,
        owned: Callable[[], set[int]],
        turns: Turns,
        stopping: Callable[[], bool],
        caught_up: Callable[[], bool],
        last_snapshot: Gauge | None = None,
        pacer: Pacer | None = None,
        rebalancing: Callable[[], bool] = lambda: False,
    ) -> None:
        """`aggregates`: the aggregate table; `owned`: the kpimon-partials partitions this worker owns;
        `last_snapshot`: the gauge set to the time of each publish; `rebalancing`: whether a rebalance
        is in progress (no gauges then)."""
        self.rebalancing = rebalancing
        self.aggregator = aggregator
        self.aggregates = aggregates
        self.sender = sender
        self.owned = owned
        self.turns = turns
        self.stopping = stopping
        self.caught_up = caught_up
        self.last_snapshot = last_snapshot
        self.pacer = pacer if pacer is not None else Pacer()

    async def publish(self) -> int:
        """Send the changed records of owned groups, unless paced; returns how many were sent."""
        if not (self.pacer.due() or self.caught_up()):
            return 0
        async with self.turns.job():
            return await self._publish()

    async def _publish(self) -> int:
        started = self.pacer.now()
        owned = self.owned()
        sent = 0
        for record in self.aggregator.take_publishable(self.aggregates, owned):
            if self.stopping():
                # Stopping: this worker is leaving the group and may no longer own the group; the next
                # owner re-publishes everything it takes over. Sending on would also race the producer's
                # shutdown (a send after it stopped crashes the app, and the worker exits non-zero).
                return sent
            await self.sender.send(key=record.key.encode(), value=output.encode(record))
            sent += 1
            await self.turns.share()  # the reader is held back one slice at a time, not the whole publication
        if self.last_snapshot is not None and owned:
            self.last_snapshot.set(time.time())
        self.pacer.ran(started)
        if sent:
            log.debug("published %d KPI records", sent)
        return sent

    def gauge_records(self) -> tuple[int | None, list[KpiRecord]]:
        """Records of the owned groups of the current and the previous day, for the KPI gauges.

        None while a rebalance is in progress: the consumer's assignment still lists the partitions it
        is giving up until the new assignment arrives, while their new owner may already export them.
        """
        current = self.aggregator.current_day
        if current is None or self.rebalancing():
            return None, []
        owned = self.owned()
        records: list[KpiRecord] = []
        for group in self.aggregator.groups_on(self.aggregates, {current, current - 1}, owned):
            records.extend(self.aggregator.records(self.aggregates, group))
        return current, records
