"""The source side of the pipeline: accepted events -> per-user state -> per-partition counters -> partials.

`SourceEngine` holds no Faust objects: the ingest agent hands it the user-state table (any mutable
mapping), so the whole event path is testable without Kafka. All KPI math is in `streams/`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, MutableMapping

from agents.counters import PartitionCounters
from agents.partials import Partial, Watermark
from streams import engagement
from streams.events import ClickEvent, day_of
from streams.segments import event_stage, segments_of, signup_day_of
from streams.userstate import UserState
from streams.validation import Accepted

log = logging.getLogger(__name__)

UserTable = MutableMapping[bytes, UserState]


class SourceEngine:
    """Per-partition counters of the partitions this worker owns, and what changes them."""

    def __init__(self, max_lateness_days: int, passive_types: Iterable[str] = ()) -> None:
        self.max_lateness_days = max_lateness_days
        self.passive_types = frozenset(passive_types)
        self.partitions: dict[int, PartitionCounters] = {}
        #: Highest processed offset + 1 per (topic, partition): the partials' version.
        self._offsets: dict[tuple[str, int], int] = {}
        self._sent_watermarks: dict[int, tuple[int, int]] = {}

    def counters(self, partition: int) -> PartitionCounters:
        """The counters of a source partition (created on first use)."""
        counters = self.partitions.get(partition)
        if counters is None:
            counters = self.partitions[partition] = PartitionCounters(partition)
        return counters

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """Note that a message was processed (whatever its outcome): advances the partition's version."""
        key = (topic, partition)
        previous = self._offsets.get(key, 0)
        if offset + 1 > previous:
            self._offsets[key] = offset + 1
            self.counters(partition).version += offset + 1 - previous

    def oldest_accepted_day(self, now_ms: int) -> int:
        """The oldest event day validation still accepts at wall-clock `now_ms`."""
        return day_of(now_ms) - self.max_lateness_days

    def on_event(self, users: UserTable, key: bytes, partition: int, accepted: Accepted, now_ms: int) -> None:
        """Apply one accepted event of the user `key` that was read from `partition`."""
        counters = self.counters(partition)
        day = accepted.day
        counters.saw_day(day)
        event = accepted.event
        state = users.get(key)
        write = state is None
        if state is None:
            state = UserState()
        if state.note_seen(day):
            write = True
        if isinstance(event, ClickEvent) and event.type not in self.passive_types:
            signup_day = signup_day_of(event.signup_ts)
            stage = event_stage(day, signup_day, state.first_seen if state.first_seen is not None else day)
            runs = engagement.record_click_runs(state, day, signup_day, segments_of(event, stage))
            if runs is not None:
                write = True
                for segment, segment_runs in runs.items():
                    counters.add_runs(segment, segment_runs)
        if write:
            # Only a changed state is written: one changelog record per user-segment-day, not per event.
            state.expire(engagement.expiry_cutoff(self.oldest_accepted_day(now_ms)))
            state.partition = partition
            users[key] = state

    def rebuild(self, partition: int, states: Iterable[UserState], now_ms: int) -> PartitionCounters:
        """Recompute a partition's counters from its users' states (after a restart or a rebalance).

        Days before the lateness bound are left out: they are final, already published, and their inputs
        may have expired from the states.
        """
        started = time.monotonic()
        counters = PartitionCounters(partition)
        previous = self.partitions.get(partition)
        counters.version = previous.version if previous is not None else 0
        from_day = self.oldest_accepted_day(now_ms)
        users = 0
        for state in states:
            users += 1
            if state.last_seen is not None:
                counters.saw_day(state.last_seen)
            for segment, deltas in engagement.full_contribution(state, from_day).items():
                counters.add_deltas(segment, deltas)
        counters.mark_all_dirty()
        self.partitions[partition] = counters
        log.info(
            "rebuilt the counters of partition %d from %d users in %.2f s",
            partition, users, time.monotonic() - started,
        )  # fmt: skip
        return counters

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the counters of partitions this worker no longer owns."""
        for partition in partitions:
            self.partitions.pop(partition, None)
            self._sent_watermarks.pop(partition, None)
            for key in [k for k in self._offsets if k[1] == partition]:
                del self._offsets[key]

    def take_partials(self, now_ms: int) -> Iterator[Partial]:
        """The changed groups of every owned partition as absolute partials; drops old flushed groups."""
        final_before = self.oldest_accepted_day(now_ms)
        for partition, counters in self.partitions.items():
            for (dimension, segment, day), counts in counters.take_dirty():
                yield Partial(
                    source=partition, version=counters.version, dimension=dimension, segment=segment, day=day,
                    counts=counts,
                )  # fmt: skip
            # Days before the lateness bound can no longer change: their final values were just sent.
            counters.drop_before(final_before)

    def take_watermarks(self) -> Iterator[Watermark]:
        """A watermark per owned partition whose current day or version moved since the last call."""
        for partition, counters in self.partitions.items():
            if counters.current_day is None:
                continue
            mark = (counters.current_day, counters.version)
            if self._sent_watermarks.get(partition) != mark:
                self._sent_watermarks[partition] = mark
                yield Watermark(source=partition, version=counters.version, current_day=counters.current_day)
