"""kpimon: streaming engagement and satisfaction KPIs, exact, from Kafka to Prometheus.

The import package. Its sub-packages are the repository's top-level folders:
`kpimon.streams` (the pure KPI math), `kpimon.agents` (the worker, exporter and CLI),
`kpimon.simulator` (traffic) and `kpimon.reference` (the batch truth in SQL).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kpimon")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
