"""A worker without its broker: notice it, say so once, stay quiet and cheap, stop on time, carry on after.

Kafka's clients retry on their own while no broker answers, and log every attempt: about 6,300 lines a
minute from aiokafka ("Unable connect to node with id 1", "Unable to update metadata", ...). Here:

- `ClientLogThrottle` lets each kind of Kafka client warning or error through once a minute and then
  says, once a minute, how many of which it held back. Faust's producer is one of those clients: while its
  buffer is full (a broker away, or slow) it logs a pair of lines ("producer buffer full size 112",
  "producer flush took 0.1") for every message Faust's consumer delivers, up to 20 a second, each with
  its numbers in the text: measured 559 lines in a minute's outage of a worker on the Python engine.
- `KafkaWatch` probes the brokers (a metadata request) every few seconds; when none answers it marks the
  outage -- `/ready` says 503, `kpimon_kafka_reachable` 0, one log line -- and probes again with capped
  exponential backoff (`Backoff`), logging a summary about once a minute, until a broker answers.
- `ShutdownWatchdog` ends the process when a stop does not finish in time: with the broker away, the
  last commit and flush can never complete. What was not committed is read again by the next owner of
  the partitions (the state is idempotent: nothing is lost, nothing counted twice).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

log = logging.getLogger("kpimon.kafka")

#: How often the brokers are probed while they answer, and the first and longest pause while they don't.
PROBE_INTERVAL = 5.0
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 10.0
#: Seconds between the summaries of an outage, and of the client lines held back.
SUMMARY_INTERVAL = 60.0
#: Seconds a stop may take before the watchdog ends the process (Kubernetes waits 60 by default).
SHUTDOWN_GRACE = 20.0

#: Client log lines that repeat once a second or more while a broker is away: logger prefix -> the lowest
#: level throttled. Faust's producer logs its full buffer at WARNING and each 0.1 s wait after it at INFO.
THROTTLED_LOGGERS = {"aiokafka": logging.WARNING, "faust.transport.producer": logging.INFO}

#: Numbers in a message: lines formatted before logging (f-strings) are one kind whatever their numbers.
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e-?\d+)?")


def template(record: logging.LogRecord) -> str:
    """The kind of a log line: its message template, with numbers (of a preformatted line) as N."""
    return _NUMBER.sub("N", str(record.msg))


def throttled_level(name: str) -> int | None:
    """The lowest level throttled of logger `name` (None: not a Kafka client logger)."""
    for prefix, level in THROTTLED_LOGGERS.items():
        if name == prefix or name.startswith(prefix + "."):
            return level
    return None


@dataclass
class Backoff:
    """Capped exponential backoff: `first`, twice that, ... up to `cap`; `reset()` starts over."""

    first: float = BACKOFF_FIRST
    cap: float = BACKOFF_CAP
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The pause before the next attempt."""
        delay = self._next or self.first
        self._next = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self._next = 0.0


