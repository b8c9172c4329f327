"""Bound the cardinality of segment dimensions: at most N values each, further ones fold into `other`.

A worker keeps the first N distinct values it sees per dimension. That order depends on arrival, so with
more than N values in a dimension the folded set can differ between workers (and from `kpimon
reference`, which keeps the first N in file order); the cap is a guard against a label explosion, and a
dimension that needs more values should have its cap raised (KPIMON_MAX_SEGMENT_VALUES).
"""

from __future__ import annotations

OTHER = "other"
UNKNOWN = "unknown"


class SegmentFolder:
    """Per dimension, the values kept so far; `fold` maps a value to itself or to `other`."""

    def __init__(self, max_values: int) -> None:
        if max_values < 1:
            raise ValueError(f"max_segment_values must be >= 1, got {max_values}")
        self.max_values = max_values
        self._kept: dict[str, set[str]] = {}

    def fold(self, dimension: str, value: str | None) -> str | None:
        """The value to count `value` under (None stays None: it means `unknown`)."""
        if value is None or value in (UNKNOWN, OTHER):
            return value
        kept = self._kept.get(dimension)
        if kept is None:
            kept = self._kept[dimension] = set()
        if value in kept:
            return value
        if len(kept) < self.max_values:
            kept.add(value)
            return value
        return OTHER
