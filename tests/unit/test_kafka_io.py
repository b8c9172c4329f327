"""The source reader's Kafka consumer stops cleanly with the broker away (runtime/kafka_io.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kpimon.agents.config.settings import Settings
from kpimon.agents.runtime.kafka_io import KafkaFetcher


async def aiokafka_stop_with_a_fetch_in_backoff() -> None:
    """What aiokafka's `AIOKafkaConsumer.stop` does when a fetch request waits out its retry backoff (the
    broker away): its fetcher's `close` cancels the pending task and awaits it, so the task's
    CancelledError comes out of `stop` although nobody cancelled the caller."""
    pending = asyncio.ensure_future(asyncio.sleep(10))
    await asyncio.sleep(0)
    pending.cancel()
    await pending


def fetcher(tmp_path_factory: pytest.TempPathFactory) -> KafkaFetcher:
    """A fetcher (its aiokafka consumer built, never started) whose consumer stops as with a fetch pending."""
    settings = Settings(app_id="t-kafka-io", data_dir=tmp_path_factory.mktemp("state"), broker="127.0.0.1:1")
    made = KafkaFetcher(settings)
    made.consumer.stop = aiokafka_stop_with_a_fetch_in_backoff
    return made


async def test_a_fetch_given_up_by_stop_does_not_cut_the_stop_short(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    reader = fetcher(tmp_path_factory)
    with caplog.at_level(logging.INFO, logger="kpimon.agents.runtime.kafka_io"):
        await reader.stop()  # returns: the worker's stop goes on to stop Faust's agents
    assert [r.getMessage() for r in caplog.records] == [
        "source reader's consumer stopped with a fetch pending (broker away): fetch given up"
    ]


async def test_a_stop_that_is_itself_cancelled_stays_cancelled(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    reader = fetcher(tmp_path_factory)
    started = asyncio.Event()

    async def stop_slowly() -> None:
        started.set()
        await asyncio.sleep(10)

    reader.consumer.stop = stop_slowly
    stopping = asyncio.ensure_future(reader.stop())
    await started.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
