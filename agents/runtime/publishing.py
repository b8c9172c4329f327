"""The periodic jobs that send what the pipeline computed: partials to kpimon-partials, KPIs to kpimon-kpis.

Both run as jobs of `Turns` (the source reader takes no batch while one runs) and are paced by a `Pacer`
(pipeline/pacing.py). They work through a `Sender` (runtime/ports.py), so tests/unit/test_publishing.py
drives them with in-memory fakes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterable, Callable, MutableMapping
from typing import Any, Literal

import msgspec
from prometheus_client import Gauge

from kpimon.agents.pipeline import partials
from kpimon.agents.pipeline.aggregation import Aggregator, timestamp
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.pacing import Pacer, Turns
from kpimon.agents.pipeline.partials import Group, Partial
from kpimon.agents.runtime.ports import Sender
from kpimon.streams import output
from kpimon.streams.output import KpiRecord

log = logging.getLogger(__name__)

#: The longest pass over the groups of older days (a backlog after a rebalance, or a backfill): the
#: fresh days' groups of the next pass wait for at most that, and the pacers keep each part to a tenth of
#: the time.
BACKLOG_SLICE_SECONDS = 1.0


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
        fresh_pacer: Pacer | None = None,
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
        #: Paces the fresh days' groups and the watermarks (`pacer` paces the other days).
        self.fresh_pacer = fresh_pacer if fresh_pacer is not None else Pacer()

    async def flush(self, final: bool = False) -> int:
        """Send what changed, unless paced; `final`: the last flush while the worker stops (not paced).

        The groups of the fresh days (`SourceEngine.fresh_days`) and the watermarks go first, paced on their
        own; the other days' groups follow in slices of at most `BACKLOG_SLICE_SECONDS`, paced by `pacer`,
        so that after a rebalance, when every group is dirty, the current day does not wait behind them.
        Returns how many partials were sent.
        """
        caught_up = final or self.caught_up()
        backlog = caught_up or self.pacer.due()
        if not (backlog or self.fresh_pacer.due()):
            return 0
        async with self.turns.job():
            started = self.fresh_pacer.now()
            count = await self._send(final, "fresh" if not final else "all", None)
            await self._send_watermarks(final)
            self.fresh_pacer.ran(started)
            if backlog and not final and not self.stopping():
                started = self.pacer.now()
                count += await self._send(final, "backlog", started + BACKLOG_SLICE_SECONDS)
                self.pacer.ran(started)
        if count:
            log.log(logging.INFO if final else logging.DEBUG, "flushed %d partials", count)
        return count

    async def _send(
        self, final: bool, part: Literal["all", "fresh", "backlog"], deadline: float | None
    ) -> int:
        now_ms = int(time.time() * 1000)
        count = 0
        generation = self.generation()
        with contextlib.closing(self.engine.take_partials(now_ms, generation, part)) as taken:
            for partial in taken:
                if self.stopping() and not final:
                    # Stopping: the producer may be gone after the final flush. The groups this flush took
                    # and did not send are not lost: whoever reads the partition next rebuilds its counters
                    # from the user states and sends every group.
                    return count
                await self.sender.send(
                    key=partials.partial_key(partial.group, partial.source),
                    value=partials.encode(partial),
                    partition=partials.partition_of(partial.group, self.partitions),
                )
                count += 1
                if not final:
                    await self.turns.share()  # the reader waits one slice at a time, not the whole flush
                if deadline is not None and self.pacer.now() >= deadline:
                    break  # the groups not taken stay dirty for the next slice
        return count

    async def _send_watermarks(self, final: bool) -> None:
        if self.stopping() and not final:
            return
        for watermark in self.engine.take_watermarks(self.generation()):
            for target in range(self.partitions):
                await self.sender.send(
                    key=partials.watermark_key(target, watermark.source),
                    value=partials.encode(watermark),
                    partition=target,
                )
            if not final:
                await self.turns.share()


async def heal(
    aggregator: Aggregator,
    aggregates: MutableMapping[Any, Any],
    messages: AsyncIterable[tuple[int, bytes | None]],
    from_day: int,
    writing: Callable[[int], contextlib.AbstractContextManager[None]],
) -> int:
    """After the aggregate table's restore: merge kpimon-partials' `messages` (partition, value), read from
    the beginning up to the committed offsets, so no restored entry lacks a partial the aggregate agent
    will not read again; returns how many were newer than the entry.

    The changelog can lack a previous owner's last merges (engine.rebuild_counters), and after a restart
    of a static member no rebalance makes the other workers' sources send their partials again: found by
    the static-membership test, whose restarted worker kept half of some counters for good. Compaction keeps
    the latest partial of every group and source, so the topic holds what the entries must; the partials
    after the committed offsets the agent reads itself. Days before `from_day` are left out: their groups
    are settled (Aggregator.recover). `writing(partition)` routes the table writes to that partition's
    changelog.
    """
    healed = 0
    async for partition, value in messages:
        if value is None:
            continue
        try:
            decoded = partials.decode(value)
        except (msgspec.DecodeError, TypeError):
            continue  # written by kpimon; the agent logs it when it reads it
        with writing(partition):
            if isinstance(decoded, partials.Watermark):
                aggregator.on_watermark(aggregates, partition, decoded)
            elif decoded.day >= from_day and aggregator.heal(aggregates, decoded):
                healed += 1
    return healed


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
        fresh_pacer: Pacer | None = None,
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
        #: Paces the current and previous day's records (`pacer` paces the older days').
        self.fresh_pacer = fresh_pacer if fresh_pacer is not None else Pacer()

    async def publish(self) -> int:
        """Send the changed records of owned groups, unless paced; returns how many were sent.

        The current and the previous day go first, paced on their own; older days follow in slices of at
        most `BACKLOG_SLICE_SECONDS`, paced by `pacer`. After a restart or rebalance every group is to be
        published again: the fresh days then reach kpimon-kpis within a pass, and the rest follows
        without holding them back.
        """
        caught_up = self.caught_up()
        backlog = caught_up or self.pacer.due()
        if not (backlog or self.fresh_pacer.due()):
            return 0
        async with self.turns.job():
            owned = self.owned()
            started = self.fresh_pacer.now()
            sent = await self._send(self.aggregator.publishable(owned, fresh=True), None)
            if self.last_snapshot is not None and owned:
                self.last_snapshot.set(time.time())
            self.fresh_pacer.ran(started)
            if backlog and not self.stopping():
                started = self.pacer.now()
                older = self.aggregator.publishable(owned, fresh=False)
                sent += await self._send(older, started + BACKLOG_SLICE_SECONDS)
                self.pacer.ran(started)
        if sent:
            log.debug("published %d KPI records", sent)
        return sent

    async def on_partial(self, partial: Partial, final_from: int) -> int:
        """Merge a partial; one of a day up to `final_from` (the oldest day validation accepts) is published
        at once. Returns how many records were sent.

        Sources send a day's last partials when it has become final, and never again. Published here,
        before the aggregate agent takes its next message, such a record is handed to the producer before
        Faust can commit the partial's offset (its commit flushes the producer first): a worker that dies
        afterwards has either published the value, or not committed the partial, which its successor then
        reads again. So the successor need not publish the final days it restores (Aggregator.recover).
        """
        if not self.aggregator.on_partial(self.aggregates, partial):
            return 0
        current = self.aggregator.current_day
        if partial.day > final_from or current is None or partial.day > current:
            return 0
        if partials.partition_of(partial.group, self.aggregator.partitions) not in self.owned():
            return 0
        return await self._send([partial.group], None)

    async def _send(self, groups: list[Group], deadline: float | None) -> int:
        """Publish `groups` in order; stop at `deadline` (pacer time) after a group, the rest stay dirty."""
        sent = 0
        updated_at = timestamp()
        for group in groups:
            for record in self.aggregator.take_group(self.aggregates, group, updated_at):
                if self.stopping():
                    # Stopping: this worker is leaving the group and may no longer own the group; the next
                    # owner re-publishes everything it takes over. Sending on would also race the producer's
                    # shutdown (a send after it stopped crashes the app, and the worker exits non-zero).
                    return sent
                await self.sender.send(key=record.key.encode(), value=output.encode(record))
                sent += 1
                await self.turns.share()  # the reader waits one slice at a time, not the whole publication
            # Also after a group none of whose records changed: a run of them is work without a send.
            await self.turns.share()
            if deadline is not None and self.pacer.now() >= deadline:
                break  # the groups not taken stay dirty for the next slice
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
