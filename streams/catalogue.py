"""The KPI catalogue: every KPI kpimon publishes, once, with what each consumer of the list needs.

The output topic's KPIs and windows (`output.OUTPUT_KPIS`), the KPIs that take a target
(`targets.TARGETABLE`), the Prometheus gauges (agents/exporter/kpi_collector.py), the recording and alert
rules (monitoring/rules.py), the dashboards and `kpimon top` (agents/devtools/top_view.py) derive their
lists from `CATALOGUE`; tests/unit/test_catalogue.py fails when one of them names a KPI the catalogue
lacks or misses one it has. The math of each KPI is in `engagement`, `satisfaction` and `records`; the
definitions users read are in docs/definitions.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: How a value reads: a count of users or events, a ratio 0..1, or a score (NPS -100..100, CSAT mean 1..5).
Unit = Literal["count", "ratio", "score"]
Family = Literal["engagement", "satisfaction"]

ROLLING = ("7d", "30d")
#: Retention offsets k as windows (streams/retention.py).
RETENTION = ("1d", "7d", "30d")


@dataclass(frozen=True)
class Kpi:
    """One KPI of the output topic and the gauge it is exported as."""

    name: str
    windows: tuple[str, ...]
    family: Family
    unit: Unit
    #: The Prometheus gauge (base units; one gauge may carry several KPIs, told apart by `labels`).
    metric: str
    help: str
    #: Labels that tell this KPI apart within its gauge, e.g. (("status", "new"),).
    labels: tuple[tuple[str, str], ...] = ()
    #: A 95 % interval travels with it (records' ci_low/ci_high, gauges kpimon_kpi_ci_low/high).
    interval: bool = False
    #: A target can be configured for it (docs/configuration.md, targets file).
    targetable: bool = False
    #: The row title in `kpimon top` (None: not a headline there).
    title: str | None = None


_LIFECYCLE_HELP = "Users by lifecycle status on the day."
_SURVEY_HELP = "Survey events in the window, by survey kind and bucket."
_RATE_HELP = "Answered / shown surveys in the window; absent when nothing was shown."


def _lifecycle(status: str) -> Kpi:
    return Kpi(
        f"lifecycle_{status}",
        ("1d",),
        "engagement",
        "count",
        "kpimon_lifecycle_users",
        _LIFECYCLE_HELP,
        (("status", status),),
    )


def _survey_count(survey: str, bucket: str) -> Kpi:
    return Kpi(
        f"{survey}_{bucket}",
        ROLLING,
        "satisfaction",
        "count",
        "kpimon_survey_responses",
        _SURVEY_HELP,
        (("survey", survey), ("bucket", bucket)),
    )


def _response_rate(survey: str, title: str) -> Kpi:
    return Kpi(
        f"{survey}_response_rate",
        ROLLING,
        "satisfaction",
        "ratio",
        "kpimon_survey_response_ratio",
        _RATE_HELP,
        (("survey", survey),),
        interval=True,
        targetable=True,
        title=title,
    )


#: Every KPI of the output topic, in the order of the output table (docs/output.md).
CATALOGUE: tuple[Kpi, ...] = (
    Kpi(
        "active_users",
        ("1d", "7d", "30d"),
        "engagement",
        "count",
        "kpimon_active_users",
        "Distinct active users in the window ending on the day.",
        targetable=True,
        title="Active users",
    ),
    Kpi(
        "stickiness",
        ("30d",),
        "engagement",
        "ratio",
        "kpimon_stickiness_ratio",
        "DAU / MAU (active users 1d over 30d); absent when MAU is 0.",
        targetable=True,
        title="Stickiness",
    ),
    *(_lifecycle(status) for status in ("new", "returning", "resurrecting", "dormant")),
    Kpi(
        "churn_base",
        ROLLING,
        "engagement",
        "count",
        "kpimon_churn_base_users",
        "Users active in the window before the last W days.",
    ),
    Kpi(
        "churned",
        ROLLING,
        "engagement",
        "count",
        "kpimon_churned_users",
        "Users of the churn base not active in the last W days.",
    ),
    Kpi(
        "churn_rate",
        ROLLING,
        "engagement",
        "ratio",
        "kpimon_churn_ratio",
        "Churned users / churn base; absent when the base is 0.",
        interval=True,
        targetable=True,
        title="Churn",
    ),
    *(_survey_count("nps", bucket) for bucket in ("responses", "promoters", "passives", "detractors")),
    Kpi(
        "nps",
        ROLLING,
        "satisfaction",
        "score",
        "kpimon_nps_score",
        "Net Promoter Score in the window, -100..100; absent without answers.",
        interval=True,
        targetable=True,
        title="NPS",
    ),
    *(_survey_count("csat", bucket) for bucket in ("responses", "satisfied")),
    Kpi(
        "csat",
        ROLLING,
        "satisfaction",
        "ratio",
        "kpimon_csat_ratio",
        "Satisfied (4..5) / CSAT answers in the window; absent without answers.",
        interval=True,
        targetable=True,
        title="CSAT",
    ),
    Kpi(
        "csat_mean",
        ROLLING,
        "satisfaction",
        "score",
        "kpimon_csat_score_mean",
        "Mean CSAT score (1..5) in the window; absent without answers.",
        targetable=True,
    ),
    *(_survey_count(survey, bucket) for bucket in ("shown", "dismissed") for survey in ("nps", "csat")),
    _response_rate("nps", "NPS resp. rate"),
    _response_rate("csat", "CSAT resp. rate"),
    # Retention records are keyed by the cohort day; their gauges show the newest matured cohort per offset
    # (agents/exporter/kpi_collector.py). The cohort-size gauge comes from retention_rate's denominator.
    Kpi(
        "retention_cohort",
        ("1d",),
        "engagement",
        "count",
        "kpimon_retention_cohort_users",
        "Users in the newest matured cohort of offset k (window = k).",
    ),
    Kpi(
        "retained",
        RETENTION,
        "engagement",
        "count",
        "kpimon_retained_users",
        "Users of the cohort active on cohort day + k (window = the offset k).",
    ),
    Kpi(
        "retention_rate",
        RETENTION,
        "engagement",
        "ratio",
        "kpimon_retention_ratio",
        "Retained / cohort users at offset k (window); absent when the cohort is empty.",
        interval=True,
        targetable=True,
        title="Retention",
    ),
)

#: The catalogue by KPI name.
KPIS: dict[str, Kpi] = {kpi.name: kpi for kpi in CATALOGUE}


def windows() -> dict[str, tuple[str, ...]]:
    """KPI name -> its windows, for every KPI of the output topic."""
    return {kpi.name: kpi.windows for kpi in CATALOGUE}


def gauges() -> dict[str, tuple[str, ...]]:
    """Gauge name -> the names of the labels that tell its KPIs apart (beside window, day and segment)."""
    out: dict[str, tuple[str, ...]] = {}
    for kpi in CATALOGUE:
        out.setdefault(kpi.metric, tuple(name for name, _ in kpi.labels))
    return out
