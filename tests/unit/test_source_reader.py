"""The source reader and its checkpoint without Kafka: commit after flush, revoke, stop, retries."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from prometheus_client import CollectorRegistry

from kpimon.agents.pipeline.batch import BatchProcessor
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.metrics import PipelineMetrics
from kpimon.agents.pipeline.pacing import Turns
from kpimon.agents.runtime.checkpoint import Checkpoint
from kpimon.agents.runtime.source_reader import ReaderConfig, SourceReader
from kpimon.streams.validation import Policy
from tests.helpers import wait_until
from tests.unit.fakes import FakeCommitter, FakeFetcher, FakeOutbox, FakeStore, Record, click_record

C0, C1 = ("clicks", 0), ("clicks", 1)


class Rig:
    """A reader over fakes that all write to one log."""

    def __init__(self, commit_interval: float = 3600.0) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.engine = SourceEngine(7)
        processor = BatchProcessor(
            self.engine,
            PipelineMetrics(CollectorRegistry(), topics=("clicks", "surveys")),
            Policy(),
            {"clicks": "clicks", "surveys": "surveys"},
            {"clicks": "clicks", "surveys": "surveys"},
        )
        self.store = FakeStore(self.log)
        self.fetcher = FakeFetcher(self.log)
        self.outbox = FakeOutbox(self.log)
        self.committer = FakeCommitter(self.log)
        self.checkpoint = Checkpoint(self.store, self.outbox, self.committer, self.engine.positions)
        self.reader = SourceReader(
            ReaderConfig(
                frozenset({"clicks", "surveys", "rekeyed"}), "dead", "rekeyed", 1000, commit_interval
            ),
            processor,
            self.store,
            fetcher=lambda: self.fetcher,
            outbox=self.outbox,
            checkpoint=self.checkpoint,
            turns=Turns(),
            partition_scope=lambda topic, partition: contextlib.nullcontext(),
        )
        self.task: asyncio.Task[None] | None = None

    def queue(self, tp: tuple[str, int], *records: Record) -> None:
        self.fetcher.queued.setdefault(tp, []).extend(records)

    async def start(self, *owned: tuple[str, int]) -> None:
        await self.reader.assign(set(owned))
        self.task = asyncio.create_task(self.reader.run())

    async def drained(self) -> None:
        await wait_until(
            lambda: not any(self.fetcher.queued.values()) and self.reader.caught_up, message="drained"
        )

    async def stop(self) -> None:
        await self.reader.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    def after(self, entry: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The log entries after the last `entry`."""
        index = max(i for i, e in enumerate(self.log) if e == entry)
        return self.log[index + 1 :]


def now_ms() -> int:
    return int(time.time() * 1000)


def clicks(*users: str, first_offset: int = 0) -> list[Record]:
    return [click_record(first_offset + i, user, now_ms()) for i, user in enumerate(users)]


async def test_offsets_are_committed_only_after_the_changelog_and_the_producer_are_flushed() -> None:
    rig = Rig(commit_interval=0)  # commit after every batch
    rig.queue(C0, *clicks("a", "b", "c"))
    await rig.start(C0)
    await rig.drained()
    await rig.stop()
    commits = [entry for entry in rig.log if entry[0] == "commit"]
    assert commits and commits[0] == ("commit", {C0: 3})
    first = rig.log.index(commits[0])
    before = rig.log[:first]
    assert ("changelog", 3) in before, rig.log
    assert before.index(("changelog", 3)) < max(i for i, e in enumerate(before) if e == ("flush",))
    assert rig.committer.committed == {C0: 3}


async def test_nothing_new_is_committed_once() -> None:
    rig = Rig()
    rig.queue(C0, *clicks("a", "b"))
    await rig.start(C0)
    await rig.drained()
    assert await rig.checkpoint.commit([C0]) == {C0: 2}
    flushes = rig.log.count(("flush",))
    assert await rig.checkpoint.commit([C0]) == {}
    assert rig.log.count(("flush",)) == flushes  # no flush, no commit without new offsets
    await rig.stop()


async def test_a_refused_commit_is_tried_again() -> None:
    rig = Rig()
    rig.queue(C0, *clicks("a"))
    await rig.start(C0)
    await rig.drained()
    rig.committer.refuse = True
    assert await rig.checkpoint.commit([C0]) == {}
    rig.committer.refuse = False
    assert await rig.checkpoint.commit([C0]) == {C0: 1}
    await rig.stop()


async def test_revoking_commits_the_revoked_partitions_first_and_stops_reading_them() -> None:
    rig = Rig()
    rig.queue(C0, *clicks("a", "b"))
    rig.queue(C1, *clicks("c", "d", "e"))
    await rig.start(C0, C1)
    await rig.drained()
    await rig.reader.release({C0})
    tail = rig.after(("assign", (C0, C1)))
    assert tail[-3:] == [("flush",), ("commit", {C0: 2}), ("assign", (C1,))], tail
    assert ("changelog", 5) in tail  # the held-back changelog records went out before the flush
    assert rig.reader.assigned == {C1}
    rig.queue(C0, *clicks("late", first_offset=2))  # no longer fetched: stays queued
    rig.queue(C1, *clicks("f", first_offset=3))
    await wait_until(lambda: not rig.fetcher.queued[C1], message="C1 read")
    assert rig.fetcher.queued[C0] and rig.engine.positions[C0] == 2
    await rig.stop()
    assert rig.committer.committed == {C0: 2, C1: 4}


async def test_stopping_commits_everything_and_stops_the_fetcher() -> None:
    rig = Rig()
    rig.queue(C0, *clicks("a", "b"))
    await rig.start(C0)
    await rig.drained()
    await rig.stop()
    assert rig.committer.committed == {C0: 2}
    assert rig.fetcher.stopped
    await rig.reader.stop()  # a second stop does nothing
    assert rig.log.count(("commit", {C0: 2})) == 1


async def test_a_failed_fetch_is_retried_not_fatal() -> None:
    rig = Rig()
    rig.fetcher.failures = 1
    rig.queue(C0, *clicks("a"))
    await rig.start(C0)
    await wait_until(lambda: rig.engine.positions.get(C0) == 1, timeout=5, message="read after a retry")
    await rig.stop()


async def test_rejected_messages_become_dead_letters_on_the_outbox() -> None:
    rig = Rig(commit_interval=0)
    rig.queue(C0, Record(0, b"u", b"not json"), *clicks("a", first_offset=1))
    await rig.start(C0)
    await rig.drained()
    await rig.stop()
    dead = [sent for sent in rig.outbox.sent if sent[0] == "dead"]
    assert len(dead) == 1
    _topic, key, value, headers = dead[0]
    assert (key, value) == (b"u", b"not json")
    assert dict(headers)["kpimon-source-offset"] == b"0"
    # The dead letter was queued before the offsets that include it were committed.
    assert rig.log.index(("send", "dead")) < rig.log.index(("commit", {C0: 2}))
