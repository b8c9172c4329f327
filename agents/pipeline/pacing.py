"""Share the worker's one event loop between the bulk reader and the periodic jobs.

`Pacer` keeps periodic flushes to a bounded share of the worker's time; `Turns` lets a running job finish
before the reader takes its next batch; `BatchSizer` keeps a batch short enough for the others' turns.


A flush costs in proportion to the groups that changed, not to the events. In live traffic few groups
change and a flush every interval is cheap; in a backfill every day of every segment changes all the
time, and flushing them every second would starve the ingest agent. So after a flush that took t
seconds, the next one waits at least `t * (1 - share) / share`: flushing then uses at most `share` of the
time, and in live traffic it still runs every interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator


class Pacer:
    """Says whether a periodic job is due, from how long it took last time."""

    def __init__(self, share: float = 0.1, clock: object = time.monotonic) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share = share
        self._clock = clock
        self._next = 0.0

    def now(self) -> float:
        """The pacer's clock."""
        return float(self._clock())  # type: ignore[operator]

    def due(self) -> bool:
        """Whether the job should run now."""
        return self.now() >= self._next

    def ran(self, started: float) -> None:
        """Record a run that started at `started` (a value of `now()`) and just finished."""
        finished = self.now()
        self._next = finished + (finished - started) * (1 - self.share) / self.share


class Turns:
    """Lets periodic jobs (partial flushes, publishing) run from start to end without the bulk reader.

    The event loop is cooperative: in a backfill the source reader always has a batch ready, so a job
    that suspends twenty times waits for twenty batches (seconds), and a pacer that measured that would
    then postpone the next run by minutes. The reader waits here before each batch while a job runs.
    """

    def __init__(self) -> None:
        self._jobs = 0
        self._idle: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._idle is None:  # created lazily: inside the loop that uses it
            self._idle = asyncio.Event()
            self._idle.set()
        return self._idle

    @contextlib.asynccontextmanager
    async def job(self) -> AsyncIterator[None]:
        """Run the body as a job: the reader takes no batch until it is done."""
        idle = self._event()
        self._jobs += 1
        idle.clear()
        try:
            yield
        finally:
            self._jobs -= 1
            if not self._jobs:
                idle.set()

    async def wait_for_jobs(self) -> None:
        """Return once no job runs (at once when none does)."""
        await self._event().wait()


class BatchSizer:
    """Sizes the reader's batches so that applying one takes about `target` seconds.

    A batch is applied without suspending, so its duration is how long the web server, the timers and
    Faust's own consumer wait for their turn; a fixed count would be 0.05 s on one machine and 1 s on
    another. The size follows the measured rate, within [minimum, maximum] messages.
    """

    def __init__(self, maximum: int, target: float = 0.05, minimum: int = 100) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.target = target
        self.size = self.minimum

    def ran(self, messages: int, seconds: float) -> None:
        """Record that a batch of `messages` took `seconds` to apply."""
        if messages < self.size // 2 or seconds <= 0:
            return  # a short batch (caught up) says little about the rate
        wanted = int(messages / seconds * self.target)
        # Grow at most twofold per batch: one fast batch of cheap messages is no rate.
        self.size = max(self.minimum, min(self.maximum, wanted, self.size * 2))
