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
from collections.abc import AsyncIterator, Callable


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
    """Lets periodic jobs (partial flushes, publishing) run without the bulk reader, in short slices.

    The event loop is cooperative: in a backfill the source reader always has a batch ready, so a job
    that suspends twenty times waits for twenty batches (seconds), and a pacer that measured that would
    then postpone the next run by minutes. So the reader waits here before each batch while a job runs.
    A job must not hold the reader for long either (a whole publication took up to 8 s in a backfill,
    input stood still meanwhile): between two steps it calls `share`, which, once the job has held the
    reader for `slice_seconds`, lets the reader take one batch and then goes on. A step can itself take
    long without using the loop: a send waits while the producer's batch of its partition is full, until
    the produce request before it is answered (0.1-0.4 s measured under a backfill on 2 busy cores). So
    the reader waits at most `reader_wait` seconds at a time: then it takes its batch anyway, and the job
    goes on once its send returns. The reader is held at most about `reader_wait` at a time (plus whatever
    else holds the loop then), and a job still gets a turn between every two batches.
    """

    def __init__(
        self,
        slice_seconds: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        reader_wait: float = 0.03,
    ) -> None:
        self.slice_seconds = slice_seconds
        self.reader_wait = reader_wait
        self._clock = clock
        self._jobs = 0
        self._idle: asyncio.Event | None = None
        self._reader_ran: asyncio.Event | None = None
        self._reader_waiting = False
        self._slice_started = 0.0
        #: Called with each wait of the reader for a job, in seconds (the worker's metrics).
        self.observe: Callable[[float], None] | None = None

    def _event(self) -> asyncio.Event:
        if self._idle is None:  # created lazily: inside the loop that uses it
            self._idle = asyncio.Event()
            self._idle.set()
        return self._idle

    def _ran(self) -> asyncio.Event:
        if self._reader_ran is None:
            self._reader_ran = asyncio.Event()
        return self._reader_ran

    @contextlib.asynccontextmanager
    async def job(self) -> AsyncIterator[None]:
        """Run the body as a job: the reader takes no batch until it is done, except at `share`."""
        idle = self._event()
        if not self._jobs:
            self._slice_started = self._clock()
        self._jobs += 1
        idle.clear()
        try:
            yield
        finally:
            self._jobs -= 1
            if not self._jobs:
                idle.set()

    async def share(self, longest_wait: float = 1.0) -> None:
        """Inside a job, between two steps: once the job has held the reader for a slice, let the reader
        take one batch (waiting for it at most `longest_wait` seconds), then go on with a new slice."""
        if self._clock() - self._slice_started < self.slice_seconds:
            return
        if self._reader_waiting:
            idle, ran = self._event(), self._ran()
            ran.clear()
            idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ran.wait(), timeout=longest_wait)
            if self._jobs:
                idle.clear()
        else:
            await asyncio.sleep(0)  # the reader is not held (it is fetching): the others get a turn
        self._slice_started = self._clock()

    async def wait_for_jobs(self) -> None:
        """Return once no job holds the reader (at once when none does), or after `reader_wait` seconds
        while one still does (it is then waiting for something else than the loop, e.g. a send)."""
        idle = self._event()
        if idle.is_set():
            return
        started = self._clock()
        self._reader_waiting = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), timeout=self.reader_wait)
        finally:
            self._reader_waiting = False
            if self.observe is not None:
                self.observe(self._clock() - started)

    def reader_ran(self) -> None:
        """The reader applied a batch: a job waiting in `share` goes on."""
        self._ran().set()


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
