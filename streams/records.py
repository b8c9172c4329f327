"""From the global counters of one segment-day to its output records (counts and derived ratios).

Pure: the aggregate agent sums the per-partition counters of a group and calls `group_records`.
"""

from __future__ import annotations

from collections.abc import Mapping

from streams import engagement
from streams.output import KpiRecord, day_name


def counter_name(kpi: str, window: str) -> str:
    """`kpi/window`: how counters are named in partials and aggregates."""
    return f"{kpi}/{window}"


ENGAGEMENT_COUNTERS: tuple[str, ...] = tuple(counter_name(k, w) for k, w in engagement.COUNTERS)


def group_records(
    dimension: str, segment: str, day: int, counts: Mapping[str, int], updated_at: str | None = None
) -> list[KpiRecord]:
    """Every record of (dimension, segment, day) given the group's global counters; [] when none exists."""
    records: list[KpiRecord] = []
    name = day_name(day)

    def add(
        kpi: str, window: str, value: float | int | None, num: int | None = None, den: int | None = None
    ) -> None:
        records.append(
            KpiRecord(
                kpi=kpi, window=window, dimension=dimension, segment=segment, day=name,
                value=value, numerator=num, denominator=den, updated_at=updated_at,
            )
        )  # fmt: skip

    def get(kpi: str, window: str) -> int:
        return counts.get(counter_name(kpi, window), 0)

    if engagement.record_exists(get("active_users", "30d"), get("churn_base", "30d")):
        for kpi, window in engagement.COUNTERS:
            add(kpi, window, get(kpi, window))
        dau, mau = get("active_users", "1d"), get("active_users", "30d")
        add("stickiness", "30d", engagement.stickiness(dau, mau), dau, mau)
        for window in ("7d", "30d"):
            churned, base = get("churned", window), get("churn_base", window)
            add("churn_rate", window, engagement.churn_rate(churned, base), churned, base)
    return records
