"""Retention cohort math: N-day retention at offsets 1, 7 and 30 days, as counters of the activity day.

docs/definitions.md, "Retention cohorts": the cohort of day c in segment s is the users new and active in s
on c (`lifecycle_new`); `retained` for offset k counts those of them active in s on c + k exactly.

The stream keeps these counters on the day the retention is *observed*, d = c + k, not on the cohort day:
a click on day d changes retention of the cohorts d - 1, d - 7 and d - 30, and keeping the counter on d
means it changes only on days an accepted event can still touch (days older than the lateness bound are
dropped from memory). The record is published under its cohort day c = d - k. Per segment and offset k,
three counters of day d (bitmaps over days, as in streams.engagement):

- `matured_cohort` k: users new and active on d - k, i.e. the cohort of d - k;
- `retained` k: users of that cohort active on d;
- `cohort_present` k: users active in [d - k - 59, d - k]: the cohort day's engagement record exists (it
  decides whether the retention records of a cohort without users exist at all).

The last looks back k + 59 days: the bitmaps keep HORIZON = 89 days below the oldest day an accepted event
can touch (streams.engagement.expiry_cutoff), so a rebuild from the states alone stays exact.
"""

from __future__ import annotations

from kpimon.streams.activity import spread
from kpimon.streams.segments import SegmentKey

#: The offsets k (days after the cohort day); the window of a retention record is `{k}d`.
OFFSETS: tuple[int, ...] = (1, 7, 30)
#: The dimensions retention is cut by (not stage: a cohort is onboarding by definition).
DIMENSIONS: frozenset[str] = frozenset({"all", "platform", "plan"})
#: A cohort day's engagement record exists when someone was active in [c - 59, c]: this many days.
PRESENT_DAYS = 60
#: How many days before d a retention counter of day d looks at (cohort_present 30d: d - 30 - 59).
HORIZON = max(OFFSETS) + PRESENT_DAYS - 1

COHORT = "matured_cohort"
RETAINED = "retained"
PRESENT = "cohort_present"


def window(offset: int) -> str:
    """The window label of offset k: `1d`, `7d`, `30d`."""
    return f"{offset}d"


def offset_of(window_label: str) -> int:
    """The offset k of a retention window label (`7d` -> 7)."""
    return int(window_label.removesuffix("d"))


#: Every retention counter (kpi, window), in the order `contribution` returns their bitmaps.
COUNTERS: tuple[tuple[str, str], ...] = tuple(
    (name, window(k)) for k in OFFSETS for name in (COHORT, RETAINED, PRESENT)
)


def applies(segment: SegmentKey) -> bool:
    """Whether a segment has retention counters (dimensions all, platform and plan)."""
    return segment[0] in DIMENSIONS


def contribution(active: int, new: int, present: int | None = None) -> tuple[int, ...]:
    """Per counter of COUNTERS, the bitmap of days d on which a user with these day sets counts in it.

    `active` is A of one segment, `new` the user's N (streams.engagement.new_days), both relative to the
    same base; `present` may pass `spread(active, PRESENT_DAYS)` when the caller has it.
    """
    if present is None:
        present = spread(active, PRESENT_DAYS)
    cohort = active & new
    out: list[int] = []
    for k in OFFSETS:
        matured = cohort << k  # day d holds the cohort of d - k
        out.extend((matured, matured & active, present << k))
    return tuple(out)


def retention_rate(retained: int, cohort: int) -> float | None:
    """retained / cohort; None (undefined) when the cohort is empty."""
    return retained / cohort if cohort else None
