"""The aggregate side: partials of every source partition -> global values -> `kpimon-kpis` and gauges.

The aggregate table is keyed by group (dimension/segment/day) and partitioned like `kpimon-partials`, so
exactly one worker owns each global series (docs/architecture.md, "One owner per global series"). Per
group it keeps the newest partial of each source partition (by version) and the global value is their
sum (docs/architecture.md, "Absolute partials and an idempotent merge").
`Aggregator` holds no Faust objects; the agent hands it the table.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

from kpimon.agents.pipeline.partials import Group, Partial, Watermark, group_name, parse_group, partition_of
from kpimon.streams.output import KpiRecord
from kpimon.streams.records import group_records
from kpimon.streams.targets import Targets

log = logging.getLogger(__name__)

AggregateTable = MutableMapping[bytes, dict[str, Any]]
_WATERMARK = b"__watermark__/"


class Aggregator:
    """Merges partials into the aggregate table and says which records to publish."""

    def __init__(self, partitions: int, targets: Targets | None = None) -> None:
        self.partitions = partitions
        self.targets: Targets = targets or {}
        #: The global current day: the newest accepted event day of any source partition.
        self.current_day: int | None = None
        #: Groups changed since they were last published (those after the current day wait here).
        self.dirty: set[Group] = set()
        #: The dirty groups, newest day first (a heap of (-day, group); entries of groups no longer dirty
        #: are skipped): what is published first (`take_publishable`).
        self._queue: list[tuple[int, Group]] = []
        #: Last published value per output key, so unchanged records are not sent again.
        self._published: dict[str, tuple[Any, ...]] = {}

    def on_partial(self, table: AggregateTable, partial: Partial) -> bool:
        """Merge one partial; False when a newer one of the same source was already merged."""
        key = group_name(partial.group).encode()
        entry = table.get(key)
        source = str(partial.source)
        if entry is not None:
            stored = entry.get(source)
            if stored is not None and stored["v"] > partial.version:
                return False  # a late message of a previous owner of that source partition
            entry = dict(entry)
        else:
            entry = {}
        entry[source] = {"v": partial.version, "c": partial.counts}
        table[key] = entry
        self._mark(partial.group)
        return True

    def _mark(self, group: Group) -> None:
        if group not in self.dirty:
            self.dirty.add(group)
            heapq.heappush(self._queue, (-group[2], group))

    def on_watermark(self, table: AggregateTable, target: int, watermark: Watermark) -> None:
        """Merge a source's current day (sent to every partials partition; `target` is this one)."""
        key = _WATERMARK + f"{target}|{watermark.source}".encode()
        stored = table.get(key)
        if stored is None or stored["v"] <= watermark.version:
            table[key] = {"v": watermark.version, "day": watermark.current_day}
        self._advance(watermark.current_day)

    def expire(self, table: AggregateTable, partition: int, before_day: int) -> int:
        """Delete the groups of `partition` older than `before_day` that are published; return how many.

        Such days can no longer change (they are older than the lateness bound), and their final records
        are in kpimon-kpis. Only groups of the partition being processed are deleted, so the changelog
        tombstone lands in that group's own changelog partition.
        """
        old: list[bytes] = []
        for key in list(table.keys()):
            if key.startswith(_WATERMARK):
                continue
            group = parse_group(key.decode())
            if (
                group[2] < before_day
                and group not in self.dirty
                and partition_of(group, self.partitions) == partition
            ):
                old.append(key)
        for key in old:
            del table[key]
        return len(old)

    def _advance(self, day: int) -> None:
        if self.current_day is None or day > self.current_day:
            self.current_day = day

    def recover(self, table: AggregateTable, owned: set[int]) -> None:
        """After a restart or rebalance: the current day from the stored watermarks, owned groups dirty."""
        self._published.clear()
        self.dirty.clear()
        self._queue.clear()
        for key, entry in list(table.items()):
            if key.startswith(_WATERMARK):
                self._advance(int(entry["day"]))
                continue
            group = parse_group(key.decode())
            if partition_of(group, self.partitions) in owned:
                self._mark(group)

    def global_counts(self, table: AggregateTable, group: Group) -> dict[str, int]:
        """The sum over source partitions of a group's counters."""
        totals: dict[str, int] = {}
        entry = table.get(group_name(group).encode())
        for stored in (entry or {}).values():
            for name, value in stored["c"].items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def records(self, table: AggregateTable, group: Group, updated_at: str | None = None) -> list[KpiRecord]:
        """The output records of a group, from its global counters."""
        dimension, segment, day = group
        return group_records(
            dimension, segment, day, self.global_counts(table, group), updated_at, self.targets
        )

    def take_publishable(self, table: AggregateTable, owned: set[int]) -> Iterator[KpiRecord]:
        """Records of dirty groups up to the current day whose value changed since last published.

        Newest day first, and a group made dirty while the caller is suspended between two records comes
        next if it is newer than the rest: after a backfill the view has the current day's values within a
        second, not once every older day is re-published (40,000 records of a 60-day demo history took
        tens of seconds). One call takes at most as many groups as were ready when it started, so it ends
        even while new partials keep coming; the others stay dirty for the next call.
        """
        if self.current_day is None:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        budget = sum(1 for g in self.dirty if g[2] <= self.current_day)
        later: list[tuple[int, Group]] = []  # dirty groups after the current day: they wait
        try:
            while budget > 0 and self._queue:
                entry = heapq.heappop(self._queue)
                group = entry[1]
                if group not in self.dirty:
                    continue  # published since it was queued
                if self.current_day is None or group[2] > self.current_day:
                    later.append(entry)
                    continue
                budget -= 1
                self.dirty.discard(group)
                if partition_of(group, self.partitions) not in owned:
                    continue  # moved to another worker by a rebalance: it publishes it now
                for record in self.records(table, group, now):
                    fingerprint = (record.value, record.numerator, record.denominator)
                    if self._published.get(record.key) != fingerprint:
                        self._published[record.key] = fingerprint
                        yield record
        finally:
            for entry in later:
                heapq.heappush(self._queue, entry)

    def groups_on(self, table: AggregateTable, days: set[int], owned: set[int]) -> Iterator[Group]:
        """Owned groups of the given days (the gauges show the current and the previous day)."""
        for key in list(table.keys()):
            if key.startswith(_WATERMARK):
                continue
            group = parse_group(key.decode())
            if group[2] in days and partition_of(group, self.partitions) in owned:
                yield group
