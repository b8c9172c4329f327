"""The Faust app, its agents and tables, the metrics exporter and the `kpimon` CLI."""
