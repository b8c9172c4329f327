"""Sharing the event loop: the pacer, jobs the reader waits for, and time-sized batches."""

from __future__ import annotations

import asyncio

import pytest

from kpimon.agents.pipeline.pacing import BatchSizer, Pacer, Turns
from tests.helpers import slowdown


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_pacer_keeps_a_job_to_its_share_of_the_time() -> None:
    clock = Clock()
    pacer = Pacer(share=0.1, clock=clock)
    assert pacer.due()
    started = pacer.now()
    clock.t = 2.0  # the job took 2 s
    pacer.ran(started)
    clock.t = 19.9
    assert not pacer.due()
    clock.t = 20.0  # 2 s of work, then 18 s without: 10 %
    assert pacer.due()
    with pytest.raises(ValueError):
        Pacer(share=0)


async def test_the_reader_waits_while_a_job_runs_and_not_otherwise() -> None:
    turns = Turns(reader_wait=10.0)
    await asyncio.wait_for(turns.wait_for_jobs(), 1)  # no job: at once
    order: list[str] = []
    release = asyncio.Event()

    async def job() -> None:
        async with turns.job():
            order.append("job started")
            await release.wait()  # a job that suspends, as a flush does at every send
            order.append("job done")

    async def reader() -> None:
        await turns.wait_for_jobs()
        order.append("reader")

    running = asyncio.create_task(job())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(reader())
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["job started"]  # the reader took no turn during the job
    release.set()
    await asyncio.gather(running, waiting)
    assert order == ["job started", "job done", "reader"]


async def test_overlapping_jobs_hold_the_reader_until_the_last_ends() -> None:
    turns = Turns(reader_wait=10.0)
    first, second = asyncio.Event(), asyncio.Event()

    async def job(gate: asyncio.Event) -> None:
        async with turns.job():
            await gate.wait()

    tasks = [asyncio.create_task(job(first)), asyncio.create_task(job(second))]
    await asyncio.sleep(0)
    first.set()
    await tasks[0]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(turns.wait_for_jobs(), 0.05)
    second.set()
    await tasks[1]
    await asyncio.wait_for(turns.wait_for_jobs(), 1)


async def test_a_job_suspended_outside_the_loop_holds_the_reader_at_most_the_reader_wait() -> None:
    """A send that waits for the producer (its partition's batch is full until the request before it is
    answered) does not use the loop: the reader takes its batch meanwhile, and the job goes on after."""
    turns = Turns(reader_wait=0.05)
    waits: list[float] = []
    turns.observe = waits.append
    order: list[str] = []
    sent = asyncio.Event()

    async def job() -> None:
        async with turns.job():
            await sent.wait()  # the producer takes the record only after the reader's batch
            order.append("job sent")
            await turns.share()

    async def reader() -> None:
        await turns.wait_for_jobs()
        order.append("batch")
        turns.reader_ran()
        sent.set()

    running = asyncio.create_task(job())
    await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(reader(), running), 5)
    assert order == ["batch", "job sent"]
    # The bound, plus the loop's latency on a loaded machine.
    assert len(waits) == 1 and 0.04 <= waits[0] <= 0.05 + 0.05 * slowdown()


async def test_a_failing_job_releases_the_reader() -> None:
    turns = Turns()
    with pytest.raises(RuntimeError):
        async with turns.job():
            raise RuntimeError("send failed")
    await asyncio.wait_for(turns.wait_for_jobs(), 1)


def test_batches_grow_towards_the_target_duration_within_the_bounds() -> None:
    sizer = BatchSizer(maximum=10_000, target=0.05, minimum=100)
    assert sizer.size == 100
    sizer.ran(100, 0.001)  # 100,000 messages/s: 5,000 per 50 ms, but at most twice as many at a time
    assert sizer.size == 200
    for _ in range(10):
        sizer.ran(sizer.size, sizer.size / 100_000)
    assert sizer.size == 5_000
    sizer.ran(5_000, 0.5)  # the messages got ten times dearer: shrink at once
    assert sizer.size == 500
    for _ in range(20):
        sizer.ran(sizer.size, sizer.size / 10_000_000)
    assert sizer.size == 10_000  # capped by the setting


def test_a_short_batch_does_not_change_the_size() -> None:
    sizer = BatchSizer(maximum=10_000, target=0.05, minimum=100)
    sizer.ran(100, 0.001)
    sizer.ran(100, 0.001)
    assert sizer.size == 400
    sizer.ran(10, 10.0)  # caught up: a handful of messages, whatever it took
    assert sizer.size == 400
    assert BatchSizer(maximum=50).size == 50  # the setting below the floor wins


async def test_a_long_job_lets_the_waiting_reader_take_a_batch_after_every_slice() -> None:
    now = [0.0]  # a clock the steps advance: 20 ms per job step, 40 ms per batch
    turns = Turns(slice_seconds=0.05, clock=lambda: now[0])
    waits: list[float] = []
    turns.observe = waits.append
    order: list[str] = []

    async def job() -> None:
        async with turns.job():
            await asyncio.sleep(0)  # the reader starts waiting for this job
            for _ in range(20):
                now[0] += 0.02
                order.append("step")
                await turns.share()

    async def reader() -> None:
        while len(order) < 40 and "done" not in order:
            await turns.wait_for_jobs()
            now[0] += 0.04
            order.append("batch")
            turns.reader_ran()
            await asyncio.sleep(0)

    running = asyncio.create_task(job())
    await asyncio.sleep(0)
    reading = asyncio.create_task(reader())
    await asyncio.wait_for(running, 5)
    order.append("done")
    await asyncio.wait_for(reading, 5)
    assert order.count("step") == 20
    # The reader got batches in between, not only after the whole job (20 steps = 0.4 s of work) ...
    last_step = len(order) - 1 - order[::-1].index("step")
    assert order[:last_step].count("batch") >= 5
    # ... and no single wait was longer than a slice plus a step.
    assert waits and max(waits) <= 0.05 + 0.02 + 1e-9


async def test_a_job_does_not_pause_while_the_reader_is_not_waiting() -> None:
    now = [0.0]
    turns = Turns(slice_seconds=0.05, clock=lambda: now[0])
    async with turns.job():
        now[0] += 1.0
        await asyncio.wait_for(turns.share(), 0.5)  # nobody to let in: no wait for a batch