class ClientLogThrottle(logging.Filter):
    """Lets each (logger, message template) through once per `interval` seconds, from the level
    `THROTTLED_LOGGERS` gives its logger on (WARNING for loggers not listed there).

    What it holds back is counted; `summary()` returns the counts since the last summary and resets them
    (the caller logs it about once a minute). Below that level everything passes.
    """

    def __init__(
        self, interval: float = SUMMARY_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self.held: Counter[str] = Counter()
        self._lock = threading.Lock()  # aiokafka's clients may log from Faust's consumer thread

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < (throttled_level(record.name) or logging.WARNING):
            return True
        kind = template(record)
        key = (record.name, kind)
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self.held[kind] += 1
                return False
            self._last[key] = now
        return True

    def summary(self) -> str | None:
        """ "held back N Kafka client log lines: n1 x 'template', ..." since the last call, or None."""
        with self._lock:
            held, self.held = self.held, Counter()
        if not held:
            return None
        shown = ", ".join(f"{count} x {template!r}" for template, count in held.most_common(4))
        more = len(held) - 4
        return f"held back {sum(held.values())} repeated Kafka client log lines: {shown}" + (
            f" and {more} other kinds" if more > 0 else ""
        )


def install_throttle(throttle: ClientLogThrottle) -> None:
    """Attach the throttle to every Kafka client logger (a logger's filters see only its own records)."""
    names = [name for name in logging.Logger.manager.loggerDict if throttled_level(name) is not None]
    for name in {*THROTTLED_LOGGERS, *names}:
        logging.getLogger(name).addFilter(throttle)


class KafkaWatch:
    """Whether this worker reaches a broker: probed, reported on /ready, in metrics and sparingly in logs."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[None]],
        registry: CollectorRegistry,
        throttle: ClientLogThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_backoff: Callable[[float | None], None] | None = None,
    ) -> None:
        """`probe` raises when no broker answers (it should time out by itself within seconds).

        `on_backoff` gets the current backoff after each failed probe (the Kafka clients retry no more
        often than that), and None once a broker answers again (their own default).
        """
        self.probe = probe
        self.on_backoff = on_backoff
        self.throttle = throttle
        self.clock = clock
        self.backoff = Backoff()
        #: monotonic time the current outage was noticed; None while a broker answers.
        self.down_since: float | None = None
        self.last_error = ""
        self._last_summary = clock()
        self.reachable = Gauge(
            "kpimon_kafka_reachable",
            "1 while a Kafka broker answers this worker's probes, 0 during an outage.",
            registry=registry,
        )
        self.reachable.set(1)
        self.outage_seconds = Gauge(
            "kpimon_kafka_outage_seconds",
            "Seconds since this worker last reached a Kafka broker; 0 while one answers.",
            registry=registry,
        )
        self.outage_seconds.set_function(self.outage_duration)
        self.outages = PromCounter(
            "kpimon_kafka_outages",
            "Outages noticed: times no Kafka broker answered this worker's probe.",
            registry=registry,
        )

    @property
    def down(self) -> bool:
        """Whether the last probe found no broker."""
        return self.down_since is not None

    def outage_duration(self) -> float:
        """Seconds of the current outage (0 when there is none)."""
        return 0.0 if self.down_since is None else self.clock() - self.down_since

    async def check(self) -> float:
        """Probe once, update the state; return the pause before the next probe."""
        try:
            await self.probe()
        except Exception as exc:  # any failure to get an answer is the same outage
            self.last_error = str(exc) or repr(exc)
            if self.down_since is None:
                self.down_since = self.clock()
                self._last_summary = self.down_since
                self.reachable.set(0)
                self.outages.inc()
                log.error(
                    "Kafka unreachable: %s. Retrying with backoff up to %.0f s; /ready answers 503 until a "
                    "broker answers again (a summary follows about once a minute)",
                    self.last_error,
                    BACKOFF_CAP,
                )
            pause = self.backoff.next()
            if self.on_backoff is not None:
                self.on_backoff(pause)
            return pause
        if self.down_since is not None:
            log.warning("Kafka reachable again after %.0f s; carrying on", self.outage_duration())
            self.down_since = None
            self.reachable.set(1)
            if self.on_backoff is not None:
                self.on_backoff(None)
        self.backoff.reset()
        return PROBE_INTERVAL

    def summarize(self) -> None:
        """About once a minute: the outage so far, and the client lines held back."""
        now = self.clock()
        if now - self._last_summary < SUMMARY_INTERVAL:
            return
        self._last_summary = now
        if self.down_since is not None:
            log.warning("Kafka still unreachable after %.0f s: %s", now - self.down_since, self.last_error)
        held = self.throttle.summary() if self.throttle is not None else None
        if held:
            log.warning(held)

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Probe until `stopping()` says the worker stops."""
        while not stopping():
            pause = await self.check()
            self.summarize()
            deadline = self.clock() + pause
            while not stopping() and self.clock() < deadline:
                await asyncio.sleep(min(0.5, pause))


class ShutdownWatchdog:
    """Ends the process `grace` seconds after `start()` unless it exited by itself.

    A thread, not a task: the event loop may be the thing that does not finish.
    """

    def __init__(self, grace: float = SHUTDOWN_GRACE, exit_code: int = 0) -> None:
        self.grace = grace
        self.exit_code = exit_code
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        """Arm the watchdog (once)."""
        if self._timer is not None:
            return
        self._timer = threading.Timer(self.grace, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        log.warning(
            "stopping took longer than %.0f s (Kafka unreachable?): exiting now; input not committed is "
            "read again by the partitions' next owner",
            self.grace,
        )
        logging.shutdown()
        os._exit(self.exit_code)
