"""The ingest side: validate every input message, keep per-user state, move the partition's counters.

Clicks, surveys and `kpimon-rekeyed` (all co-partitioned by user) are read together, so a user's events
of both kinds meet one state value. Faust assigns their partitions to the `kpimon.ingest` agent, and the
source reader (runtime/source_reader.py) reads them in bulk; `BatchProcessor` (pipeline/batch.py) applies
each batch. Nothing raised by the input can stop the worker: validation turns every bad message into a
`Rejected`, which goes to the dead-letter topic.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from faust.serializers import codecs

from kpimon.agents.config.kafka_security import read_secret
from kpimon.agents.exporter.pipeline_metrics import rejection_summary
from kpimon.agents.pipeline.batch import BatchProcessor
from kpimon.agents.pipeline.deadletters import Redactor
from kpimon.agents.runtime.source_reader import SourceReader, writing_partition
from kpimon.agents.runtime.tables import raw_topic, table
from kpimon.agents.runtime.user_store import UserStore
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Kind

if TYPE_CHECKING:
    from kpimon.agents.app import Kpimon

log = logging.getLogger(__name__)


class UserStateCodec(codecs.Codec):
    """Changelog encoding of the user-state table: UserState's own compact msgpack bytes."""

    def _dumps(self, obj: Any) -> bytes:
        return bytes(obj.to_bytes())

    def _loads(self, s: bytes) -> Any:
        return UserState.from_bytes(s)


codecs.register("kpimon_user_state", UserStateCodec())


def register_ingest(kpimon: Kpimon) -> None:
    """Register the ingest agent, the user-state table, the source reader and the partial flush timer."""
    app, settings = kpimon.app, kpimon.settings
    kinds: dict[str, Kind] = {settings.clicks: "clicks", settings.surveys: "surveys"}
    labels: dict[Kind, str] = {"clicks": settings.clicks, "surveys": settings.surveys}
    source = raw_topic(app, settings.clicks, settings.surveys, settings.rekeyed)
    topics = {
        "dead_letters": raw_topic(app, settings.dead_letters),
        "rekeyed": raw_topic(app, settings.rekeyed),
    }
    users = table(app, "user-state", settings.partitions, "kpimon_user_state")
    kpimon.users = users
    # Every user-state write goes through this one store: changelog records in batches (user_store.py).
    store = UserStore(users)
    store.on_send_error = kpimon.metrics.produce_error
    processor = BatchProcessor(kpimon.engine, kpimon.metrics, settings.policy, kinds, labels)
    redactor = (
        Redactor(read_secret("dead_letter_redact_key_file", settings.dead_letter_redact_key_file).encode())
        if settings.dead_letter_redact
        else None
    )
    reader = SourceReader(kpimon, processor, store, topics, redactor)
    kpimon.reader = reader

    async def ingest(stream: Any) -> None:
        # Subscribing is what makes Faust assign the source partitions (with the user-state table's);
        # its consumer does not fetch them (agents/runtime/faust_app.py). Should an event arrive anyway, it is
        # applied like any batch, so nothing is lost and nothing counted twice (offsets are checked).
        event: Any
        async for event in stream.events():
            message = event.message
            log.warning("ingest agent received %s[%d]@%d", message.topic, message.partition, message.offset)
            with writing_partition(message.topic, message.partition):
                result = processor.process(
                    message.topic, message.partition, [_FaustRecord(message)], store, int(time.time() * 1000)
                )
            reader.send(result)
            await store.send_pending(app.producer_client())

    app.agent(source, name="kpimon.ingest")(ingest)

    async def read_sources() -> None:
        app.track_topics(
            [
                settings.dead_letters,
                settings.rekeyed,
                settings.partials,
                settings.kpis,
                users.changelog_topic.get_topic_name(),
            ]
        )
        await reader.run()

    app.task(read_sources)
    app.before_stop.append(reader.stop)

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        await reader.release({(tp.topic, tp.partition) for tp in revoked})

    app.on_partitions_revoked.connect(on_revoked)

    async def flush_partials() -> None:
        await kpimon.flush_partials()

    app.timer(settings.flush_interval, name="kpimon.flush_partials")(flush_partials)

    logged: dict[tuple[str, str], int] = {}

    async def log_rejections() -> None:
        # Dead letters are counted in /metrics; without this line a worker would drop a backfill's old
        # events as too_late without a word in its log.
        nonlocal logged
        current = dict(kpimon.metrics.rejections)
        line = rejection_summary(logged, current, settings.max_lateness_days)
        logged = current
        if line is not None:
            log.warning("last %.0f s: %s", settings.rejection_log_interval, line)

    app.timer(settings.rejection_log_interval, name="kpimon.log_rejections")(log_rejections)

    async def on_users_recovered() -> None:
        kpimon.rebuild_counters()
        await reader.assign(set(kpimon.assigned()))

    users.on_recover(on_users_recovered)


class _FaustRecord:
    """A Faust message seen as a `SourceRecord`."""

    def __init__(self, message: Any) -> None:
        self.offset: int = message.offset
        self.key: bytes | None = message.key
        self.value: bytes | None = message.value
        ts = getattr(message, "timestamp", None)
        self.timestamp: int | None = int(ts * 1000) if ts else None
        headers = message.headers or ()
        self.headers = list(headers.items() if isinstance(headers, dict) else headers)
