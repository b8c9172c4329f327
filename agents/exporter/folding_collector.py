"""`kpimon_segment_values_folded_total`: how many segment values the worker counted as `other`, and why."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from kpimon.agents.pipeline.folding import CAP, FOLDED_DIMENSIONS, PERSONAL, SegmentFolder


class FoldedCollector(Collector):
    """`kpimon_segment_values_folded_total{dimension, reason}` from a folder's counts."""

    def __init__(self, folder: SegmentFolder) -> None:
        self.folder = folder

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "kpimon_segment_values_folded",
            "Segment values counted as `other`: personal data (e-mail or segment_personal_pattern) or "
            "beyond max_segment_values.",
            labels=["dimension", "reason"],
        )
        # The capped dimensions' series exist from the start, so a rate() over them starts at zero.
        counts = {(d, r): 0 for d in FOLDED_DIMENSIONS for r in (PERSONAL, CAP)} | self.folder.folded
        for (dimension, reason), count in sorted(counts.items()):
            family.add_metric([dimension, reason], count)
        yield family
