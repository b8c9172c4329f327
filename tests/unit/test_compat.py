"""Contract tests of agents/compat.py: each private Faust or aiokafka API kpimon uses still does its job.

One test per entry of the compat module, against the installed (pinned) faust-streaming and aiokafka.
When an upgrade breaks one, this file names it; nothing else in kpimon touches framework internals.
"""

from __future__ import annotations

import collections
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.stores.base import SerializedStore
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from kpimon.agents import compat
from kpimon.agents.app import create_app
from kpimon.agents.config.settings import Settings


def test_writing_partition_sets_the_event_faust_routes_table_writes_by() -> None:
    assert compat.current_partition() is None
    with compat.writing_partition("clicks", 3):
        event = faust.current_event()
        assert event is not None and event.message.partition == 3 and event.message.topic == "clicks"
        assert compat.current_partition() == 3
        with compat.writing_partition("clicks", 1):
            assert compat.current_partition() == 1
        assert compat.current_partition() == 3
    assert compat.current_partition() is None


def test_the_bulk_consumer_leaves_bulk_topics_unfetched(tmp_path: Path) -> None:
    assert "_set_active_tps" in vars(aiokafka_driver.Consumer.__mro__[1]) or hasattr(
        aiokafka_driver.Consumer, "_set_active_tps"
    )
    kpimon = create_app(Settings(app_id="t-compat", data_dir=tmp_path))
    consumer = kpimon.app.consumer
    assert isinstance(consumer, compat.bulk_topics_consumer())
    active = consumer._set_active_tps({TP("clicks", 0), TP("surveys", 1), TP("kpimon-partials", 0)})
    assert active == {TP("kpimon-partials", 0)}


def test_the_bulk_topics_app_is_a_faust_app_built_on_first_use() -> None:
    assert issubclass(compat.BulkTopicsApp, faust.App)
    assert compat.BulkTopicsApp is compat.bulk_topics_app()
    assert callable(getattr(faust.App, "_new_transport", None))
    with pytest.raises(AttributeError):
        _ = compat.NoSuchThing  # type: ignore[attr-defined]


def test_the_aiokafka_producer_is_behind_fausts_ensure_producer(tmp_path: Path) -> None:
    """Before the app starts there is none; every Kafka test then sends the changelog through it."""
    from faust.exceptions import NotReady

    kpimon = create_app(Settings(app_id="t-compat", data_dir=tmp_path))
    assert isinstance(kpimon.app.producer, aiokafka_driver.Producer)
    with pytest.raises(NotReady):
        compat.aiokafka_producer(kpimon.app)


async def test_fausts_producer_is_idempotent_with_acks_all(tmp_path: Path) -> None:
    """The worker's aiokafka producer (Faust's, which sends the user-store changelog batches too)."""
    assert "_settings_extra" in vars(aiokafka_driver.Producer)
    kpimon = create_app(Settings(app_id="t-compat", data_dir=tmp_path))
    assert isinstance(kpimon.app.producer, compat.durable_producer())
    producer = kpimon.app.producer._new_producer()
    try:
        # aiokafka keeps idempotence as a transaction manager without a transactional id, acks in its sender.
        manager = producer._txn_manager
        assert manager is not None and manager.transactional_id is None
        assert producer._sender._acks == -1
    finally:
        await producer.stop()


def test_fausts_consumer_commits_a_mapping_of_offsets() -> None:
    commit = aiokafka_driver.Consumer._commit
    assert inspect.iscoroutinefunction(commit)
    assert list(inspect.signature(commit).parameters) == ["self", "offsets"]


def test_rebuilding_the_changelog_topic_uses_the_tables_serializers(tmp_path: Path) -> None:
    kpimon = create_app(Settings(app_id="t-compat", data_dir=tmp_path))
    table = kpimon.users
    assert table.changelog_topic.value_serializer == table.value_serializer == "kpimon_user_state"
    compat.rebuild_changelog_topic(table)
    assert table.changelog_topic.value_serializer == "kpimon_user_state"


def test_the_rocksdb_store_reads_and_writes_raw_bytes_per_partition(tmp_path: Path) -> None:
    kpimon = create_app(Settings(app_id="t-compat", data_dir=tmp_path, store="rocksdb"))
    store = kpimon.users.data
    assert compat.raw_store(store) and isinstance(store, SerializedStore)
    with compat.writing_partition("clicks", 2):
        compat.raw_set(store, b"k", b"v")
    assert compat.raw_get(store, b"k") == b"v"
    assert compat.raw_get(store, b"missing") is None
    store.set_persisted_offset(TP(kpimon.users.changelog_topic.get_topic_name(), 2), 7)
    keys = compat.partition_keys(store, 2)
    assert keys is not None and list(keys) == [b"k"]  # the persisted offset's own key is skipped
    memory = create_app(Settings(app_id="t-compat-memory", data_dir=tmp_path)).users.data
    assert not compat.raw_store(memory) and compat.partition_keys(memory, 0) is None
    # The memory store's dict is the store: what is written to one is read from the other.
    data = compat.memory_dict(memory)
    assert data is not None and compat.memory_dict(store) is None
    data[b"m"] = 1
    assert memory[b"m"] == 1 and memory.get(b"m") == 1
    memory[b"n"] = 2
    assert data[b"n"] == 2


