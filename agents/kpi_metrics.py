"""The KPI gauges: a custom Prometheus collector over the aggregate table, for the current and previous day.

A collector instead of Gauge children: a series exists exactly while this worker owns its group and the
value is defined, so a series that moved to another worker on a rebalance simply stops being yielded (no
stale gauge, no double count), and an undefined ratio is never exported as 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.output import KpiRecord, day_number


@dataclass(frozen=True)
class KpiMetric:
    """How the records of one KPI become samples of one metric family."""

    metric: str
    help: str
    extra_label: tuple[str, str] | None = None  # (label name, label value) such as ("status", "new")


#: KPI name -> metric. The one place that names the exported KPI series (docs/metrics.md lists them).
KPI_METRICS: dict[str, KpiMetric] = {
    "active_users": KpiMetric(
        "kpimon_active_users", "Distinct active users in the window ending on the day."
    ),
    "stickiness": KpiMetric(
        "kpimon_stickiness_ratio", "DAU / MAU (active users 1d over 30d); 0 when MAU is 0."
    ),
    "lifecycle_new": KpiMetric(
        "kpimon_lifecycle_users", "Users by lifecycle status on the day.", ("status", "new")
    ),
    "lifecycle_returning": KpiMetric(
        "kpimon_lifecycle_users", "Users by lifecycle status on the day.", ("status", "returning")
    ),
    "lifecycle_resurrecting": KpiMetric(
        "kpimon_lifecycle_users", "Users by lifecycle status on the day.", ("status", "resurrecting")
    ),
    "lifecycle_dormant": KpiMetric(
        "kpimon_lifecycle_users", "Users by lifecycle status on the day.", ("status", "dormant")
    ),
    "churn_base": KpiMetric("kpimon_churn_base_users", "Users active in the window before the last W days."),
    "churned": KpiMetric("kpimon_churned_users", "Users of the churn base not active in the last W days."),
    "churn_rate": KpiMetric("kpimon_churn_ratio", "Churned users / churn base; 0 when the base is 0."),
}

BASE_LABELS = ("window", "day", "dimension", "segment")


class KpiCollector(Collector):
    """Yields the KPI gauges of the records `source` returns (the owned groups of two days)."""

    def __init__(self, source: Callable[[], tuple[int | None, Iterable[KpiRecord]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        current_day, records = self._source()
        families: dict[str, GaugeMetricFamily] = {}
        for spec in KPI_METRICS.values():
            if spec.metric not in families:
                labels = ([spec.extra_label[0]] if spec.extra_label else []) + list(BASE_LABELS)
                families[spec.metric] = GaugeMetricFamily(spec.metric, spec.help, labels=labels)
        if current_day is not None:
            for record in records:
                spec_or_none = KPI_METRICS.get(record.kpi)
                if spec_or_none is None or record.value is None:
                    continue  # an undefined value is no sample, never a 0
                spec = spec_or_none
                offset = current_day - day_number(record.day)
                if offset not in (0, 1):
                    continue
                day = "current" if offset == 0 else "previous"
                values = [record.window, day, record.dimension, record.segment]
                if spec.extra_label:
                    values.insert(0, spec.extra_label[1])
                families[spec.metric].add_metric(values, float(record.value))
        yield from families.values()
