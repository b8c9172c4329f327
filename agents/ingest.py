"""The ingest agent: validate every input message, keep per-user state, move the partition's counters.

One agent reads `clicks`, `surveys` and `kpimon-rekeyed` (all co-partitioned by user), so a user's
events of both kinds meet one state value. Nothing raised by the input can leave the agent: validation
turns every bad message into a `Rejected`, which goes to the dead-letter topic.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from faust.serializers import codecs

from agents.deadletters import Redactor, dead_letter_headers
from agents.kafka_security import read_secret
from agents.tables import raw_topic, table
from streams.userstate import UserState
from streams.validation import Accepted, Kind, Reason, Rejected, validate

if TYPE_CHECKING:
    from agents.app import Kpimon

log = logging.getLogger(__name__)

#: How often (per partition) the ingest agent expires old days from a batch of idle users' states.
SWEEP_INTERVAL_MS = 10_000

#: Header of a rekeyed message: the input topic kind it was first read from.
KIND_HEADER = "kpimon-kind"


class UserStateCodec(codecs.Codec):
    """Changelog encoding of the user-state table: UserState's own compact msgpack bytes."""

    def _dumps(self, obj: Any) -> bytes:
        return bytes(obj.to_bytes())

    def _loads(self, s: bytes) -> Any:
        return UserState.from_bytes(s)


codecs.register("kpimon_user_state", UserStateCodec())


def register_ingest(kpimon: Kpimon) -> None:
    """Register the ingest agent, the user-state table and the partial flush timer on the app."""
    app, settings, engine, metrics = kpimon.app, kpimon.settings, kpimon.engine, kpimon.metrics
    policy = settings.policy
    kinds: dict[str, Kind] = {settings.clicks: "clicks", settings.surveys: "surveys"}
    source = raw_topic(app, settings.clicks, settings.surveys, settings.rekeyed)
    dead_letters = raw_topic(app, settings.dead_letters)
    rekeyed = raw_topic(app, settings.rekeyed)
    users = table(app, "user-state", settings.partitions, "kpimon_user_state")
    kpimon.users = users
    redactor = (
        Redactor(read_secret("dead_letter_redact_key_file", settings.dead_letter_redact_key_file).encode())
        if settings.dead_letter_redact
        else None
    )

    last_sweep: dict[int, int] = {}

    async def ingest(stream: Any) -> None:
        event: Any
        async for event in stream.events():
            message = event.message
            topic_name = message.topic
            kind = kinds.get(topic_name) or _rekeyed_kind(message)
            # Metrics and dead letters name the input topic the message was produced to.
            label = settings.clicks if kind == "clicks" else settings.surveys
            now_ms = int(time.time() * 1000)
            verdict = validate(kind, message.key, message.value, now_ms, policy)
            engine.processed(topic_name, message.partition, message.offset)
            if now_ms - last_sweep.get(message.partition, 0) > SWEEP_INTERVAL_MS:
                last_sweep[message.partition] = now_ms
                engine.sweep(users, message.partition, now_ms)
            if isinstance(verdict, Accepted) and message.key is not None:
                try:
                    outcome = engine.on_event(users, message.key, message.partition, verdict, now_ms)
                except Exception as exc:  # a bug must neither crash the worker nor lose the event silently
                    log.exception(
                        "failed to process %s[%d]@%d", topic_name, message.partition, message.offset
                    )
                    verdict = Rejected(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:300])
                else:
                    if outcome == "duplicate":
                        metrics.duplicate(label)
                    else:
                        metrics.accepted(label, (now_ms - verdict.ts_ms) / 1000)
                    continue
            if isinstance(verdict, Rejected):
                metrics.rejected(label, verdict.reason)
                headers = dead_letter_headers(
                    verdict, topic_name, message.partition, message.offset, _timestamp_ms(message)
                )
                key, value = message.key, message.value
                if redactor is not None:
                    key, value, extra = redactor.redact(key, value)
                    headers.extend(extra)
                # Attached to the source offset: Faust publishes it before committing that offset.
                await dead_letters.send(key=key, value=value, headers=headers)
                continue
            # Valid but unkeyed: route it to its user's partition first (the state lives there); it is
            # counted when it comes back from kpimon-rekeyed, keyed.
            assert isinstance(verdict, Accepted)
            user_key = verdict.event.user_id.encode()
            await rekeyed.send(key=user_key, value=message.value, headers=[(KIND_HEADER, kind.encode())])

    app.agent(source, name="kpimon.ingest")(ingest)

    async def flush_partials() -> None:
        await kpimon.flush_partials()

    app.timer(settings.flush_interval, name="kpimon.flush_partials")(flush_partials)

    async def on_users_recovered() -> None:
        kpimon.rebuild_counters()

    users.on_recover(on_users_recovered)


def _rekeyed_kind(message: Any) -> Kind:
    headers = message.headers or ()
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if name == KIND_HEADER and value in (b"clicks", b"surveys"):
            return "clicks" if value == b"clicks" else "surveys"
    return "clicks"


def _timestamp_ms(message: Any) -> int | None:
    """The Kafka timestamp of a Faust message in epoch milliseconds, when it has one."""
    ts = getattr(message, "timestamp", None)
    return int(ts * 1000) if ts else None
