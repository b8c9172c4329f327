"""Every generated monitoring file: relative path -> text (scripts/generate.py writes them)."""

from __future__ import annotations

from pathlib import Path

from monitoring import grafana
from monitoring.alertmanager import alertmanager_yaml
from monitoring.config import DEFAULT, MonitoringConfig
from monitoring.dashboards import dashboards
from monitoring.kubernetes import prometheus_rule, service_monitor
from monitoring.prometheus import prometheus_config
from monitoring.render import GENERATED, to_json, to_yaml
from monitoring.rules import prometheus_rule_files

PROMETHEUS_DIR = Path("deploy/prometheus")
ALERTMANAGER_DIR = Path("deploy/alertmanager")
RULES_DIR = PROMETHEUS_DIR / "rules"
DASHBOARDS_DIR = Path("grafana/dashboards")
PROVISIONING_DIR = Path("grafana/provisioning")
#: Prometheus Operator objects: `kubectl apply -f` it only where the operator's CRDs are installed.
OPERATOR_DIR = Path("deploy/k8s/prometheus-operator")

#: Directories whose every file is generated (a file there that the code does not generate is stale).
GENERATED_DIRS = (RULES_DIR, DASHBOARDS_DIR, PROVISIONING_DIR, ALERTMANAGER_DIR, OPERATOR_DIR)

_SCRAPE_NOTE = (
    "\nPrometheus for kpimon: scrapes every worker's /metrics (its --web-port, default 6066) and loads"
    "\nthe recording and alert rules of rules/ (paths relative to this file). More workers: list their"
    "\nhost:web-port in worker_targets (monitoring/config.py) and run `make generate`."
)


_ROUTING_NOTE = (
    "\nAlertmanager for kpimon: routes by team and severity (page / ticket / info), groups by alert and"
    "\nsegment, holds back the KPI alerts while a pipeline alert says there is no data or a worker is down."
    "\nThe receivers are PLACEHOLDERS (webhooks that reach nobody): replace them by your pager, ticket and"
    '\nchat integrations before use (docs/alerts.md, "Replace the placeholder receivers").'
)


def generated_files(config: MonitoringConfig = DEFAULT) -> dict[Path, str]:
    """Relative path -> content of every monitoring file generated from `config`."""
    files: dict[Path, str] = {
        PROMETHEUS_DIR / "prometheus.yml": to_yaml(prometheus_config(config), GENERATED + _SCRAPE_NOTE)
    }
    files[ALERTMANAGER_DIR / "alertmanager.yml"] = alertmanager_yaml(config, GENERATED + _ROUTING_NOTE)
    for name, document in prometheus_rule_files(config).items():
        files[RULES_DIR / name] = to_yaml(document, GENERATED)
    for name, board in dashboards(config).items():
        files[DASHBOARDS_DIR / name] = to_json(board)
    files[PROVISIONING_DIR / "datasources" / "kpimon.yaml"] = to_yaml(grafana.datasources(config), GENERATED)
    files[PROVISIONING_DIR / "dashboards" / "kpimon.yaml"] = to_yaml(
        grafana.dashboard_provider(config), GENERATED
    )
    files[PROVISIONING_DIR / "alerting" / "kpimon-alerts.yaml"] = to_yaml(
        grafana.alert_rules(config), GENERATED
    )
    operator_note = (
        "\nFor a cluster with the Prometheus Operator: scrape the workers and load kpimon's rules"
        "\n(kubectl apply -f deploy/k8s/prometheus-operator/). Your Prometheus must select these objects"
        "\n(its serviceMonitorSelector / ruleSelector, e.g. by the app.kubernetes.io/name label)."
    )
    files[OPERATOR_DIR / "servicemonitor.yaml"] = to_yaml(service_monitor(config), GENERATED + operator_note)
    files[OPERATOR_DIR / "prometheusrule.yaml"] = to_yaml(prometheus_rule(config), GENERATED + operator_note)
    return files