def test_the_connection_probe_takes_kpimons_client_options() -> None:
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    from kpimon.agents.config.kafka_security import aiokafka_options

    parameters = inspect.signature(create_conn).parameters
    options = aiokafka_options(Settings())
    assert {"host", "port", "client_id", "request_timeout_ms"} | set(options) <= set(parameters)
    assert MetadataRequest([]) is not None  # the all-topics request the probe sends


def test_running_aiokafka_clients_take_a_new_retry_backoff() -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def clients() -> tuple[Any, Any]:
        return AIOKafkaProducer(bootstrap_servers="127.0.0.1:1"), AIOKafkaConsumer(
            bootstrap_servers="127.0.0.1:1"
        )

    producer, consumer = asyncio.run(clients())
    compat.set_retry_backoff([producer, consumer, None], 4.0)
    assert producer.client._retry_backoff == 4.0 and producer._sender._retry_backoff == 4.0
    assert consumer._client._retry_backoff == 4.0
    # The wrapped metadata update keeps its signature and is wrapped once.
    wrapped = producer.client._metadata_update
    compat.set_retry_backoff([producer], compat.DEFAULT_RETRY_BACKOFF)
    assert producer.client._metadata_update is wrapped
    assert list(inspect.signature(wrapped).parameters) == ["cluster_metadata", "topics"]
    assert producer.client._retry_backoff == compat.DEFAULT_RETRY_BACKOFF


def test_a_failed_metadata_update_waits_the_backoff() -> None:
    import asyncio
    import time

    from aiokafka import AIOKafkaProducer

    async def run() -> float:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        client = producer.client

        async def refused(cluster_metadata: object, topics: object) -> bool:
            return False

        client._metadata_update = refused
        compat.set_retry_backoff([producer], 0.3)
        started = time.monotonic()
        assert await client._metadata_update(client.cluster, set()) is False
        return time.monotonic() - started

    assert asyncio.run(run()) >= 0.3


def test_the_faust_consumer_client_and_the_commit_override_are_where_compat_looks(tmp_path: Path) -> None:
    kpimon = create_app(Settings(app_id="t-compat-commit", data_dir=tmp_path))
    consumer = kpimon.app.consumer
    assert compat.faust_consumer_client(kpimon.app) is None  # not started: no aiokafka consumer yet
    assert hasattr(consumer, "_thread")
    # The override replaces Faust's own _commit_tps, whose helpers it calls.
    assert "_commit_tps" in vars(type(consumer))
    for name in ("_filter_committable_offsets", "_handle_attached", "_commit_offsets"):
        assert callable(getattr(consumer, name)), name
    assert list(inspect.signature(aiokafka_driver.Consumer._commit_tps).parameters) == [
        "self",
        "tps",
        "start_new_transaction",
    ]


def test_the_watched_worker_arms_its_watchdog_on_the_stop_signals() -> None:
    from mode import Worker

    for name in ("_on_sigterm", "_on_sigint"):
        assert callable(getattr(Worker, name)), name
        assert name in vars(compat.watched_worker())


def _fetched(batches: list[list[tuple[int, bytes | None, bytes | None]]], fetch_offset: int) -> Any:
    """aiokafka's PartitionRecords over record batches of (offset, key, value), as a fetch leaves them."""
    from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import TopicPartition

    data = bytearray()
    for records in batches:
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
            base_sequence=-1, batch_size=1 << 20,
        )  # fmt: skip
        base = records[0][0]
        for offset, key, value in records:
            builder.append(
                offset - base, timestamp=1_700_000_000_000 + offset, key=key, value=value,
                headers=[("kpimon-kind", b"clicks")] if offset % 2 else [],
            )  # fmt: skip
        batch = builder.build()
        batch[0:8] = base.to_bytes(8, "big")  # the batch's base offset, as the broker assigns it
        data += batch
    return PartitionRecords(
        TopicPartition("clicks", 0), MemoryRecords(bytes(data)), [], fetch_offset, None, None, True,
        READ_UNCOMMITTED,
    )  # fmt: skip


