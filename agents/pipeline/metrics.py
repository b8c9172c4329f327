"""Pipeline-health metrics of a worker. The registry is injected, so tests build their own."""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kpimon.streams.validation import Reason

# Processing time minus event time: from sub-second live traffic to a week-old backfill.
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)

OUTCOMES = ("accepted", "rejected", "duplicate")

# How long the source reader waited for a flush or publication: tens of milliseconds by design (a slice),
# seconds when a job holds it too long.
HELD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: Why the compiled core left a batch to the Python engine: `panic` (a Rust panic it caught, `CorePanic`) or
#: `error` (any other exception it raised before writing anything).
FALLBACK_REASONS = ("panic", "error")


class PipelineMetrics:
    """Counters and histograms describing what a worker did with its input."""

    def __init__(self, registry: CollectorRegistry, topics: tuple[str, ...] = ()) -> None:
        self.events = Counter(
            "kpimon_events",
            "Input messages processed, by source topic and outcome (accepted, rejected, duplicate).",
            ["topic", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "kpimon_dead_letters",
            "Rejected messages written to the dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.produce_errors = Counter(
            "kpimon_produce_errors",
            "Messages this worker failed to write to Kafka (after the producer's retries), by topic.",
            ["topic"],
            registry=registry,
        )
        self.rebalances = Counter(
            "kpimon_rebalances",
            "Consumer-group rebalances this worker took part in (each one pauses its processing).",
            registry=registry,
        )
        self.reader_held_seconds = Histogram(
            "kpimon_reader_held_seconds",
            "Each wait of the source reader for a partial flush or a KPI publication before its next batch.",
            buckets=HELD_BUCKETS,
            registry=registry,
        )
        self.reader_held_max = Gauge(
            "kpimon_reader_held_max_seconds",
            "The longest single wait of the source reader for a flush or publication since the start.",
            registry=registry,
        )
        self._held_max = 0.0
        self.native_core_fallbacks = Counter(
            "kpimon_native_core_fallbacks",
            "Batches the compiled core failed on before writing anything, processed by the Python engine"
            " instead, by reason (panic, error).",
            ["reason"],
            registry=registry,
        )
        #: Rejections by (source topic, reason) since start: the worker's periodic log summary reads it.
        self.rejections: Tally[tuple[str, str]] = Tally()
        self.event_delay = DelayHistogram()
        registry.register(self.event_delay)
        # Pre-create the series so a rate() over them starts at zero instead of appearing later.
        for topic in topics:
            for outcome in OUTCOMES:
                self.events.labels(topic=topic, outcome=outcome)

    def accepted_many(self, topic: str, delays_seconds: list[float]) -> None:
        """Count a batch of accepted events and observe their delays."""
        self.events.labels(topic=topic, outcome="accepted").inc(len(delays_seconds))
        self.event_delay.observe_many(topic, delays_seconds)

    def reader_held(self, seconds: float) -> None:
        """Observe one wait of the source reader for a flush or publication job."""
        self.reader_held_seconds.observe(seconds)
        if seconds > self._held_max:
            self._held_max = seconds
            self.reader_held_max.set(seconds)

    def native_core_running(self) -> None:
        """Create the fallback series at 0: the worker runs the compiled core, so a fallback can happen and
        `increase()` must see it from the first one (a worker on the Python engine has none)."""
        for reason in FALLBACK_REASONS:
            self.native_core_fallbacks.labels(reason=reason)

    def native_core_fallback(self, reason: str) -> None:
        """Count a batch the compiled core failed on and left to the Python engine."""
        self.native_core_fallbacks.labels(reason=reason).inc()

    def duplicate(self, topic: str, count: int = 1) -> None:
        """Count valid events that were seen before (their event_id) and so change nothing."""
        self.events.labels(topic=topic, outcome="duplicate").inc(count)

    def produce_error(self, topic: str, count: int = 1) -> None:
        """Count `count` messages that could not be written to `topic`."""
        self.produce_errors.labels(topic=topic).inc(count)

    def rejected(self, topic: str, reason: Reason) -> None:
        """Count a rejected message (it goes to the dead-letter topic)."""
        self.events.labels(topic=topic, outcome="rejected").inc()
        self.dead_letters.labels(topic=topic, reason=reason.value).inc()
        self.rejections[(topic, reason.value)] += 1


def rejection_summary(
    before: Mapping[tuple[str, str], int], now: Mapping[tuple[str, str], int], max_lateness_days: int
) -> str | None:
    """One log line of the rejections between two tallies, by reason, most frequent first (None: none).

    A too_late rejection names the setting that keeps such events, since it usually means a backfill
    older than the lateness bound rather than bad input.
    """
    by_reason: Tally[str] = Tally()
    topics: dict[str, set[str]] = {}
    for (topic, reason), count in now.items():
        delta = count - before.get((topic, reason), 0)
        if delta > 0:
            by_reason[reason] += delta
            topics.setdefault(reason, set()).add(topic)
    if not by_reason:
        return None
    parts = [
        f"{reason} {count:,} ({', '.join(sorted(topics[reason]))})"
        for reason, count in sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
    ]
    line = f"rejected {by_reason.total():,} messages to the dead-letter topic: " + "; ".join(parts)
    if "too_late" in by_reason:
        line += (
            f". too_late: event day older than the lateness bound ({max_lateness_days} days);"
            " raise --max-lateness-days to keep older events"
        )
    return line + ". See them with `kpimon dead-letters`."


class DelayHistogram(Collector):
    """`kpimon_event_delay_seconds{topic}`: a histogram that takes a whole batch of observations at once.

    prometheus_client's Histogram takes one value per call, under a lock; at tens of thousands of events
    per second that costs as much as validating them. Only the worker's batch loop writes it.
    """

    def __init__(self, buckets: tuple[float, ...] = DELAY_BUCKETS) -> None:
        self.bounds = list(buckets)
        self._buckets: dict[str, list[int]] = {}  # per topic: count per bucket, +Inf last
        self._sums: dict[str, float] = {}

    def observe_many(self, topic: str, values: list[float]) -> None:
        """Observe `values` (negative ones count as 0: clocks of producers and workers differ)."""
        counts = self._buckets.get(topic)
        if counts is None:
            counts = self._buckets[topic] = [0] * (len(self.bounds) + 1)
            self._sums[topic] = 0.0
        bounds, total = self.bounds, 0.0
        for value in values:
            if value < 0:
                value = 0.0
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        self._sums[topic] += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "kpimon_event_delay_seconds",
            "Processing time minus event time of accepted events.",
            labels=["topic"],
        )
        for topic, counts in sorted(self._buckets.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            family.add_metric([topic], buckets, self._sums[topic])
        yield family
