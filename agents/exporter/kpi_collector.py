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

from kpimon.streams.catalogue import CATALOGUE
from kpimon.streams.output import KpiRecord, day_number


@dataclass(frozen=True)
class KpiMetric:
    """How the records of one KPI become samples of one metric family."""

    metric: str
    help: str
    extra_labels: tuple[tuple[str, str], ...] = ()  # e.g. (("status", "new"),)


#: KPI name -> metric, from the KPI catalogue (streams/catalogue.py; docs/metrics.md lists them).
KPI_METRICS: dict[str, KpiMetric] = {
    kpi.name: KpiMetric(kpi.metric, kpi.help, kpi.labels) for kpi in CATALOGUE
}

#: The cohort size of a retention series (catalogue KPI `retention_cohort`): exported from the
#: denominator of its retention_rate record, per offset, since the `retention_cohort` record itself (window
#: 1d, keyed by the cohort day) is not yet matured for any offset on the day it is about.
COHORT = KPI_METRICS["retention_cohort"]
#: Records keyed by their cohort day c whose gauges show the day c + k they matured on.
RETENTION_KPIS = frozenset({"retained", "retention_rate"})

#: Per-KPI companion series: the 95 % interval bounds and the configured target, labelled by `kpi`.
CI_LOW = KpiMetric("kpimon_kpi_ci_low", "Lower bound of the 95 % interval of a ratio KPI (label kpi).")
CI_HIGH = KpiMetric("kpimon_kpi_ci_high", "Upper bound of the 95 % interval of a ratio KPI (label kpi).")
TARGET = KpiMetric("kpimon_kpi_target", "Configured target of a KPI (label kpi; direction min or max).")

BASE_LABELS = ("window", "day", "dimension", "segment")

#: One sample of a record: metric name, label values in the family's order (own labels, then BASE_LABELS),
#: value.
Sample = tuple[str, tuple[str, ...], float]


#: The companion families' own labels (the KPI families' are their specs' extra labels).
COMPANION_LABELS = {CI_LOW.metric: ("kpi",), CI_HIGH.metric: ("kpi",), TARGET.metric: ("kpi", "direction")}


def family_labels(metric: str) -> tuple[str, ...]:
    """The label names of a KPI metric family, in the order of `record_samples`' label values."""
    own = COMPANION_LABELS.get(metric)
    if own is None:
        spec = next(spec for spec in KPI_METRICS.values() if spec.metric == metric)
        own = tuple(name for name, _ in spec.extra_labels)
    return (*own, *BASE_LABELS)


def record_samples(record: KpiRecord, day: str) -> Iterator[Sample]:
    """The gauge samples of one record, with `day` ("current" or "previous") as its day label.

    An undefined value is no sample, never a 0; KPIs without a metric give none.
    """
    spec = KPI_METRICS.get(record.kpi)
    if spec is None:
        return
    base = (record.window, day, record.dimension, record.segment)
    if record.value is not None:
        yield spec.metric, (*(value for _, value in spec.extra_labels), *base), float(record.value)
    if record.kpi == "retention_rate" and record.denominator is not None:
        yield COHORT.metric, base, float(record.denominator)  # the cohort's size, per offset
    if record.ci_low is not None and record.ci_high is not None:
        yield CI_LOW.metric, (record.kpi, *base), record.ci_low
        yield CI_HIGH.metric, (record.kpi, *base), record.ci_high
    if record.target is not None and record.target_direction is not None:
        yield TARGET.metric, (record.kpi, record.target_direction, *base), record.target


def shown_day(record: KpiRecord) -> int | None:
    """The day (number) a record's series show it on; None for a record without series of its own.

    Most records show their own day. A retention record of cohort day c and offset k (window `{k}d`)
    shows the day c + k its cohort matured on.
    """
    if record.kpi == "retention_cohort":
        return None  # exported per offset from the denominators of retention_rate (COHORT)
    day = day_number(record.day)
    if record.kpi in RETENTION_KPIS:
        day += int(record.window.removesuffix("d"))
    return day


def gauge_day(record: KpiRecord, current_day: int) -> str | None:
    """The `day` label of a record's series: "current", "previous" or None (not exported); for retention
    `current` is the newest matured cohort of its offset."""
    day = shown_day(record)
    if day is None:
        return None
    offset = current_day - day
    return "current" if offset == 0 else "previous" if offset == 1 else None


class KpiCollector(Collector):
    """Yields the KPI gauges of the records `source` returns (the owned groups of two days)."""

    def __init__(self, source: Callable[[], tuple[int | None, Iterable[KpiRecord]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        current_day, records = self._source()
        families: dict[str, GaugeMetricFamily] = {}

        def family(spec: KpiMetric, extra: tuple[str, ...]) -> GaugeMetricFamily:
            found = families.get(spec.metric)
            if found is None:
                found = families[spec.metric] = GaugeMetricFamily(
                    spec.metric, spec.help, labels=[*extra, *BASE_LABELS]
                )
            return found

        for spec in (*KPI_METRICS.values(), CI_LOW, CI_HIGH, TARGET):
            family(spec, family_labels(spec.metric)[: -len(BASE_LABELS)])
        if current_day is None:
            yield from families.values()
            return
        for record in records:
            day = gauge_day(record, current_day)
            if day is None:
                continue
            for metric, labels, value in record_samples(record, day):
                families[metric].add_metric(list(labels), value)
        yield from families.values()
