"""The one line a Kafka-reading command (kpis, history, dead-letters) prints when reading fails."""

from __future__ import annotations

import click
import pytest

from kpimon.agents.cli.errors import run_reading
from kpimon.agents.config.preflight import KafkaAccessError, KafkaUnreachableError


async def _returns(value: int) -> int:
    return value


async def _raises(error: BaseException) -> int:
    raise error


def test_the_result_of_the_reading_is_returned() -> None:
    assert run_reading(_returns(42), "kpimon-kpis", "127.0.0.1:9092") == 42


@pytest.mark.parametrize(
    "error",
    [KafkaAccessError("SASL authentication failed: check the username"), KafkaUnreachableError("down")],
)
def test_a_refused_or_unreachable_broker_keeps_the_preflights_message(error: KafkaAccessError) -> None:
    with pytest.raises(click.ClickException) as raised:
        run_reading(_raises(error), "kpimon-kpis", "127.0.0.1:9092")
    assert raised.value.message == str(error)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_any_other_failure_names_the_topic_and_the_broker() -> None:
    with pytest.raises(click.ClickException) as raised:
        run_reading(_raises(RuntimeError("partition 3 has no leader")), "kpimon-dead-letters", "kafka:9092")
    assert raised.value.message == (
        "reading kpimon-dead-letters from kafka:9092 failed: RuntimeError('partition 3 has no leader')"
    )
    assert raised.value.__suppress_context__  # one line, no chained traceback


def test_a_click_exception_and_an_interrupt_pass_through() -> None:
    own = click.ClickException("kpimon-kpis holds no records")
    with pytest.raises(click.ClickException) as raised:
        run_reading(_raises(own), "kpimon-kpis", "127.0.0.1:9092")
    assert raised.value is own
    with pytest.raises(KeyboardInterrupt):  # `dead-letters --follow` ends quietly on Ctrl-C
        run_reading(_raises(KeyboardInterrupt()), "kpimon-dead-letters", "127.0.0.1:9092")
