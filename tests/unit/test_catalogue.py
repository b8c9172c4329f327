"""Every list of KPIs agrees with the KPI catalogue (streams/catalogue.py): none names a KPI it lacks or
misses one it has."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from kpimon.agents.devtools.top_view import HEADLINES
from kpimon.agents.exporter.kpi_collector import KPI_METRICS
from kpimon.streams.catalogue import CATALOGUE, KPIS, gauges, windows
from kpimon.streams.output import OUTPUT_KPIS
from kpimon.streams.records import counter_name, group_records
from kpimon.streams.targets import TARGETABLE
from monitoring.config import DEFAULT
from monitoring.dashboards import panel_queries
from monitoring.rules import CI_KPIS, KPI_GAUGES, alerts, recording_rules

ROOT = Path(__file__).resolve().parents[2]
NAMES = {kpi.name for kpi in CATALOGUE}
METRICS = {kpi.metric for kpi in CATALOGUE}


class Every(dict[str, int]):
    """Counters that are all positive: a group for which every KPI has a record."""

    def get(self, key: str, default: int | None = None) -> int:  # type: ignore[override]
        return 7 if key.startswith(("survey_events", "churn_base", "active_users")) else 3


def test_the_catalogue_names_each_kpi_once() -> None:
    assert len(CATALOGUE) == len(KPIS)
    assert all(kpi.windows and kpi.metric.startswith("kpimon_") for kpi in CATALOGUE)


def test_the_output_topic_has_exactly_the_catalogues_kpis_and_windows() -> None:
    assert windows() == OUTPUT_KPIS


def test_records_are_built_for_exactly_the_catalogues_kpis_and_windows() -> None:
    records = group_records("all", "all", 20_000, Every())
    built = {(record.kpi, record.window) for record in records}
    assert built == {(kpi.name, window) for kpi in CATALOGUE for window in kpi.windows}
    assert {r.kpi for r in records if r.ci_low is not None} == {k.name for k in CATALOGUE if k.interval}
    assert counter_name("nps", "7d") == "nps/7d"


def test_every_kpi_is_exported_as_its_gauge() -> None:
    assert set(KPI_METRICS) == NAMES
    for kpi in CATALOGUE:
        metric = KPI_METRICS[kpi.name]
        assert (metric.metric, metric.extra_labels) == (kpi.metric, kpi.labels)
    # Two KPIs share a gauge only when their labels tell them apart.
    labelled = [(kpi.metric, kpi.labels) for kpi in CATALOGUE]
    assert len(set(labelled)) == len(labelled)


def test_targets_and_intervals_name_only_catalogue_kpis() -> None:
    assert set(TARGETABLE) <= NAMES and TARGETABLE
    assert all(TARGETABLE[name] == KPIS[name].windows for name in TARGETABLE)
    assert set(CI_KPIS.values()) <= {kpi.name for kpi in CATALOGUE if kpi.interval}


def test_rules_and_dashboards_cover_every_gauge_and_no_other_kpi_gauge() -> None:
    assert gauges() == KPI_GAUGES
    exprs = [rule.expr for group in recording_rules(DEFAULT) for rule in group.rules]
    exprs += [alert.expr for alert in alerts(DEFAULT)]
    exprs += [query.expr for query in panel_queries(DEFAULT)]
    used = {name for expr in exprs for name in re.findall(r"\bkpimon_[a-z_]+", expr)}
    assert used >= METRICS, f"gauges on no rule or dashboard: {sorted(METRICS - used)}"
    kpi_like = {name for name in used if name.endswith(("_ratio", "_score", "_users", "_responses", "_mean"))}
    pipeline = {name for name in kpi_like if name.startswith(("kpimon_dead_letter", "kpimon_events"))}
    assert kpi_like - pipeline <= METRICS, sorted(kpi_like - pipeline - METRICS)


def test_kpimon_top_shows_every_titled_kpi_in_each_window() -> None:
    shown = {(h.kpi, h.window) for h in HEADLINES}
    assert shown == {(k.name, w) for k in CATALOGUE if k.title is not None for w in k.windows}
    assert all(h.kind == KPIS[h.kpi].unit for h in HEADLINES)


def _documented(path: str, names: Mapping[str, object] | set[str]) -> set[str]:
    text = (ROOT / path).read_text()
    return {name for name in names if f"`{name}`" not in text and name not in text}


def test_the_docs_describe_every_kpi_and_gauge() -> None:
    assert _documented("docs/output.md", NAMES) == set()
    assert _documented("docs/definitions.md", {k.name for k in CATALOGUE if k.title}) == set()
    assert _documented("docs/metrics.md", METRICS) == set()
