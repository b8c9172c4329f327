"""Bound segment dimensions: personal data and values beyond the first N fold into `other`.

A segment value becomes a metric label and part of kpimon-kpis keys, so two rules apply before a value is
kept (docs/security.md, "Segment values"):

1. A value that looks like personal data folds into `other`, always: an e-mail address (`PERSONAL_EMAIL`,
   searched anywhere in the value), or a match of the configured `segment_personal_pattern`. The rule looks
   at the value alone, so it is deterministic; such a value takes no place among the N kept ones.
2. A worker keeps the first N other distinct values it sees per dimension. That order depends on arrival,
   so with more than N values in a dimension the folded set can differ between workers (and from `kpimon
   reference`, which keeps the first N in file order); the cap is a guard against a label explosion, and a
   dimension that needs more values should have its cap raised (KPIMON_MAX_SEGMENT_VALUES).

`kpimon reference` applies the same two rules in SQL (reference/sql/10_prepare.sql); the e-mail pattern is
written there again for DuckDB's regular expressions, and uses only what both engines read the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable

OTHER = "other"
UNKNOWN = "unknown"
#: Something@something.something with no whitespace or second `@` in the parts: an e-mail address, searched
#: anywhere in a value. Whitespace is spelled out (not `\s`, which means more in Python than in RE2).
PERSONAL_EMAIL = r"[^@ \t\n\r\f\v]+@[^@ \t\n\r\f\v]+\.[^@ \t\n\r\f\v]+"
#: Why a value was folded: the `reason` label of kpimon_segment_values_folded_total.
PERSONAL, CAP = "personal", "cap"
#: The dimensions whose values are folded (the others have fixed values).
FOLDED_DIMENSIONS = ("platform", "plan")


_EMAIL = re.compile(PERSONAL_EMAIL)


def personal_matcher(pattern: str = "") -> Callable[[str], bool]:
    """Whether a value looks like personal data: an e-mail address, or a match of `pattern` (if any).

    The two stay separate expressions (a global flag such as `(?i)` must start its own pattern).
    """
    try:
        custom = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise ValueError(f"segment_personal_pattern is not a valid regular expression: {exc}") from None

    def personal(value: str) -> bool:
        return _EMAIL.search(value) is not None or (custom is not None and custom.search(value) is not None)

    return personal


class SegmentFolder:
    """Per dimension, the values kept so far; `fold` maps a value to itself or to `other`.

    `folded` counts the values folded, by (dimension, reason): `personal` or `cap`.
    """

    def __init__(self, max_values: int, personal_pattern: str = "") -> None:
        if max_values < 1:
            raise ValueError(f"max_segment_values must be >= 1, got {max_values}")
        self.max_values = max_values
        self._personal = personal_matcher(personal_pattern)
        self._kept: dict[str, set[str]] = {}
        self.folded: dict[tuple[str, str], int] = {}

    def fold(self, dimension: str, value: str | None) -> str | None:
        """The value to count `value` under (None stays None: it means `unknown`)."""
        if value is None or value in (UNKNOWN, OTHER):
            return value
        kept = self._kept.get(dimension)
        if kept is None:
            kept = self._kept[dimension] = set()
        if value in kept:  # the common case: a kept value was checked when it was added
            return value
        if self._personal(value):
            self._count(dimension, PERSONAL)
            return OTHER
        if len(kept) < self.max_values:
            kept.add(value)
            return value
        self._count(dimension, CAP)
        return OTHER

    def personal(self, value: str) -> bool:
        """Whether `value` looks like personal data (it always folds into `other`); changes nothing."""
        return self._personal(value)

    def kept(self, dimension: str) -> frozenset[str]:
        """The values of `dimension` kept so far (a copy): `fold` maps each of them to itself."""
        return frozenset(self._kept.get(dimension, ()))

    def _count(self, dimension: str, reason: str) -> None:
        self.folded[dimension, reason] = self.folded.get((dimension, reason), 0) + 1
