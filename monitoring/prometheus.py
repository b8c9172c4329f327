"""deploy/prometheus/prometheus.yml: scrape the workers' /metrics and load the generated rules."""

from __future__ import annotations

from monitoring.config import MonitoringConfig


def prometheus_config(config: MonitoringConfig) -> dict[str, object]:
    """The Prometheus server config; rule paths are relative to the file (deploy/prometheus/)."""
    return {
        "global": {
            "scrape_interval": config.scrape_interval,
            "evaluation_interval": config.evaluation_interval,
        },
        "rule_files": ["rules/*.yaml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": list(config.alertmanager_targets)}]}]},
        "scrape_configs": [
            {
                "job_name": config.job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(config.worker_targets)}],
            }
        ],
    }
