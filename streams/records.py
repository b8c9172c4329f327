"""From the global counters of one segment-day to its output records (counts, ratios, intervals, targets).

Pure: the aggregate agent sums the per-partition counters of a group and calls `group_records`.
"""

from __future__ import annotations

from collections.abc import Mapping

from kpimon.streams import crossed, engagement, retention, satisfaction
from kpimon.streams.output import KpiRecord, day_name
from kpimon.streams.targets import Targets
from kpimon.streams.uncertainty import nps_interval, wilson

Value = float | int | None


def counter_name(kpi: str, window: str) -> str:
    """`kpi/window`: how counters are named in partials and aggregates."""
    return f"{kpi}/{window}"


class _Builder:
    def __init__(
        self,
        dimension: str,
        segment: str,
        day: int,
        counts: Mapping[str, int],
        updated_at: str | None,
        targets: Targets,
    ) -> None:
        self.records: list[KpiRecord] = []
        self.dimension, self.segment, self.day = dimension, segment, day_name(day)
        self.counts, self.updated_at, self.targets = counts, updated_at, targets

    def get(self, kpi: str, window: str) -> int:
        return self.counts.get(counter_name(kpi, window), 0)

    def add(
        self,
        kpi: str,
        window: str,
        value: Value,
        num: int | None = None,
        den: int | None = None,
        interval: tuple[float, float] | tuple[None, None] | None = None,
        *,
        day: str | None = None,
        dimension: str | None = None,
        segment: str | None = None,
    ) -> None:
        record = KpiRecord(
            kpi=kpi,
            window=window,
            dimension=self.dimension if dimension is None else dimension,
            segment=self.segment if segment is None else segment,
            day=self.day if day is None else day,
            value=value,
            numerator=num,
            denominator=den,
            updated_at=self.updated_at,
        )
        if interval is not None:
            record.ci_low, record.ci_high = interval
        target = self.targets.get((kpi, window))
        if target is not None:
            record.target, record.target_direction = target.value, target.direction
            record.off_target, record.breach = target.judge(value, den, interval)
        self.records.append(record)


def group_records(
    dimension: str,
    segment: str,
    day: int,
    counts: Mapping[str, int],
    updated_at: str | None = None,
    targets: Targets | None = None,
) -> list[KpiRecord]:
    """Every record of (dimension, segment, day) given the group's global counters; [] when none exists."""
    b = _Builder(dimension, segment, day, counts, updated_at, targets or {})
    if engagement.record_exists(b.get("active_users", "30d"), b.get("churn_base", "30d")):
        _engagement(b)
        if dimension in retention.DIMENSIONS:
            b.add("retention_cohort", "1d", b.get("lifecycle_new", "1d"))
        if (dimension, segment) == ("all", "all"):
            _nps_group_churn(b)
    if dimension in retention.DIMENSIONS:
        _retention(b, day)
    present = crossed.ANY_LEVEL if dimension == crossed.ENGAGEMENT else ("survey_events", "30d")
    if b.get(*present) > 0:
        for window, _ in satisfaction.WINDOWS:
            _satisfaction(b, window)
    return b.records


def _engagement(b: _Builder) -> None:
    for kpi, window in engagement.COUNTERS:
        b.add(kpi, window, b.get(kpi, window))
    dau, mau = b.get("active_users", "1d"), b.get("active_users", "30d")
    b.add("stickiness", "30d", engagement.stickiness(dau, mau), dau, mau)
    for window in ("7d", "30d"):
        churned, base = b.get("churned", window), b.get("churn_base", window)
        b.add(
            "churn_rate", window, engagement.churn_rate(churned, base), churned, base, wilson(churned, base)
        )


def _retention(b: _Builder, day: int) -> None:
    """Retention of the cohorts d - k, from the counters of the day d they are observed on (their records
    carry the cohort day). A cohort day's records exist when its engagement record does."""
    for k in retention.OFFSETS:
        w = retention.window(k)
        if b.get(retention.PRESENT, w) <= 0:
            continue
        cohort, kept = b.get(retention.COHORT, w), b.get(retention.RETAINED, w)
        cohort_day = day_name(day - k)
        b.add("retained", w, kept, day=cohort_day)
        b.add(
            "retention_rate",
            w,
            retention.retention_rate(kept, cohort),
            kept,
            cohort,
            wilson(kept, cohort),
            day=cohort_day,
        )


def _nps_group_churn(b: _Builder) -> None:
    """Churn by the NPS group of the base users (dimension nps_group); `none` is the rest of the base."""
    for w, _ in crossed.CHURN_WINDOWS:
        rest_base, rest_churned = b.get("churn_base", w), b.get("churned", w)
        for group in (*crossed.GROUPS, crossed.NO_GROUP):
            if group == crossed.NO_GROUP:
                base, churned = rest_base, rest_churned
            else:
                base, churned = b.get(f"churn_base:{group}", w), b.get(f"churned:{group}", w)
                rest_base, rest_churned = rest_base - base, rest_churned - churned
            where = crossed.NPS_GROUP
            b.add("churn_base", w, base, dimension=where, segment=group)
            b.add("churned", w, churned, dimension=where, segment=group)
            b.add(
                "churn_rate",
                w,
                engagement.churn_rate(churned, base),
                churned,
                base,
                wilson(churned, base),
                dimension=where,
                segment=group,
            )


def _satisfaction(b: _Builder, w: str) -> None:
    responses, promoters, detractors = (
        b.get("nps_responses", w),
        b.get("nps_promoters", w),
        b.get("nps_detractors", w),
    )
    for kpi in ("nps_responses", "nps_promoters", "nps_passives", "nps_detractors"):
        b.add(kpi, w, b.get(kpi, w))
    b.add(
        "nps",
        w,
        satisfaction.nps_score(promoters, detractors, responses),
        promoters - detractors,
        responses,
        nps_interval(promoters, detractors, responses),
    )
    answers, satisfied, score_sum = (
        b.get("csat_responses", w),
        b.get("csat_satisfied", w),
        b.get("csat_score_sum", w),
    )
    b.add("csat_responses", w, answers)
    b.add("csat_satisfied", w, satisfied)
    b.add("csat", w, satisfaction.share(satisfied, answers), satisfied, answers, wilson(satisfied, answers))
    b.add("csat_mean", w, satisfaction.share(score_sum, answers), score_sum, answers)
    for kind, kind_responses in (("nps", responses), ("csat", answers)):
        shown = b.get(f"{kind}_shown", w)
        b.add(f"{kind}_shown", w, shown)
        b.add(f"{kind}_dismissed", w, b.get(f"{kind}_dismissed", w))
        b.add(
            f"{kind}_response_rate",
            w,
            satisfaction.share(kind_responses, shown),
            kind_responses,
            shown,
            wilson(kind_responses, shown),
        )
