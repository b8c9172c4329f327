"""Per-source-partition counters, in memory, with the groups changed since the last flush.

They are derived state: the exact sum of the contributions of the partition's users, so they need no
changelog. After a restart or rebalance they are rebuilt from the user-state table (itself restored from
its changelog), which is what makes them exact across restarts (see docs/architecture.md).

Layout: segment -> day -> a vector of counter differences (indexed like `COUNTER_NAMES`). The math hands
over runs of consecutive days per counter; a run adds its delta at its first day and subtracts it after its
last, so applying it costs two additions whatever its length, and a day's value is a prefix sum.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping

from kpimon.agents.pipeline.partials import Group
from kpimon.streams import crossed, engagement, satisfaction
from kpimon.streams.segments import SegmentKey

_COUNTERS = (*engagement.ALL_COUNTERS, *satisfaction.COUNTERS, *crossed.COUNTERS, crossed.ANY_LEVEL)
COUNTER_NAMES: tuple[str, ...] = tuple(f"{kpi}/{window}" for kpi, window in _COUNTERS)
_INDEX: dict[tuple[str, str], int] = {counter: i for i, counter in enumerate(_COUNTERS)}
_WIDTH = len(COUNTER_NAMES)


class PartitionCounters:
    """The counters of one source partition."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        #: segment -> day -> difference vector: a counter's value on day d is the sum of its differences
        #: on days <= d, so a run of 30 days costs two additions instead of thirty.
        self.diffs: dict[SegmentKey, dict[int, list[int]]] = {}
        #: segment -> days touched by a run, as of the last flush (with `dirty`: the groups that exist).
        self.days: dict[SegmentKey, set[int]] = {}
        self._dirty: dict[SegmentKey, set[int]] = {}
        #: segment -> (first, last) spans of runs since the days were last expanded into the dirty days:
        #: a run covers up to 60 days, and most runs of a backfill repeat a span already noted.
        self._spans: dict[SegmentKey, set[tuple[int, int]]] = {}
        self._values: dict[SegmentKey, dict[int, list[int]]] = {}
        #: Newest accepted event day in this partition (None before the first event).
        self.current_day: int | None = None
        #: Processed input offsets (clicks + surveys + rekeyed) of this partition: its partials' version.
        self.version = 0

    def run_target(self, segment: SegmentKey) -> tuple[dict[int, list[int]], set[tuple[int, int]]]:
        """Where runs of `segment` go: its difference vectors by day (indexed like COUNTER_NAMES) and its
        set of (first, last) spans, created when new; its cached values are dropped.

        A run (index, first, last, delta) adds delta to the vector of day `first` and subtracts it from
        the vector of day `last + 1` (each created as zeros when absent), and adds its span: `add_runs`
        does so, and so does the compiled batch core (kpimon._native) with its batch's collapsed runs.
        """
        diffs = self.diffs.get(segment)
        if diffs is None:
            diffs = self.diffs[segment] = {}
            self.days[segment] = set()
        spans = self._spans.get(segment)
        if spans is None:
            spans = self._spans[segment] = set()
        self._values.pop(segment, None)
        return diffs, spans

    def add_runs(self, segment: SegmentKey, runs: Iterable[tuple[str, str, int, int, int]]) -> None:
        """Apply runs (kpi, window, first_day, last_day, delta) of one segment."""
        diffs, spans = self.run_target(segment)
        for kpi, window, first, last, delta in runs:
            index = _INDEX[kpi, window]
            vector = diffs.get(first)
            if vector is None:
                vector = diffs[first] = [0] * _WIDTH
            vector[index] += delta
            vector = diffs.get(last + 1)
            if vector is None:
                vector = diffs[last + 1] = [0] * _WIDTH
            vector[index] -= delta
            spans.add((first, last))

    @property
    def dirty(self) -> dict[SegmentKey, set[int]]:
        """segment -> days changed since the last flush."""
        if self._spans:
            for segment, spans in self._spans.items():
                days = self._dirty.get(segment)
                if days is None:
                    days = self._dirty[segment] = set()
                for first, last in spans:
                    days.update(range(first, last + 1))
            self._spans = {}
        return self._dirty

    def add_deltas(self, segment: SegmentKey, deltas: Mapping[tuple[str, str, int], int]) -> None:
        """Apply {(kpi, window, day): delta} of one segment."""
        self.add_runs(
            segment, ((kpi, window, day, day, delta) for (kpi, window, day), delta in deltas.items())
        )

    def saw_day(self, day: int) -> None:
        """Advance the partition's current day."""
        if self.current_day is None or day > self.current_day:
            self.current_day = day

    def _segment_values(self, segment: SegmentKey) -> dict[int, list[int]]:
        """A segment's absolute vectors by day (prefix sums of its differences), cached until a change."""
        values = self._values.get(segment)
        if values is None:
            values = self._values[segment] = {}
            diffs = self.diffs.get(segment, {})
            running = [0] * _WIDTH
            for day in sorted(diffs.keys() | self.days.get(segment, set()) | self.dirty.get(segment, set())):
                diff = diffs.get(day)
                if diff is not None:
                    running = [a + b for a, b in zip(running, diff, strict=True)]
                values[day] = running
        return values

    def groups(self) -> set[Group]:
        """Every group some run has touched and that was not dropped."""
        return {
            (segment[0], segment[1], day)
            for segment, days in self.days.items()
            for day in days | self.dirty.get(segment, set())
        }

    def counts(self, group: Group) -> dict[str, int]:
        """The counters of one group by name (zeros included)."""
        vector = self._segment_values((group[0], group[1])).get(group[2])
        return dict(zip(COUNTER_NAMES, vector or [0] * _WIDTH, strict=True))

    def take_dirty(
        self, until_day: int | None = None, from_day: int | None = None
    ) -> Generator[tuple[Group, dict[str, int]], None, None]:
        """The changed groups with their absolute counters, newest day first; no longer dirty afterwards.

        With `until_day` and `from_day`, only the groups of days in that range: the others stay dirty and come
        out, with their values of that time, from a later call. Groups not taken yet when the caller closes
        the iterator early (a flush sent in slices) stay dirty too.
        """
        dirty, self._dirty = self.dirty, {}
        taken: list[tuple[SegmentKey, int]] = []
        # Split before the first yield: runs added while the caller is suspended between two groups go to
        # the new dirty set (or its spans), which must not be overwritten afterwards.
        for key, days in dirty.items():
            kept = {
                day
                for day in days
                if (until_day is not None and day > until_day) or (from_day is not None and day < from_day)
            }
            if kept:
                self._dirty[key] = kept
            for day in days - kept:
                self.days[key].add(day)
                taken.append((key, day))
        # The newest days first: the current day's groups are the ones everybody looks at.
        taken.sort(key=lambda item: item[1], reverse=True)
        done = 0
        try:
            for key, day in taken:
                values = self._segment_values(key)
                if day not in values:  # cached before this day was known: compute afresh
                    del self._values[key]
                    values = self._segment_values(key)
                done += 1
                yield (key[0], key[1], day), dict(zip(COUNTER_NAMES, values[day], strict=True))
        finally:
            for key, day in taken[done:]:
                self._dirty.setdefault(key, set()).add(day)

    def mark_all_dirty(self) -> None:
        """Everything must be re-sent (after a rebuild, so aggregators get absolute values)."""
        for segment, days in self.days.items():
            self.dirty.setdefault(segment, set()).update(days)

    def drop_before(self, day: int) -> int:
        """Forget the days before `day` that are already flushed; return how many groups were dropped.

        The differences of the forgotten days fold into the oldest day kept, so later values stay the same.
        """
        dropped = 0
        for segment, days in self.days.items():
            pending = self.dirty.get(segment, set())
            old = [d for d in days if d < day and d not in pending]
            days.difference_update(old)
            dropped += len(old)
            keep_from = min([day, *(d for d in pending if d < day)])
            diffs = self.diffs[segment]
            stale = [d for d in diffs if d < keep_from]
            if not stale:
                continue
            folded = [0] * _WIDTH
            for d in stale:
                folded = [a + b for a, b in zip(folded, diffs.pop(d), strict=True)]
            kept = diffs.get(keep_from)
            diffs[keep_from] = folded if kept is None else [a + b for a, b in zip(folded, kept, strict=True)]
            self._values.pop(segment, None)
        return dropped
