"""A Faust sensor (Faust's public monitoring hook) counting rebalances and failed produce requests."""

from __future__ import annotations

from typing import Any

from faust.sensors import Sensor

from kpimon.agents.pipeline.metrics import PipelineMetrics


class MetricsSensor(Sensor):
    """Feeds `kpimon_rebalances_total` and `kpimon_produce_errors_total` of a worker's PipelineMetrics.

    Faust calls it for every message sent through a Faust topic (dead letters, re-keyed events, partials,
    KPI records); the user-state changelog, sent in record batches past Faust's topic API, reports its
    errors to the same counter itself (runtime/user_store.py).
    """

    def __init__(self, metrics: PipelineMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        # The state Faust hands back to on_send_error: which topic the failed message was for.
        return topic

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.metrics.produce_error(str(state))

    def on_rebalance_start(self, app: Any) -> dict[Any, Any]:
        self.metrics.rebalances.inc()
        return {}
