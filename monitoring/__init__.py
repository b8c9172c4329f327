"""Monitoring as code: one config feeds the Prometheus rules, the Grafana dashboards and Grafana alerts.

- `config.MonitoringConfig`: thresholds, `for` durations, selectors, names (the one place to change them);
- `rules`: recording rules (`level:metric:operations`) and alert rules, rendered to Prometheus YAML;
- `dashboards`: the Grafana dashboards (grafana-foundation-sdk) and `panel_queries()`, every panel's PromQL;
- `grafana`: provisioning files (data source, dashboard provider, Grafana-managed alert rules);
- `generate.generated_files()`: relative path -> text of every generated file (`make generate` writes them).

docs/alerts.md explains what the rules here compute; docs/runbooks/ holds one runbook per alert.
"""