def test_plain_records_yield_what_consumer_records_carry_without_building_them() -> None:
    """`plain_records` swaps the iterator of each fetch result stored in the fetcher's `_records`."""
    from aiokafka.consumer.consumer import AIOKafkaConsumer
    from aiokafka.consumer.fetcher import Fetcher, FetchResult
    from aiokafka.structs import ConsumerRecord, TopicPartition

    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start)
    assert "self._records = collections.OrderedDict()" in inspect.getsource(Fetcher.__init__)
    assert "self._records[tp] = FetchResult(" in inspect.getsource(Fetcher)
    assert "_records_iterator" in inspect.getsource(FetchResult) + inspect.getsource(
        type(_fetched([[(0, b"k", b"v")]], 0))
    )
    batches = [[(5, b"u1", b"a"), (6, None, b"b"), (7, b"u2", None)], [(8, b"u3", b"c"), (9, b"u1", b"d")]]
    # Fetched from offset 6: the first record of the first batch was consumed already.
    expected = list(_fetched(batches, 6))
    assert all(type(r) is ConsumerRecord for r in expected) and [r.offset for r in expected] == [6, 7, 8, 9]

    # A started consumer's fetcher, as far as plain_records touches it.
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_records=collections.OrderedDict()))
    assert compat.plain_records(consumer)
    partition_records = _fetched(batches, 6)
    tp = TopicPartition("clicks", 0)
    consumer._fetcher._records[tp] = FetchResult(
        tp, partition_records=partition_records, assignment=None, backoff=0
    )
    plain = list(partition_records)
    assert plain and not any(type(r) is ConsumerRecord for r in plain)
    fields = ("offset", "key", "value", "timestamp")
    assert [tuple(getattr(r, f) for f in fields) for r in plain] == [
        tuple(getattr(r, f) for f in fields) for r in expected
    ]
    assert [list(r.headers) for r in plain] == [list(r.headers) for r in expected]
    assert partition_records.next_fetch_offset == 10  # the position aiokafka moves the consumer to
    assert compat.plain_records(object()) is False  # not an aiokafka consumer: left alone


async def test_restored_partitions_reads_the_partitions_fausts_recovery_restores(tmp_path: Path) -> None:
    from faust.tables.recovery import Recovery

    kpimon = create_app(Settings(app_id="t-compat-restored", data_dir=tmp_path, partitions=4))
    users, recovery = kpimon.users, kpimon.app.tables.recovery
    assert isinstance(recovery, Recovery)
    assert compat.restored_partitions(kpimon.app, users) == set()
    # Recovery.on_rebalance adds each assigned changelog partition with add_active, then sets the signal.
    changelog = users.changelog_topic.get_topic_name()
    for partition in (1, 3):
        recovery.add_active(users, TP(changelog, partition))
    assert compat.restored_partitions(kpimon.app, users) == {1, 3}
    assert compat.restored_partitions(kpimon.app, kpimon.aggregates) == set()
    recovery.signal_recovery_start.set()  # a newer rebalance began
    assert compat.restored_partitions(kpimon.app, users) is None
    # The order this works around: the tables' callbacks run before the generation is checked.
    source = inspect.getsource(Recovery.on_recovery_completed)
    callbacks = source.index("table.on_recovery_completed(")
    assert callbacks < source.index("consumer_generation_id != generation_id")
    on_rebalance = inspect.getsource(Recovery.on_rebalance)
    assert on_rebalance.index("self.add_active(") < on_rebalance.index("self.signal_recovery_start.set()")


def test_the_prompt_table_manager_is_fausts_without_its_startup_sleep(tmp_path: Path) -> None:
    from faust.tables import TableManager

    kpimon = create_app(Settings(app_id="t-compat-tables", data_dir=tmp_path))
    assert isinstance(kpimon.app.tables, compat.prompt_table_manager())
    assert isinstance(kpimon.app.tables, TableManager)
    # Faust's on_start: the sleep, then what the override does.
    faust_start = inspect.getsource(TableManager.on_start)
    assert "await self.sleep(1.0)" in faust_start
    assert faust_start.index("self._update_channels()") < faust_start.index("self.recovery.start()")
    assert "sleep" not in inspect.getsource(compat.prompt_table_manager().on_start)
    assert callable(TableManager._update_channels)


def test_an_uncommitted_partition_is_sought_to_its_beginning_after_a_rebalance(tmp_path: Path) -> None:
    """What the seek override relies on: aiokafka's seek_to_committed leaves a partition without a committed
    offset where it is, Faust's perform_seek goes through seek_to_committed, and the helpers exist."""
    from aiokafka import AIOKafkaConsumer
    from faust.transport.consumer import Consumer

    aiokafka_seek = inspect.getsource(AIOKafkaConsumer.seek_to_committed)
    assert "if offset and offset > 0:" in aiokafka_seek
    assert "self.seek_to_committed()" in inspect.getsource(Consumer.perform_seek)
    kpimon = create_app(Settings(app_id="t-compat-seek", data_dir=tmp_path))
    consumer = kpimon.app.consumer
    assert "seek_to_committed" in vars(type(consumer))
    assert callable(consumer._is_changelog_tp)
    assert list(inspect.signature(consumer.seek).parameters) == ["partition", "offset"]
    changelog = kpimon.users.changelog_topic.get_topic_name()
    assert consumer._is_changelog_tp(TP(changelog, 0))
    assert not consumer._is_changelog_tp(TP(kpimon.settings.partials, 0))
