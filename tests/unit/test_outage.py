"""A worker without its broker: backoff, the throttle of client log lines, the outage watch's states."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from kpimon.agents.runtime.outage import (
    BACKOFF_CAP,
    PROBE_INTERVAL,
    SUMMARY_INTERVAL,
    Backoff,
    ClientLogThrottle,
    KafkaWatch,
    install_throttle,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, level: int = logging.ERROR, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


def test_backoff_doubles_up_to_the_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(first=0.5, cap=4.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_the_throttle_lets_each_kind_through_once_a_minute_and_counts_the_rest() -> None:
    clock = Clock()
    throttle = ClientLogThrottle(clock=clock)
    unable = "Unable connect to node with id %s: %s"
    assert throttle.filter(record(unable))
    assert throttle.filter(record("Unable to update metadata from %s"))
    assert not any(throttle.filter(record(unable)) for _ in range(100))
    assert throttle.filter(record(unable, logging.INFO))  # below WARNING: never held back
    summary = throttle.summary()
    assert summary is not None and summary.startswith("held back 100 repeated Kafka client log lines")
    assert repr(unable) in summary
    assert throttle.summary() is None  # counted once
    clock.now += SUMMARY_INTERVAL
    assert throttle.filter(record(unable))  # once a minute again


def test_the_throttle_holds_back_faust_producer_back_pressure_lines_whatever_their_numbers() -> None:
    """Faust's producer logs a full buffer (WARNING) and each 0.1 s wait after it (INFO) per message its
    consumer delivers, formatted before logging: 559 lines in a minute's outage before they were held."""
    clock = Clock()
    throttle = ClientLogThrottle(clock=clock)
    producer = "faust.transport.producer"
    full = [record(f"producer buffer full size {n}", logging.WARNING, producer) for n in range(101, 401)]
    took = [record(f"producer flush took {0.1 + n / 1e4}", logging.INFO, producer) for n in range(300)]
    assert [throttle.filter(r) for r in full[:2]] == [True, False]  # one kind, whatever the size
    assert [throttle.filter(r) for r in took[:2]] == [True, False]  # INFO too, for this logger
    assert not any(throttle.filter(r) for r in full[2:] + took[2:])
    assert throttle.filter(record("producer started", logging.DEBUG, producer))  # below INFO: passes
    assert throttle.filter(record("Discovered coordinator %s", logging.INFO))  # aiokafka's INFO passes
    summary = throttle.summary()
    assert summary is not None and summary.startswith("held back 598 repeated Kafka client log lines")
    assert "299 x 'producer buffer full size N'" in summary and "299 x 'producer flush took N'" in summary
    clock.now += SUMMARY_INTERVAL
    assert throttle.filter(full[0]) and throttle.filter(took[0])  # once a minute again


def test_the_throttle_is_installed_on_the_faust_producer_logger() -> None:
    throttle = ClientLogThrottle()
    loggers = [logging.getLogger(name) for name in ("aiokafka", "faust.transport.producer")]
    try:
        install_throttle(throttle)
        assert all(throttle in logger.filters for logger in loggers)
        assert throttle not in logging.getLogger("faust.transport.consumer").filters
    finally:
        for logger in logging.Logger.manager.loggerDict.values():
            if isinstance(logger, logging.Logger):
                logger.removeFilter(throttle)


def test_the_watch_marks_an_outage_once_backs_off_and_recovers() -> None:
    clock = Clock()
    answers: list[bool] = [True, False, False, False, True]
    backoffs: list[float | None] = []

    async def probe() -> None:
        if not answers.pop(0):
            raise ConnectionError("Connect call failed")

    registry = CollectorRegistry()
    watch = KafkaWatch(probe, registry, clock=clock, on_backoff=backoffs.append)

    def value(name: str) -> float | None:
        return registry.get_sample_value(name)

    async def run() -> list[float]:
        pauses = []
        for _ in range(5):
            pauses.append(await watch.check())
            if watch.down:
                assert value("kpimon_kafka_reachable") == 0
                clock.now += 7
                assert value("kpimon_kafka_outage_seconds") == pytest.approx(7 * (len(pauses) - 1))
        return pauses

    pauses = asyncio.run(run())
    assert pauses[0] == PROBE_INTERVAL and pauses[-1] == PROBE_INTERVAL
    assert pauses[1:4] == [0.5, 1.0, 2.0] and max(pauses) <= max(BACKOFF_CAP, PROBE_INTERVAL)
    assert backoffs == [0.5, 1.0, 2.0, None]  # the clients' backoff follows, then their default again
    assert not watch.down
    assert value("kpimon_kafka_reachable") == 1
    assert value("kpimon_kafka_outage_seconds") == 0
    assert value("kpimon_kafka_outages_total") == 1
