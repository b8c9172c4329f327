"""Per-source-partition counters, in memory, with the groups changed since the last flush.

They are derived state: the exact sum of the contributions of the partition's users, so they need no
changelog. After a restart or rebalance they are rebuilt from the user-state table (itself restored from
its changelog), which is what makes them exact across restarts (see docs/architecture.md).

Layout: segment -> day -> a vector of counter values (indexed like `COUNTER_NAMES`), because the math
hands over runs of consecutive days per counter, and a run is then a tight loop over one dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from agents.partials import Group
from streams import engagement, satisfaction
from streams.segments import SegmentKey

_COUNTERS = (*engagement.COUNTERS, *satisfaction.COUNTERS)
COUNTER_NAMES: tuple[str, ...] = tuple(f"{kpi}/{window}" for kpi, window in _COUNTERS)
_INDEX: dict[tuple[str, str], int] = {counter: i for i, counter in enumerate(_COUNTERS)}
_WIDTH = len(COUNTER_NAMES)


class PartitionCounters:
    """The counters of one source partition."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.segments: dict[SegmentKey, dict[int, list[int]]] = {}
        self.dirty: dict[SegmentKey, set[int]] = {}
        #: Newest accepted event day in this partition (None before the first event).
        self.current_day: int | None = None
        #: Processed input offsets (clicks + surveys + rekeyed) of this partition: its partials' version.
        self.version = 0

    def add_runs(self, segment: SegmentKey, runs: Iterable[tuple[str, str, int, int, int]]) -> None:
        """Apply runs (kpi, window, first_day, last_day, delta) of one segment."""
        days = self.segments.get(segment)
        if days is None:
            days = self.segments[segment] = {}
        dirty = self.dirty.get(segment)
        if dirty is None:
            dirty = self.dirty[segment] = set()
        for kpi, window, first, last, delta in runs:
            index = _INDEX[kpi, window]
            span = range(first, last + 1)
            for day in span:
                vector = days.get(day)
                if vector is None:
                    vector = days[day] = [0] * _WIDTH
                vector[index] += delta
            dirty.update(span)

    def add_deltas(self, segment: SegmentKey, deltas: Mapping[tuple[str, str, int], int]) -> None:
        """Apply {(kpi, window, day): delta} of one segment."""
        self.add_runs(
            segment, ((kpi, window, day, day, delta) for (kpi, window, day), delta in deltas.items())
        )

    def saw_day(self, day: int) -> None:
        """Advance the partition's current day."""
        if self.current_day is None or day > self.current_day:
            self.current_day = day

    def counts(self, group: Group) -> dict[str, int]:
        """The counters of one group by name (zeros included)."""
        vector = self.segments.get((group[0], group[1]), {}).get(group[2])
        return dict(zip(COUNTER_NAMES, vector or [0] * _WIDTH, strict=True))

    def take_dirty(self) -> Iterator[tuple[Group, dict[str, int]]]:
        """The changed groups with their absolute counters, clearing the dirty set."""
        dirty, self.dirty = self.dirty, {}
        for (dimension, segment), days in dirty.items():
            for day in days:
                yield (dimension, segment, day), self.counts((dimension, segment, day))

    def mark_all_dirty(self) -> None:
        """Everything must be re-sent (after a rebuild, so aggregators get absolute values)."""
        self.dirty = {segment: set(days) for segment, days in self.segments.items()}

    def drop_before(self, day: int) -> int:
        """Forget the days before `day` that are already flushed; return how many groups were dropped."""
        dropped = 0
        for segment, days in self.segments.items():
            pending = self.dirty.get(segment, set())
            for old in [d for d in days if d < day and d not in pending]:
                del days[old]
                dropped += 1
        return dropped
