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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.serializers import codecs

from kpimon.agents import compat
from kpimon.agents.config.kafka_security import read_secret
from kpimon.agents.config.settings import Settings
from kpimon.agents.pipeline.batch import BatchProcessor
from kpimon.agents.pipeline.core import CoreName
from kpimon.agents.pipeline.deadletters import Redactor
from kpimon.agents.pipeline.engine import SourceEngine, rebuild_counters
from kpimon.agents.pipeline.metrics import PipelineMetrics, rejection_summary
from kpimon.agents.pipeline.pacing import Turns
from kpimon.agents.runtime.checkpoint import Checkpoint
from kpimon.agents.runtime.faust_app import KpimonApp
from kpimon.agents.runtime.kafka_io import FaustCommitter, FaustOutbox, KafkaFetcher
from kpimon.agents.runtime.ownership import Ownership
from kpimon.agents.runtime.publishing import PartialsFlusher
from kpimon.agents.runtime.source_reader import ReaderConfig, SourceReader
from kpimon.agents.runtime.tables import raw_topic, table
from kpimon.agents.runtime.user_store import UserStore
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Kind

log = logging.getLogger(__name__)


class UserStateCodec(codecs.Codec):
    """Changelog encoding of the user-state table: UserState's own compact msgpack bytes."""

    def _dumps(self, obj: Any) -> bytes:
        return bytes(obj.to_bytes())

    def _loads(self, s: bytes) -> Any:
        return UserState.from_bytes(s)


codecs.register("kpimon_user_state", UserStateCodec())


@dataclass(frozen=True)
class Ingest:
    """The source side as registered on the app."""

    #: The Faust user-state table (its changelog, recovery and store are Faust's).
    users: Any
    #: The one writer of user states (runtime/user_store.py).
    store: UserStore
    reader: SourceReader
    flusher: PartialsFlusher
    #: The batch core the reader's batches go through (`native` or `python`, pipeline/core.py).
    core: CoreName


def register_ingest(
    app: KpimonApp,
    settings: Settings,
    engine: SourceEngine,
    metrics: PipelineMetrics,
    ownership: Ownership,
    turns: Turns,
    partials_topic: Any,
    kafka_down: Callable[[], bool] = lambda: False,
) -> Ingest:
    """Register the ingest agent, the user-state table, the source reader and the partial flush timer."""
    kinds: dict[str, Kind] = {settings.clicks: "clicks", settings.surveys: "surveys"}
    labels: dict[Kind, str] = {"clicks": settings.clicks, "surveys": settings.surveys}
    source = raw_topic(app, settings.clicks, settings.surveys, settings.rekeyed)
    users = table(app, "user-state", settings.partitions, "kpimon_user_state")
    # Every user-state write goes through this one store: changelog records in batches (user_store.py).
    store = UserStore(users)
    store.on_send_error = metrics.produce_error
    processor = BatchProcessor(engine, metrics, settings.policy, kinds, labels, core=settings.core or None)
    # Said once at start (and as kpimon_build_info's `core` label): which engine a run's numbers came from.
    log.info("batch core: %s", processor.core)
    redactor = (
        Redactor(read_secret("dead_letter_redact_key_file", settings.dead_letter_redact_key_file).encode())
        if settings.dead_letter_redact
        else None
    )
    outbox = FaustOutbox(app, (settings.dead_letters, settings.rekeyed))
    reader = SourceReader(
        ReaderConfig(
            source_topics=frozenset((settings.clicks, settings.surveys, settings.rekeyed)),
            dead_letters_topic=settings.dead_letters,
            rekeyed_topic=settings.rekeyed,
            batch_max_messages=settings.batch_max_messages,
            commit_interval=settings.commit_interval,
        ),
        processor,
        store,
        fetcher=lambda: KafkaFetcher(settings),
        outbox=outbox,
        checkpoint=Checkpoint(store, outbox, FaustCommitter(app), engine.positions),
        turns=turns,
        redactor=redactor,
        kafka_down=kafka_down,
    )
    flusher = PartialsFlusher(
        engine,
        partials_topic,
        settings.partitions,
        turns,
        stopping=lambda: bool(app.should_stop),
        generation=ownership.epoch,
        caught_up=lambda: reader.caught_up,
    )

    async def ingest(stream: Any) -> None:
        # Subscribing is what makes Faust assign the source partitions (with the user-state table's);
        # its consumer does not fetch them (runtime/faust_app.py). Should an event arrive anyway, it is
        # applied like any batch, so nothing is lost and nothing counted twice (offsets are checked).
        event: Any
        async for event in stream.events():
            message = event.message
            log.warning("ingest agent received %s[%d]@%d", message.topic, message.partition, message.offset)
            with compat.writing_partition(message.topic, message.partition):
                result = processor.process(
                    message.topic, message.partition, [_FaustRecord(message)], store, int(time.time() * 1000)
                )
            reader.send(result)
            await store.send_pending(outbox.batch_client())

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
        await flusher.flush()

    app.timer(settings.flush_interval, name="kpimon.flush_partials")(flush_partials)

    logged: dict[tuple[str, str], int] = {}

    async def log_rejections() -> None:
        # Dead letters are counted in /metrics; without this line a worker would drop a backfill's old
        # events as too_late without a word in its log.
        nonlocal logged
        current = dict(metrics.rejections)
        line = rejection_summary(logged, current, settings.max_lateness_days)
        logged = current
        if line is not None:
            log.warning("last %.0f s: %s", settings.rejection_log_interval, line)

    app.timer(settings.rejection_log_interval, name="kpimon.log_rejections")(log_rejections)

    async def on_users_recovered() -> None:
        # Only partitions whose user states this recovery restored: the assignment may already hold the
        # next rebalance's partitions, whose recovery calls this again (compat.restored_partitions).
        restored = compat.restored_partitions(app, users)
        if restored is None:
            log.info("a newer rebalance began before the user states were restored; waiting for it")
            return
        owned = ownership.owned(settings.clicks) & restored
        rebuild_counters(engine, owned, users.values(), int(time.time() * 1000))
        await reader.assign({tp for tp in ownership.assigned() if tp[1] in owned})

    users.on_recover(on_users_recovered)
    return Ingest(users=users, store=store, reader=reader, flusher=flusher, core=processor.core)


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
