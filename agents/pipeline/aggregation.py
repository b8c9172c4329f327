"""The aggregate side: partials of every source partition -> global values -> `kpimon-kpis` and gauges.

The aggregate table is keyed by group (dimension/segment/day) and partitioned like `kpimon-partials`, so
exactly one worker owns each global series (docs/architecture.md, "One owner per global series"). Per
group it keeps the newest partial of each source partition (by version) and the global value is their
sum (docs/architecture.md, "Absolute partials and an idempotent merge").
`Aggregator` holds no Faust objects; the agent hands it the table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

from kpimon.agents.pipeline.partials import (
    Group,
    Partial,
    Watermark,
    group_name,
    parse_group,
    partial_key,
    partition_of,
)
from kpimon.streams.output import KpiRecord
from kpimon.streams.records import group_records
from kpimon.streams.targets import Targets

log = logging.getLogger(__name__)


def timestamp() -> str:
    """Now as a record's `updated_at` (UTC, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        #: Last published value per output key, so unchanged records are not sent again.
        self._published: dict[str, tuple[Any, ...]] = {}
        #: Groups of final days restored from the changelog and not merged since (see `recover`).
        self.settled: set[Group] = set()

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
        self.dirty.add(partial.group)
        self.settled.discard(partial.group)  # a source sent it again: its value is current once more
        return True

    def heal(self, table: AggregateTable, partial: Partial) -> bool:
        """Merge a partial re-read from kpimon-partials after a restore, only if newer than the entry's.

        Writes nothing when the restored entry already holds it (every merge is a changelog record).
        """
        entry = table.get(group_name(partial.group).encode())
        stored = None if entry is None else entry.get(str(partial.source))
        if stored is not None and stored["v"] >= partial.version:
            return False
        return self.on_partial(table, partial)

    def on_watermark(self, table: AggregateTable, target: int, watermark: Watermark) -> None:
        """Merge a source's current day (sent to every partials partition; `target` is this one)."""
        key = _WATERMARK + f"{target}|{watermark.source}".encode()
        stored = table.get(key)
        if stored is None or stored["v"] <= watermark.version:
            table[key] = {"v": watermark.version, "day": watermark.current_day}
        self._advance(watermark.current_day)

    def expire(
        self, table: AggregateTable, partition: int, before_day: int, removed: list[bytes] | None = None
    ) -> int:
        """Delete the groups of `partition` older than `before_day` that are published; return how many.

        Such days can no longer change (they are older than the lateness bound), and their final records
        are in kpimon-kpis. Only groups of the partition being processed are deleted, so the changelog
        tombstone lands in that group's own changelog partition. `removed`, when given, receives the
        kpimon-partials keys of the deleted groups' partials (one per group and source partition): the
        caller tombstones them, so that topic too holds only the days that can change.
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
            if removed is not None:
                group = parse_group(key.decode())
                removed.extend(partial_key(group, int(source)) for source in table[key])
            del table[key]
        return len(old)

    def _advance(self, day: int) -> None:
        if self.current_day is None or day > self.current_day:
            self.current_day = day

    def recover(self, table: AggregateTable, owned: set[int], final_before: int | None = None) -> None:
        """After a restart or rebalance: the current day from the stored watermarks, owned groups dirty.

        Groups of days before `final_before` (the oldest day validation accepts) are not published again
        nor shown: no source sends such a day again to correct it, and the restored entry may lack the
        previous owner's last merges (see engine.rebuild_counters), while kpimon-kpis already holds the
        value of every merge whose offset was committed: a partial of such a day is published before
        the aggregate agent takes the next one (runtime/aggregate_agent.py), so before Faust commits it.
        """
        self._published.clear()
        self.dirty.clear()
        self.settled.clear()
        for key, entry in list(table.items()):
            if key.startswith(_WATERMARK):
                self._advance(int(entry["day"]))
                continue
            group = parse_group(key.decode())
            if partition_of(group, self.partitions) not in owned:
                continue
            if final_before is not None and group[2] < final_before:
                self.settled.add(group)
            else:
                self.dirty.add(group)

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

    def fresh_days(self) -> set[int]:
        """The current and the previous day: published before all other days, and shown as gauges."""
        return set() if self.current_day is None else {self.current_day, self.current_day - 1}

    def publishable(self, owned: set[int], fresh: bool | None = None) -> list[Group]:
        """The dirty groups up to the current day, newest day first; groups of other workers are dropped.

        `fresh`: True, only those of `fresh_days`; False, only the others; None, all.
        """
        if self.current_day is None:
            return []
        days = self.fresh_days()
        ready: list[Group] = []
        for group in list(self.dirty):
            if group[2] > self.current_day or (fresh is not None and (group[2] in days) != fresh):
                continue
            if partition_of(group, self.partitions) not in owned:
                self.dirty.discard(group)  # moved to another worker by a rebalance: it publishes it now
                continue
            ready.append(group)
        ready.sort(key=lambda group: group[2], reverse=True)
        return ready

    def take_group(self, table: AggregateTable, group: Group, updated_at: str) -> list[KpiRecord]:
        """A group's records whose value changed since last published; the group is no longer dirty."""
        self.dirty.discard(group)
        changed: list[KpiRecord] = []
        for record in self.records(table, group, updated_at):
            fingerprint = (record.value, record.numerator, record.denominator)
            if self._published.get(record.key) != fingerprint:
                self._published[record.key] = fingerprint
                changed.append(record)
        return changed

    def take_publishable(
        self, table: AggregateTable, owned: set[int], fresh: bool | None = None
    ) -> Iterator[KpiRecord]:
        """Records of dirty groups up to the current day whose value changed since last published, newest
        day first (`fresh` as in `publishable`)."""
        now = timestamp()
        for group in self.publishable(owned, fresh):
            yield from self.take_group(table, group, now)

    def groups_on(self, table: AggregateTable, days: set[int], owned: set[int]) -> Iterator[Group]:
        """Owned groups of the given days (the gauges show the current and the previous day), but not the
        settled ones (`recover`)."""
        for key in list(table.keys()):
            if key.startswith(_WATERMARK):
                continue
            group = parse_group(key.decode())
            if (
                group[2] in days
                and group not in self.settled
                and partition_of(group, self.partitions) in owned
            ):
                yield group
