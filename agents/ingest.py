"""Ingest agents: decode and validate every input message; rejected ones go to the dead-letter topic.

Nothing raised by the input can leave an agent: validation turns every bad message into a `Rejected`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from agents.deadletters import dead_letter_headers
from streams.validation import Accepted, Kind, Rejected, validate

if TYPE_CHECKING:
    from agents.app import Kpimon

log = logging.getLogger(__name__)


def register_ingest(kpimon: Kpimon) -> None:
    """Register one ingest agent per input topic on the app."""
    app, settings = kpimon.app, kpimon.settings
    dead_letters = app.topic(settings.dead_letters, key_serializer="raw", value_serializer="raw")

    def make_agent(kind: Kind, topic_name: str) -> None:
        topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
        metrics, policy = kpimon.metrics, settings.policy

        async def ingest(stream: Any) -> None:
            event: Any
            async for event in stream.events():
                message = event.message
                now_ms = int(time.time() * 1000)
                verdict = validate(kind, message.key, message.value, now_ms, policy)
                if isinstance(verdict, Rejected):
                    metrics.rejected(topic_name, verdict.reason)
                    # Attached to the source offset: Faust publishes it before committing that offset.
                    await dead_letters.send(
                        key=message.key,
                        value=message.value,
                        headers=dead_letter_headers(
                            verdict, message.topic, message.partition, message.offset, _timestamp_ms(message)
                        ),
                    )
                    log.debug(
                        "rejected %s[%d]@%d: %s",
                        topic_name,
                        message.partition,
                        message.offset,
                        verdict.reason,
                    )
                    continue
                assert isinstance(verdict, Accepted)
                metrics.accepted(topic_name, (now_ms - verdict.ts_ms) / 1000)

        app.agent(topic, name=f"kpimon.ingest.{kind}")(ingest)

    make_agent("clicks", settings.clicks)
    make_agent("surveys", settings.surveys)


def _timestamp_ms(message: Any) -> int | None:
    """The Kafka timestamp of a Faust message in epoch milliseconds, when it has one."""
    ts = getattr(message, "timestamp", None)
    return int(ts * 1000) if ts else None
