"""Small reusable pieces for tests: free ports, polling, the `kpimon` executable."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from kpimon.agents.devtools.localkafka import pick_free_port, port_is_free

#: The real `kpimon` console script of the virtualenv running the tests.
KPIMON = str(Path(sys.executable).with_name("kpimon"))

__all__ = ["KPIMON", "free_port", "poll", "port_is_free", "slowdown", "wait_until"]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return pick_free_port()


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10,
    interval: float = 0.1,
    message: str = "condition",
) -> None:
    """Poll `predicate` (sync or async) until it is true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not true after {timeout} s")
        await asyncio.sleep(interval)


def poll(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    interval: float = 1.0,
    message: str = "condition",
) -> T:
    """Call `probe` until `done(result)`; the last result, or AssertionError with it after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached after {timeout} s; last: {result!r}"[:6000])
        time.sleep(interval)


def slowdown() -> float:
    """How much slower than on an idle machine CPU-bound work runs now: the 1-minute load average per
    core, at least 1. On an idle machine this is 1; a machine shared with other test runs (this one's load
    reached 25-30 on 2 cores) stretches every phase of a test by about this factor, so time bounds that
    hold on a quiet machine are multiplied by it."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
