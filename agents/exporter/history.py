"""The history in kpimon-kpis as Prometheus samples stamped with their day (OpenMetrics), for a backfill.

A live worker exports each KPI of the current and the previous day as gauges, and Prometheus's recording
rules turn them into the `dimension_segment:<metric>:max` series every dashboard reads. A replayed or
simulated history never went through a scrape, so Prometheus has none of it. This module writes those
recorded series for past days: during day D, `day="current"` holds D's value and `day="previous"` D-1's,
one sample every `step` seconds, exactly as the rules would have recorded them had a worker been scraped
then (with each day's final value). `promtool tsdb create-blocks-from openmetrics` turns the text into
TSDB blocks (docs/metrics.md, "History in Prometheus"), best one file per day (`by_day`).

Pure: records in, lines out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kpimon.agents.exporter.kpi_collector import TARGET, family_labels, record_samples, shown_day
from kpimon.streams.output import KpiRecord

SECONDS_PER_DAY = 86_400

#: family -> label values -> {day the sample is stamped on: value}
Series = dict[str, dict[tuple[str, ...], dict[int, float]]]


def recorded_name(metric: str) -> str:
    """The recording rule's series of a KPI gauge (monitoring/rules.py `kpi()`), what dashboards query."""
    return f"dimension_segment:{metric}:max"


def history_series(records: Iterable[KpiRecord], first: int, last: int) -> Series:
    """The recorded series of the records of days `first`..`last` (day numbers), stamped on those days.

    A record of day D gives `day="current"` samples on D and `day="previous"` samples on D + 1 (if that is
    still at most `last`). Targets are configuration, not history: they are left out.
    """
    series: Series = {}
    for record in records:
        day = shown_day(record)  # retention: the day its cohort matured
        if day is None:
            continue
        for label, stamp in (("current", day), ("previous", day + 1)):
            if not first <= stamp <= last:
                continue
            for metric, labels, value in record_samples(record, label):
                if metric == TARGET.metric:
                    continue
                series.setdefault(metric, {}).setdefault(labels, {})[stamp] = value
    return series


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def openmetrics_lines(series: Series, step: int) -> Iterator[str]:
    """OpenMetrics text of `series`: each value held over its day, one sample every `step` seconds.

    A family's series are together, each series' samples in time order, `# EOF` last, as the format and
    promtool's importer require. Labels are sorted by name; values use repr (exact round trip).
    """
    if step <= 0 or SECONDS_PER_DAY % step:
        raise ValueError(f"step must divide a day (86400 s) evenly, got {step}")
    for metric in sorted(series):
        name = recorded_name(metric)
        names = family_labels(metric)
        yield f"# TYPE {name} gauge"
        for values, by_day in sorted(series[metric].items()):
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(zip(names, values, strict=True)))
            for day in sorted(by_day):
                value = repr(by_day[day])
                start = day * SECONDS_PER_DAY
                for stamp in range(start, start + SECONDS_PER_DAY, step):
                    yield f"{name}{{{labels}}} {value} {stamp}"
    yield "# EOF"


def by_day(series: Series) -> dict[int, Series]:
    """`series` split by the day their samples are stamped on.

    promtool writes one block per 2 hours and reads its whole input once per block, so one file of a
    month takes 360 passes over a month of samples; a file per day takes 12 passes over one day's.
    """
    days: dict[int, Series] = {}
    for metric, family in series.items():
        for labels, values in family.items():
            for day, value in values.items():
                days.setdefault(day, {}).setdefault(metric, {}).setdefault(labels, {})[day] = value
    return days


def sample_count(series: Series, step: int) -> int:
    """How many samples `openmetrics_lines` writes."""
    per_day = SECONDS_PER_DAY // step
    return per_day * sum(len(by_day) for family in series.values() for by_day in family.values())
