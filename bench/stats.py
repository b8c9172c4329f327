"""Pure helpers of the bench: results, rates, ratios, percentiles, target verdicts (unit tested)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageResult:
    """What one stage measured. `rate` is events per second; `complete` is false for a capped run."""

    stage: str
    events: int = 0
    seconds: float = 0.0
    rate: float | None = None
    complete: bool = True
    note: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_count(
        cls, stage: str, events: int, seconds: float, complete: bool = True, note: str = ""
    ) -> StageResult:
        """A result whose rate is `events / seconds`."""
        return cls(stage, events, seconds, rate(events, seconds), complete, note)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for `--json`."""
        return asdict(self)


def rate(events: int, seconds: float) -> float | None:
    """Events per second, or None when nothing was timed."""
    if seconds <= 0 or events <= 0:
        return None
    return events / seconds


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    if position == low or ordered[high] == ordered[low]:
        return ordered[low]  # also keeps an infinite value (an event never seen) from giving NaN
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Target:
    """A target of issue #7: `value` compared with `threshold` (at least, or at most)."""

    name: str
    value: float | None
    threshold: float
    at_least: bool = True
    unit: str = ""
    #: Measured on a capped run, for a value that only grows with more work (memory): a partial value
    #: over the threshold already misses it, one under it says nothing.
    partial: bool = False

    @property
    def verdict(self) -> str:
        """MET, NOT MET, or UNKNOWN when the stage did not run, measured nothing or was cut short."""
        if self.value is None:
            return "UNKNOWN"
        met = self.value >= self.threshold if self.at_least else self.value <= self.threshold
        if self.partial and met:
            return "UNKNOWN (partial run)"
        return "MET" if met else "NOT MET"


def crossing_delays(
    sent: Sequence[float], observations: Sequence[tuple[float, float]], baseline: float
) -> list[float | None]:
    """Delay of each sent event: when a monotone counter first reached `baseline + i + 1`, minus sent[i].

    `observations` are (time, counter value) samples in time order. Event i (0-based, in send order) is
    taken as visible once the counter shows at least i + 1 events above `baseline`; None when it never
    did. Each event adds exactly 1 to the counter (a new user on the current day).
    """
    delays: list[float | None] = []
    j = 0
    for i, sent_at in enumerate(sent):
        needed = baseline + i + 1
        while j < len(observations) and observations[j][1] < needed:
            j += 1
        if j == len(observations):
            delays.extend([None] * (len(sent) - i))
            break
        delays.append(max(0.0, observations[j][0] - sent_at))
    return delays


def extrapolate(base: float, measured: float, done: float, target: float) -> float | None:
    """`measured` grown linearly above `base` from `done` units of work to `target` units."""
    if done <= 0:
        return None
    return base + (measured - base) * target / done


def parse_schedstat(text: str) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) from a `/proc/<pid>/schedstat` line.

    The file holds three numbers: nanoseconds on a CPU, nanoseconds waiting on a run queue, time slices.
    """
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"not a schedstat line: {text!r}")
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


@dataclass(frozen=True)
class TimeSplit:
    """Where a Faust child's wall time went, as fractions of its wall seconds (None when unknown).

    `process_busy` is the CPU seconds of all the process's threads (the event loop, Faust's consumer
    thread, ...) over its wall seconds: CPU-s / wall-s, which can pass 1 with threads on several cores.
    The other three split the main thread's wall time, the thread that runs Faust's event loop: on a CPU,
    runnable but waiting for a CPU (other processes' load), and asleep -- the loop idle in epoll, waiting
    for the consumer thread, the broker or a timer.
    """

    process_busy: float | None = None
    loop_busy: float | None = None
    loop_waiting: float | None = None
    loop_asleep: float | None = None


def time_split(figures: dict[str, Any]) -> TimeSplit:
    """The TimeSplit of a child's figures (`wall_seconds`, `cpu_seconds`, `loop_cpu_seconds`,
    `loop_wait_seconds`, as `bench.child.run_child` records them)."""
    wall = float(figures.get("wall_seconds") or 0.0)
    if wall <= 0:
        return TimeSplit()
    cpu = float(figures.get("cpu_seconds") or 0.0)
    loop_cpu = float(figures.get("loop_cpu_seconds") or 0.0)
    loop_wait = float(figures.get("loop_wait_seconds") or 0.0)
    if loop_cpu <= 0:  # no schedstat on this system
        return TimeSplit(process_busy=cpu / wall)
    busy, waiting = loop_cpu / wall, loop_wait / wall
    # Clamped: the counters are sampled a few microseconds apart from the wall clock.
    return TimeSplit(cpu / wall, busy, waiting, max(0.0, 1.0 - busy - waiting))
