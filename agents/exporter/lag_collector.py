"""Consumer lag and partition ownership, as a custom collector read at scrape time.

Lag of a partition = the broker's high watermark (as last seen by the consumer) minus the next offset
this worker will process. A partition appears only while this worker owns it, so a scrape never shows a
partition twice across workers; before its first message is processed, the next offset is the consumer's
position (the committed offset), so the lag shows from the assignment on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

TopicPartition = tuple[str, int]


class LagCollector(Collector):
    """`kpimon_consumer_lag_messages{topic,partition}` and `kpimon_assigned_partitions{topic,partition}`."""

    def __init__(
        self,
        assigned: Callable[[], Iterable[TopicPartition]],
        positions: Mapping[TopicPartition, int],
        highwater: Callable[[TopicPartition], int | None],
        start_positions: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        """`positions`: next offsets after processed messages; `start_positions`: the consumers' positions
        of partitions nothing was processed from yet (refreshed by the worker)."""
        self._assigned = assigned
        self._positions = positions
        self._highwater = highwater
        self._start_positions = start_positions if start_positions is not None else {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "kpimon_consumer_lag_messages",
            "Messages in the partition not yet processed by this worker (high watermark - next offset).",
            labels=["topic", "partition"],
        )
        owned = GaugeMetricFamily(
            "kpimon_assigned_partitions",
            "1 for each partition this worker owns right now (its series are exported here only).",
            labels=["topic", "partition"],
        )
        for topic, partition in sorted(self._assigned()):
            owned.add_metric([topic, str(partition)], 1.0)
            position = self._positions.get((topic, partition))
            if position is None:
                position = self._start_positions.get((topic, partition))
            high = self._highwater((topic, partition))
            if position is not None and high is not None:
                lag.add_metric([topic, str(partition)], float(max(high - position, 0)))
        yield lag
        yield owned
