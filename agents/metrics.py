"""Pipeline-health metrics of a worker. The registry is injected, so tests build their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from streams.validation import Reason

# Processing time minus event time: from sub-second live traffic to a week-old backfill.
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)

OUTCOMES = ("accepted", "rejected", "duplicate")


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
        self.event_delay = Histogram(
            "kpimon_event_delay_seconds",
            "Processing time minus event time of accepted events.",
            ["topic"],
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        # Pre-create the series so a rate() over them starts at zero instead of appearing later.
        for topic in topics:
            for outcome in OUTCOMES:
                self.events.labels(topic=topic, outcome=outcome)

    def accepted(self, topic: str, delay_seconds: float) -> None:
        """Count an accepted event and observe its delay."""
        self.events.labels(topic=topic, outcome="accepted").inc()
        self.event_delay.labels(topic=topic).observe(max(delay_seconds, 0.0))

    def duplicate(self, topic: str) -> None:
        """Count a valid event that was seen before (its event_id) and so changes nothing."""
        self.events.labels(topic=topic, outcome="duplicate").inc()

    def rejected(self, topic: str, reason: Reason) -> None:
        """Count a rejected message (it goes to the dead-letter topic)."""
        self.events.labels(topic=topic, outcome="rejected").inc()
        self.dead_letters.labels(topic=topic, reason=reason.value).inc()
