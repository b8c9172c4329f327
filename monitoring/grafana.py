"""Grafana provisioning: the Prometheus data source, the dashboard provider and Grafana-managed alert rules.

The Grafana alert rules are the Prometheus alerts of `rules.py`, for setups that alert from Grafana instead
of Prometheus + Alertmanager (use one or the other, or every alert notifies twice). Each rule runs
  A: the Prometheus alert expression as an instant query, `max without ()` so that `__name__` is dropped
     like Prometheus drops it from alert labels (the labels are then the same as Prometheus' alerts);
  B: (KPI-vs-target alerts only) the target aligned to A's labels, read by the description;
  C: the condition `$A == $A`: every series A returns fires (A returns only breaching series);
  D, E: (alerts with an interval only) the KPI's 95 % interval bounds with A's labels, read by `interval`.
`for`, labels and annotations are the Prometheus rule's (`value`, `target`, `interval` from the queries
above; `drivers` names the dashboard panel of the split: Grafana's templates cannot query); no data means
OK (no breaching series), like an empty Prometheus alert expression. They need the recording rules loaded
in the Prometheus they query.
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import alerting, expr, prometheus
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as alerting_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

from monitoring.config import MonitoringConfig
from monitoring.rules import (
    Alert,
    alert_annotations,
    alert_groups,
    alert_labels,
    grafana_description,
    grafana_interval_exprs,
    grafana_values,
)

#: Grafana's uid of server-side expressions.
EXPRESSION_UID = "__expr__"
#: Fields of the SDK's rule model (the HTTP provisioning API) that file provisioning puts on the group.
_API_ONLY = ("folderUID", "ruleGroup", "orgID")
#: Key order of a rule in the file (readability only).
_ORDER = (
    "uid",
    "title",
    "condition",
    "for",
    "labels",
    "annotations",
    "noDataState",
    "execErrState",
    "isPaused",
)


def datasources(config: MonitoringConfig) -> dict[str, object]:
    """provisioning/datasources/: the Prometheus that scrapes the workers."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": config.datasource_name,
                "uid": config.datasource_uid,
                "type": "prometheus",
                "access": "proxy",
                "url": config.prometheus_url,
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": config.scrape_interval},
            }
        ],
    }


def dashboard_provider(config: MonitoringConfig) -> dict[str, object]:
    """provisioning/dashboards/: load the generated dashboards from where grafana/dashboards/ is mounted."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "kpimon",
                "folder": config.grafana_folder,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": config.grafana_dashboards_path},
            }
        ],
    }


def grafana_query(alert: Alert) -> str:
    """Query A of the Grafana rule: the Prometheus expression without `__name__`."""
    return f"max without () (\n{alert.expr}\n)"


def alert_uid(name: str) -> str:
    """A stable Grafana rule uid (at most 40 characters) from the alert name."""
    return name.lower()[:40]


def grafana_rule(alert: Alert, config: MonitoringConfig) -> dict[str, object]:
    """One Grafana alert rule, in the file-provisioning shape."""
    datasource = dashboard_models.DataSourceRef(type_val="prometheus", uid=config.datasource_uid)
    expressions = dashboard_models.DataSourceRef(type_val=EXPRESSION_UID, uid=EXPRESSION_UID)
    window = alerting_models.RelativeTimeRange(from_val=600, to=0)

    def instant(ref: str, text: str) -> alerting.Query:
        model = prometheus.Dataquery().expr(text).instant().ref_id(ref).datasource(datasource)
        return (
            alerting.Query(ref).datasource_uid(config.datasource_uid).relative_time_range(window).model(model)
        )

    rule = (
        alerting.Rule(alert.name)
        .uid(alert_uid(alert.name))
        .condition("C")
        .for_val(alert.for_)
        .labels(alert_labels(alert, config))
        .annotations(
            {**alert_annotations(alert, config, grafana_description(alert)), **grafana_values(alert, config)}
        )
        .no_data_state("OK")
        .exec_err_state("Error")
        .is_paused(False)
        .with_query(instant("A", grafana_query(alert)))
    )
    if alert.target_expr:
        rule = rule.with_query(instant("B", alert.target_expr))
    condition = expr.TypeMath().expression("$A == $A").ref_id("C").datasource(expressions)
    rule = rule.with_query(alerting.Query("C").datasource_uid(EXPRESSION_UID).model(condition))
    if alert.interval_kpi:
        low, high = grafana_interval_exprs(alert)
        rule = rule.with_query(instant("D", low)).with_query(instant("E", high))
    document: dict[str, object] = json.loads(json.dumps(rule.build(), cls=JSONEncoder))
    for key in _API_ONLY:
        document.pop(key, None)
    first = [key for key in _ORDER if key in document]
    return {key: document[key] for key in [*first, *sorted(set(document) - set(first))]}


def alert_rules(config: MonitoringConfig) -> dict[str, object]:
    """provisioning/alerting/: one Grafana rule group per Prometheus alert group."""
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": group.name,
                "folder": config.grafana_folder,
                "interval": config.evaluation_interval,
                "rules": [grafana_rule(a, config) for a in group.rules if isinstance(a, Alert)],
            }
            for group in alert_groups(config)
        ],
    }
