"""The source side of the pipeline: accepted events -> per-user state -> per-partition counters -> partials.

`SourceEngine` holds no Faust objects: the ingest agent hands it the user-state table (any mutable
mapping), so the whole event path is testable without Kafka. All KPI math is in `streams/`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, MutableMapping
from itertools import repeat
from typing import Literal

from kpimon.agents.pipeline.counters import PartitionCounters
from kpimon.agents.pipeline.folding import SegmentFolder
from kpimon.agents.pipeline.partials import Partial, Watermark
from kpimon.streams import crossed, engagement
from kpimon.streams.events import MS_PER_DAY, SurveyEvent, day_of
from kpimon.streams.segments import UNKNOWN, SegmentKey, event_stage, segments_for
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Accepted, Policy

log = logging.getLogger(__name__)

UserTable = MutableMapping[bytes, UserState]
#: Counter runs of a batch not applied yet: (segment, (kpi, window, first_day, last_day, delta)) -> how
#: many times. Many events of a batch produce the same run (every user turning active on one day adds the
#: same 30-day run to `active_users 30d` of `("all", "all")`), so the batch applies each distinct run
#: once, with its delta multiplied, instead of once per event.
PendingRuns = Counter[tuple[SegmentKey, engagement.Run]]


def versioned(generation: int, processed: int) -> int:
    """The version of a partial: the consumer-group generation first, then the processed offsets.

    A rebalance raises the group generation, so whatever the new owner of a source partition sends wins
    over a late message of the previous owner, even while the new owner is still re-reading offsets the
    previous one had already passed (offsets alone would order those wrongly). Within one generation,
    one owner sends, and its processed offsets only grow.
    """
    return (generation << 40) + processed


class SourceEngine:
    """Per-partition counters of the partitions this worker owns, and what changes them."""

    def __init__(
        self,
        max_lateness_days: int,
        passive_types: Iterable[str] = (),
        max_segment_values: int = 50,
        max_future_ms: int = Policy().max_future_ms,
        personal_pattern: str = "",
    ) -> None:
        self.max_lateness_days = max_lateness_days
        self.max_future_ms = max_future_ms
        self.passive_types = frozenset(passive_types)
        self.folder = SegmentFolder(max_segment_values, personal_pattern)
        self.partitions: dict[int, PartitionCounters] = {}
        #: Next offset to process per (topic, partition): the partials' version, and the consumer lag.
        self.positions: dict[tuple[str, int], int] = {}
        self._sent_watermarks: dict[int, tuple[int, int]] = {}
        self._sweeps: dict[int, Iterator[bytes]] = {}

    def counters(self, partition: int) -> PartitionCounters:
        """The counters of a source partition (created on first use)."""
        counters = self.partitions.get(partition)
        if counters is None:
            counters = self.partitions[partition] = PartitionCounters(partition)
        return counters

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """Note that a message was processed (whatever its outcome): advances the partition's version."""
        key = (topic, partition)
        previous = self.positions.get(key, 0)
        if offset + 1 > previous:
            self.positions[key] = offset + 1
            self.counters(partition).version += offset + 1 - previous

    def oldest_accepted_day(self, now_ms: int) -> int:
        """The oldest event day validation still accepts at wall-clock `now_ms`."""
        return day_of(now_ms) - self.max_lateness_days

    def on_event(
        self,
        users: UserTable,
        key: bytes,
        partition: int,
        accepted: Accepted,
        now_ms: int,
        pending: PendingRuns | None = None,
    ) -> str:
        """Apply one accepted event of the user `key` read from `partition`; "accepted" or "duplicate".

        With `pending`, its counter runs are added there instead of to the counters: the caller applies
        them with `apply_pending` (a batch does so once, at its end).
        """
        counters = self.counters(partition)
        day = accepted.day
        event = accepted.event
        state = users.get(key)
        write = state is None
        if state is None:
            state = UserState()
        if isinstance(event, SurveyEvent) and event.event_id in state.surveys:
            # The first of an event_id wins, whatever its action (docs/events.md, "Duplicates").
            return "duplicate"
        counters.saw_day(day)
        if state.note_seen(day):
            write = True
        signup_day = accepted.signup_day
        first_seen = state.first_seen if state.first_seen is not None else day
        platform = self.folder.fold("platform", event.platform)
        plan = self.folder.fold("plan", event.plan)
        stage = event_stage(day, signup_day, first_seen)
        if isinstance(event, SurveyEvent):
            answered_nps = event.survey == "nps" and event.score is not None
            fact = (
                day,
                event.survey,
                event.action,
                -1 if event.score is None else event.score,
                platform or UNKNOWN,
                plan or UNKNOWN,
                stage,
                accepted.ts_ms % MS_PER_DAY if answered_nps else 0,  # orders a user's NPS answers
            )
            write = True
            for segment, runs in crossed.record_survey(state, event.event_id, fact):
                if pending is None:
                    counters.add_runs(segment, runs)
                else:
                    pending.update(zip(repeat(segment), runs))
        elif event.type not in self.passive_types:
            changes = crossed.record_click(state, day, signup_day, segments_for(platform, plan, stage))
            if changes is not None:
                write = True
                for segment, segment_runs in changes:
                    if pending is None:
                        counters.add_runs(segment, segment_runs)
                    else:
                        pending.update(zip(repeat(segment), segment_runs))
        if write:
            # Only a changed state is written: one changelog record per user-segment-day or survey.
            oldest = self.oldest_accepted_day(now_ms)
            state.expire(engagement.expiry_cutoff(oldest), engagement.survey_expiry_cutoff(oldest))
            state.partition = partition
            users[key] = state
        return "accepted"

    def apply_pending(self, partition: int, pending: PendingRuns) -> None:
        """Apply the runs `on_event` collected in `pending` to `partition`'s counters, and clear it.

        Counters are sums, so applying each distinct run once with its delta times its count gives the
        same values as applying every run as it came; the same days become dirty.
        """
        if not pending:
            return
        self._apply(self.counters(partition), pending)

    @staticmethod
    def _apply(counters: PartitionCounters, pending: PendingRuns) -> None:
        """Apply counted runs to `counters`: each distinct run once, its delta times its count; clear them."""
        by_segment: dict[SegmentKey, list[engagement.Run]] = {}
        for (segment, (kpi, window, first, last, delta)), times in pending.items():
            runs = by_segment.get(segment)
            if runs is None:
                runs = by_segment[segment] = []
            runs.append((kpi, window, first, last, delta * times))
        for segment, runs in by_segment.items():
            counters.add_runs(segment, runs)
        pending.clear()

    def sweep(self, users: UserTable, partition: int, now_ms: int, budget: int = 10_000) -> int:
        """Expire old days from up to `budget` states of `partition`'s users; return how many were written.

        A user who never comes back is never written again, so without a sweep their oldest bits would
        stay forever. Called from the ingest agent while it processes an event of `partition`: Faust
        writes a table change to the changelog partition of the current event, which must be the user's.
        Counters do not change: expired days are older than any day an accepted event can still touch.
        """
        cursor = self._sweeps.get(partition)
        if cursor is None:
            keys_of_partition = getattr(
                users, "keys_of_partition", None
            )  # kpimon.agents.runtime.user_store.UserStore
            cursor = self._sweeps[partition] = (
                keys_of_partition(partition) if keys_of_partition is not None else iter(list(users.keys()))
            )
        oldest = self.oldest_accepted_day(now_ms)
        cutoff, survey_cutoff = engagement.expiry_cutoff(oldest), engagement.survey_expiry_cutoff(oldest)
        written = 0
        for _ in range(budget):
            key = next(cursor, None)
            if key is None:
                del self._sweeps[partition]  # a full pass is done; the next call starts another
                break
            state = users.get(key)
            if state is not None and state.partition == partition and state.expire(cutoff, survey_cutoff):
                users[key] = state
                written += 1
        return written

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
        # The runs of every user first, counted: most users' runs repeat others' (a 30-day window of the
        # same day), so each distinct run is applied once with its delta multiplied (as `apply_pending`).
        pending: PendingRuns = Counter()
        for state in states:
            users += 1
            if state.last_seen is not None:
                counters.saw_day(state.last_seen)
            for segment, runs in engagement.full_contribution_runs(state, from_day):
                if runs:
                    pending.update(zip(repeat(segment), runs))
                else:
                    counters.run_target(segment)  # a segment without days in range still exists
            for segment, runs in crossed.rebuild_runs(state, from_day):
                pending.update(zip(repeat(segment), runs))
        self._apply(counters, pending)
        counters.mark_all_dirty()
        self.partitions[partition] = counters
        log.info(
            "rebuilt the counters of partition %d from %d users in %.2f s",
            partition,
            users,
            time.monotonic() - started,
        )
        return counters

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the counters of partitions this worker no longer owns."""
        for partition in partitions:
            self.partitions.pop(partition, None)
            self._sent_watermarks.pop(partition, None)
            self._sweeps.pop(partition, None)
            for key in [k for k in self.positions if k[1] == partition]:
                del self.positions[key]

    def newest_flushed_day(self, now_ms: int) -> int:
        """The newest day whose changed groups a flush at wall-clock `now_ms` sends.

        An active day changes the counters of up to 59 later days (7d and 30d windows, dormancy, churn
        bases), so in live traffic almost every partial of a flush would be of a day to come: 928 of the
        960 partials of a flush in the bench's delay stage, whose flushes then took most of a second and
        were paced to one in five to ten seconds (pipeline/pacing.py). Yet no worker publishes or shows a
        day before it is some source partition's current day, and validation accepts no event more than
        `max_future_ms` ahead of the wall clock, so no current day is later than the day of
        `now_ms + max_future_ms`. Groups of later days stay dirty and go out, with their absolute values
        of then, once their day comes within that bound. One more day of margin covers clock differences
        between workers: every source sends a day's groups from a day before any worker's current day
        can reach it, as it did before.
        """
        return day_of(now_ms + self.max_future_ms) + 1

    def fresh_days(self) -> tuple[int, int] | None:
        """The first and last day of the groups a flush sends before all others (None: no day seen yet).

        The day before the newest current day of the owned partitions, that day, and the day after it (so
        the next day's groups are there when midnight makes it current): the days the aggregators publish
        and show. After a rebalance every group is dirty, and up to 90 days of them would otherwise go
        out in arbitrary order, paced, before the current day's.
        """
        days = [c.current_day for c in self.partitions.values() if c.current_day is not None]
        if not days:
            return None
        newest = max(days)
        return newest - 1, newest + 1

    def take_partials(
        self, now_ms: int, generation: int = 0, part: Literal["all", "fresh", "backlog"] = "all"
    ) -> Generator[Partial, None, None]:
        """The changed groups up to `newest_flushed_day` of every owned partition as absolute partials.

        Newest day first within a partition. `part`: "fresh", only the groups of `fresh_days`; "backlog",
        only the others; "all", both. Drops old flushed groups. Changed groups of later days, of the other
        part, or not taken because the caller stopped early stay dirty until a later flush.
        """
        final_before = self.oldest_accepted_day(now_ms)
        until_day = self.newest_flushed_day(now_ms)
        from_day: int | None = None
        fresh = self.fresh_days() if part != "all" else None
        if fresh is not None and part == "fresh":
            from_day, until_day = fresh[0], min(until_day, fresh[1])
        # A copy: the source reader may add a partition's counters while the flush is suspended.
        for partition, counters in list(self.partitions.items()):
            if fresh is not None and part == "backlog":
                # Two ranges, newest first: the days after the fresh ones, then those before.
                ranges = [(fresh[1] + 1, until_day), (None, fresh[0] - 1)]
            else:
                ranges = [(from_day, until_day)]
            for first, last in ranges:
                with contextlib.closing(counters.take_dirty(last, first)) as taken:
                    for (dimension, segment, day), counts in taken:
                        yield Partial(
                            source=partition,
                            version=versioned(generation, counters.version),
                            dimension=dimension,
                            segment=segment,
                            day=day,
                            counts=counts,
                        )
            # Days before the lateness bound can no longer change: their final values were just sent.
            counters.drop_before(final_before)

    def take_watermarks(self, generation: int = 0) -> Iterator[Watermark]:
        """A watermark per owned partition whose current day or version moved since the last call."""
        for partition, counters in list(self.partitions.items()):
            if counters.current_day is None:
                continue
            mark = (counters.current_day, versioned(generation, counters.version))
            if self._sent_watermarks.get(partition) != mark:
                self._sent_watermarks[partition] = mark
                yield Watermark(
                    source=partition,
                    version=versioned(generation, counters.version),
                    current_day=counters.current_day,
                )


def rebuild_counters(engine: SourceEngine, owned: set[int], states: Iterable[UserState], now_ms: int) -> None:
    """After a rebalance and the table's recovery: keep exactly the counters of the `owned` partitions.

    Counters of lost partitions are dropped, those of new ones rebuilt from the user `states` (only the
    states of new partitions are used), and every kept partition is marked to send all its partials
    again. An aggregate group that moved to another worker is restored there from the aggregates
    changelog, which can lack the previous owner's last merges: Faust commits the partials' offsets
    before its producer has flushed those changelog writes, so they may land after the new owner's
    restore, and the partials are not read again. A source partition that did not move would then never
    correct the group's stale entry (found by the scaling reliability test). Partials are absolute and
    newer by generation, so sending them again is harmless.
    """
    engine.forget([p for p in engine.partitions if p not in owned])
    for counters in engine.partitions.values():
        counters.mark_all_dirty()
    missing = owned - set(engine.partitions)
    if not missing:
        return
    by_partition: dict[int, list[UserState]] = {p: [] for p in missing}
    for state in states:
        bucket = by_partition.get(state.partition)
        if bucket is not None:
            bucket.append(state)
    for partition in sorted(missing):
        engine.rebuild(partition, by_partition[partition], now_ms)
