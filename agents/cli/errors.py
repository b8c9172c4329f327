"""What a command that reads a Kafka topic tells its user when that fails: one line, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from kpimon.agents.config.preflight import KafkaAccessError

T = TypeVar("T")


def run_reading(work: Coroutine[Any, Any, T], topic: str, broker: str) -> T:
    """Run `work` (which reads `topic` from `broker`) to completion and return its result.

    A failure becomes one click.ClickException line: a KafkaAccessError (the pre-flight's unreachable broker,
    refused TLS or credentials) keeps its own message, any other error is named with the topic and broker.
    A ClickException raised by `work` and KeyboardInterrupt pass through unchanged.
    """
    try:
        return asyncio.run(work)
    except click.ClickException:
        raise
    except KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # a broker or decoding problem: one clear line, not a traceback
        raise click.ClickException(f"reading {topic} from {broker} failed: {exc!r}") from None
