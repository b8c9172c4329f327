"""Prometheus Operator objects for deploy/k8s/: a ServiceMonitor and a PrometheusRule from the one config.

The PrometheusRule holds exactly the groups of deploy/prometheus/rules/ (recording rules and alerts), and
the ServiceMonitor scrapes the workers' metrics Service (deploy/k8s/services.yaml) with the job name the
rules select (`config.job`): the Service's `app.kubernetes.io/name` label, which is `kpimon`.
"""

from __future__ import annotations

from monitoring.config import MonitoringConfig
from monitoring.rules import prometheus_rule_files

#: Labels of every kpimon object (deploy/k8s/*.yaml), and those the metrics Service carries.
LABELS = {"app.kubernetes.io/name": "kpimon", "app.kubernetes.io/component": "worker"}
#: The Service label whose value the operator makes the `job` label (it must equal `config.job`).
JOB_LABEL = "app.kubernetes.io/name"
#: The port name of the workers' metrics Service (deploy/k8s/services.yaml).
METRICS_PORT = "metrics"


def service_monitor(config: MonitoringConfig) -> dict[str, object]:
    """The ServiceMonitor of the workers' /metrics."""
    if LABELS[JOB_LABEL] != config.job:
        raise ValueError(
            f"the rules select job={config.job!r}, the Service's {JOB_LABEL} is {LABELS[JOB_LABEL]!r}"
        )
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "kpimon-worker", "labels": dict(LABELS)},
        "spec": {
            "jobLabel": JOB_LABEL,
            "selector": {"matchLabels": dict(LABELS)},
            "endpoints": [
                {"port": METRICS_PORT, "path": "/metrics", "interval": config.scrape_interval},
            ],
        },
    }


def prometheus_rule(config: MonitoringConfig) -> dict[str, object]:
    """The PrometheusRule with every recording and alert group of the rule files."""
    groups: list[object] = []
    for document in prometheus_rule_files(config).values():
        found = document["groups"]
        assert isinstance(found, list)
        groups.extend(found)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "kpimon", "labels": dict(LABELS)},
        "spec": {"groups": groups},
    }
