"""Keep periodic flushes to a bounded share of the worker's time.

A flush costs in proportion to the groups that changed, not to the events. In live traffic few groups
change and a flush every interval is cheap; in a backfill every day of every segment changes all the
time, and flushing them every second would starve the ingest agent. So after a flush that took t
seconds, the next one waits at least `t * (1 - share) / share`: flushing then uses at most `share` of the
time, and in live traffic it still runs every interval.
"""

from __future__ import annotations

import time


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
