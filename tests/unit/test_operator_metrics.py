"""The operator's series (issue #20): the Faust sensor's counters, lag from the assignment, build info.

The real worker's series are checked in tests/integration/test_operator_metrics.py.
"""

from __future__ import annotations

from importlib.metadata import version

from prometheus_client import CollectorRegistry

from kpimon.agents.exporter.lag_collector import LagCollector
from kpimon.agents.exporter.runtime_metrics import build_labels, register_runtime_metrics
from kpimon.agents.pipeline.metrics import PipelineMetrics
from kpimon.agents.runtime.sensor import MetricsSensor


def value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float | None:
    return registry.get_sample_value(name, labels or {})


def test_sensor_counts_send_errors_by_topic_and_rebalances() -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    sensor = MetricsSensor(metrics)
    state = sensor.on_send_initiated(None, "kpimon-dead-letters", None, 0, 10)
    sensor.on_send_completed(None, state, None)
    assert value(registry, "kpimon_produce_errors_total", {"topic": "kpimon-dead-letters"}) is None
    sensor.on_send_error(None, RuntimeError("refused"), state)
    sensor.on_send_error(None, RuntimeError("refused"), state)
    assert value(registry, "kpimon_produce_errors_total", {"topic": "kpimon-dead-letters"}) == 2
    metrics.produce_error("app-user-state-changelog", 5)  # a refused record batch of the user store
    assert value(registry, "kpimon_produce_errors_total", {"topic": "app-user-state-changelog"}) == 5
    assert value(registry, "kpimon_rebalances_total") == 0
    sensor.on_rebalance_start(None)
    assert value(registry, "kpimon_rebalances_total") == 1


def test_lag_from_the_assignment_on() -> None:
    assigned = [("clicks", 0), ("clicks", 1), ("clicks", 2)]
    positions = {("clicks", 0): 90}
    starts = {("clicks", 0): 10, ("clicks", 1): 40}  # a processed position wins over the start position
    highwater = {("clicks", 0): 100, ("clicks", 1): 55}  # partition 2: no fetch yet, nothing to say
    registry = CollectorRegistry()
    registry.register(LagCollector(lambda: assigned, positions, highwater.get, starts))
    assert value(registry, "kpimon_consumer_lag_messages", {"topic": "clicks", "partition": "0"}) == 10
    assert value(registry, "kpimon_consumer_lag_messages", {"topic": "clicks", "partition": "1"}) == 15
    assert value(registry, "kpimon_consumer_lag_messages", {"topic": "clicks", "partition": "2"}) is None
    assert value(registry, "kpimon_assigned_partitions", {"topic": "clicks", "partition": "2"}) == 1


def test_build_info_and_process_series() -> None:
    registry = CollectorRegistry()
    register_runtime_metrics(registry, "python")
    labels = build_labels("python")
    assert labels["version"] == version("kpimon")
    assert labels["core"] == "python"
    assert labels["faust"] == version("faust-streaming")
    assert value(registry, "kpimon_build_info", labels) == 1
    assert (value(registry, "process_cpu_seconds_total") or 0) > 0
    assert (value(registry, "process_resident_memory_bytes") or 0) > 0
