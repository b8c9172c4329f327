"""Every private or undocumented Faust, mode and aiokafka API kpimon uses: one function or class each.

Nothing else in kpimon touches a framework internal. Each entry names what it relies on and why no public
API does the job, and tests/unit/test_compat.py holds a contract test per entry against the installed
(pinned) versions: after an upgrade, that one test file says what broke.

The framework imports are inside the functions, so the configuration layer (the Kafka pre-flight) can use
this module without loading Faust.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust

    class BulkTopicsApp(faust.App):
        """What `bulk_topics_app()` returns, for the type checker (the module's `__getattr__` builds it)."""

        bulk_topics: frozenset[str]


def __getattr__(name: str) -> Any:
    # `compat.BulkTopicsApp` is built on first use, so importing this module does not import Faust.
    if name == "BulkTopicsApp":
        return bulk_topics_app()
    raise AttributeError(name)


@contextlib.contextmanager
def writing_partition(topic: str, partition: int) -> Iterator[None]:
    """Table and store writes inside this block go to `partition` (of the table's changelog and store).

    Faust routes a table write to the partition of the event being processed (`faust.current_event()`),
    and its RocksDB store writes that partition's database. A bulk batch has no Faust event, so a stand-in
    naming the partition is set in Faust's private context variable `faust.streams._current_event`.
    """
    from faust.streams import _current_event

    event = _PartitionEvent(topic, partition)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


def current_partition() -> int | None:
    """The partition of the event being processed (or named by `writing_partition`), None outside one."""
    event = _current_event()()
    return None if event is None else int(event.message.partition)


@functools.cache
def _current_event() -> Any:
    # Imported once: an import statement per user-state write cost as much as the rest of the call.
    from faust import current_event

    return current_event


class _PartitionEvent:
    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _PartitionMessage(topic, partition)


class _PartitionMessage:
    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


#: Seconds Faust's commit waits for the producer's flush before it gives up (the next commit tries again).
COMMIT_FLUSH_TIMEOUT = 10.0
#: aiokafka's default retry backoff (retry_backoff_ms=100), restored when a broker answers again.
DEFAULT_RETRY_BACKOFF = 0.1


@functools.cache
def bulk_topics_consumer() -> type[Any]:
    """Faust's aiokafka consumer class, except that it never fetches the app's `bulk_topics`.

    Faust has no public way to subscribe to a topic (so that its partitions are assigned with the tables'
    changelogs) without fetching it. This subclass overrides the private `Consumer._set_active_tps`, which
    decides the partitions the consumer thread fetches. It also seeks a partition without a committed
    offset to its beginning after a rebalance (`seek_to_committed`, with the private `_is_changelog_tp`):
    see there.
    """
    import asyncio

    from aiokafka.errors import KafkaError
    from faust.exceptions import ProducerSendError
    from faust.transport.drivers import aiokafka as aiokafka_driver

    class BulkTopicsConsumer(aiokafka_driver.Consumer):
        def _is_bulk(self, tp: Any) -> bool:
            return tp.topic in getattr(self.app, "bulk_topics", ())

        def _set_active_tps(self, tps: set[Any]) -> set[Any]:
            active: set[Any] = super()._set_active_tps(tps)
            active.difference_update([tp for tp in active if self._is_bulk(tp)])
            return active

        def resume_partitions(self, tps: Any) -> None:
            super().resume_partitions([tp for tp in tps if not self._is_bulk(tp)])

        async def seek_to_committed(self) -> Mapping[Any, int]:
            # Faust seeks every assigned partition to its committed offset once the tables are restored
            # (`perform_seek`); aiokafka seeks only those with one. Between the assignment and the pause
            # of its partitions, Faust's fetch loop can take records of a newly assigned partition, which
            # its streams then drop while the rebalance suspends them: without a committed offset nothing
            # rewinds, and those records are never processed. A static member restarted before its
            # predecessor committed kpimon-partials lost every partial sent before its restart that way
            # (issue #19: a third to a half of its groups' counts missing, in 2 runs of 7). Such a partition
            # starts from its beginning, as `consumer_auto_offset_reset="earliest"` would have it.
            committed: Mapping[Any, int] = await super().seek_to_committed()
            unread = [
                tp
                for tp, offset in committed.items()
                if not offset and not self._is_bulk(tp) and not self._is_changelog_tp(tp)
            ]
            for tp in unread:
                # Offset 0 without waiting for a round trip (an offset below the log's start, compacted
                # away, is reset to the earliest one); Faust's own seek also forgets the read offset.
                await self.seek(tp, 0)
            return committed

        def verify_event_path(self, now: float, tp: Any) -> None:
            # Faust's "no events processed from this partition" warnings would be about partitions it
            # deliberately does not read.
            if not self._is_bulk(tp):
                super().verify_event_path(now, tp)

        async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
            # Faust's own `_commit_tps` (private), with a time limit on the producer flush it does before
            # committing: while no broker answers, that flush never ends, and the worker's stop with it.
            # A flush that does not finish in time skips this commit; the next one commits the offsets.
            offsets = self._filter_committable_offsets(tps)
            if not offsets:
                return False
            flush = asyncio.ensure_future(self.app.producer.flush())
            try:
                # Shielded: cancelling a flush half-way could drop a record it had taken from the buffer.
                await asyncio.wait_for(asyncio.shield(flush), COMMIT_FLUSH_TIMEOUT)
            except (TimeoutError, KafkaError):
                return False
            try:
                await self._handle_attached(offsets)
            except ProducerSendError as exc:
                await self.crash(exc)
                return False
            return bool(await self._commit_offsets(offsets, start_new_transaction=start_new_transaction))

    return BulkTopicsConsumer


#: What `durable_producer` adds to the options of Faust's aiokafka producer (agents/config/topics.py's
#: DURABLE_PRODUCER, which this layer cannot import; tests/unit/test_compat.py checks they agree).
DURABLE_PRODUCER_OPTIONS: Mapping[str, Any] = {"acks": "all", "enable_idempotence": True}


@functools.cache
def durable_producer() -> type[Any]:
    """Faust's aiokafka `Producer`, making its aiokafka producer idempotent with acks=all.

    Faust turns idempotence on only for exactly-once processing (transactions), in the private
    `Producer._settings_extra()`, the options it adds to its settings; no setting turns it on otherwise.
    """
    from faust.transport.drivers.aiokafka import Producer

    class DurableProducer(Producer):
        def _settings_extra(self) -> Mapping[str, Any]:
            return {**super()._settings_extra(), **DURABLE_PRODUCER_OPTIONS}

    return DurableProducer


@functools.cache
def bulk_topics_app() -> type[Any]:
    """A `faust.App` base class whose consumer (`bulk_topics_consumer`) leaves `bulk_topics` unfetched.

    The transport's consumer class is a class attribute with no setting; the private `App._new_transport`
    is where an app gets its own transport instance, so setting it there affects only that app. Its
    producer class is set there too: `durable_producer`.
    """
    import faust

    consumer_class = bulk_topics_consumer()
    producer_class = durable_producer()

    class _BulkTopicsApp(faust.App):
        bulk_topics: frozenset[str] = frozenset()

        def _new_transport(self) -> Any:
            transport: Any = super()._new_transport()
            transport.Consumer = consumer_class
            transport.Producer = producer_class
            return transport

    return _BulkTopicsApp


def restored_partitions(app: Any, table: Any) -> set[int] | None:
    """Called first thing in a table's recovery callback: the partitions of `table` its restore has just
    brought up to date, or None when a newer rebalance has begun meanwhile.

    Faust's `Recovery.on_recovery_completed` runs the tables' recovery callbacks before it checks whether
    the consumer group has moved on: by then the consumer's assignment can already hold partitions of the
    next generation whose changelogs are not restored yet (issue #19: counters rebuilt from their empty
    states, and never rebuilt after). The recovery's private `signal_recovery_start` is set by the next
    rebalance (and cleared only when its recovery starts, after this callback's first step), and its
    `actives_for_table` holds the partitions of each table its current recovery restores. When a newer
    rebalance has begun, its recovery calls the callbacks again once it has restored its partitions.
    """
    recovery = app.tables.recovery
    if recovery.signal_recovery_start.is_set():
        return None
    return {int(tp.partition) for tp in recovery.actives_for_table.get(table, ())}


@functools.cache
def prompt_table_manager() -> type[Any]:
    """Faust's `TableManager` without the one-second sleep its `on_start` takes before the table recovery
    starts (and with it the consumer's subscription, so the group join: every start and restart waited it).

    The sleep lets tables declared while the app starts register first; kpimon declares its tables in
    `create_app`, before the worker starts. The class is Faust's `TableManager` setting; the overridden
    `on_start` calls what Faust's does after the sleep: the private `_update_channels`, then
    `recovery.start()`.
    """
    from faust.tables import TableManager

    class PromptTableManager(TableManager):
        async def on_start(self) -> None:
            if not self.should_stop:
                await self._update_channels()
                await self.recovery.start()

    return PromptTableManager


def aiokafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's (started with the app), for record-batch sends.

    Faust keeps it behind the private `Producer._ensure_producer()`; record batches (`create_batch`,
    `send_batch`) are aiokafka's public API, but Faust's producer does not expose them.
    """
    return app.producer._ensure_producer()


async def commit_offsets(consumer: Any, offsets: Mapping[Any, int]) -> bool:
    """Commit `offsets` through Faust's consumer, the group member; False when nothing was committed.

    Faust's public `Consumer.commit()` commits only what Faust's own streams acknowledged; the bulk reader's
    offsets go through the private `Consumer._commit(offsets)`, which filters out unassigned partitions.
    """
    return bool(await consumer._commit(offsets))


def rebuild_changelog_topic(table: Any) -> None:
    """Rebuild a table's changelog topic after its serializers were changed (private `_new_changelog_topic`).

    Faust builds the changelog topic in the table's constructor with serializers derived from the key and
    value types; restoring reads through that topic, so it must be rebuilt with the table's serializers.
    """
    table.changelog_topic = table._new_changelog_topic()


def raw_store(store: Any) -> bool:
    """Whether `store` keeps bytes (Faust's RocksDB store): `raw_get`/`raw_set` then apply."""
    from faust.stores.base import SerializedStore

    return isinstance(store, SerializedStore)


def memory_dict(store: Any) -> dict[Any, Any] | None:
    """The dict behind Faust's memory store (its `data`), None for any other store.

    The store's mapping interface is `mode`'s `FastUserDict`: two Python-level calls per read
    (`Mapping.get`, `__getitem__`) before the dict lookup, for every user of every batch.
    """
    from faust.stores.memory import Store

    data = getattr(store, "data", None) if type(store) is Store else None
    return data if type(data) is dict else None


def raw_get(store: Any, key: bytes) -> bytes | None:
    """A serialized store's bytes for `key`, or None: its private `_get`.

    The mapping interface raises and catches a KeyError per unknown key and decodes through Faust's
    serializer registry: a fifth of a worker's CPU when most users are new.
    """
    value: bytes | None = store._get(key)
    return value


def raw_set(store: Any, key: bytes, value: bytes) -> None:
    """Write bytes straight into a serialized store (private `_set`): the changelog's own encoding."""
    store._set(key, value)


def partition_keys(store: Any, partition: int) -> Iterator[bytes] | None:
    """The keys of one partition's RocksDB database, lazily; None for a store without such databases.

    Uses the RocksDB store's private `_db_for_partition` and skips its `offset_key` (where Faust keeps the
    persisted changelog offset, in the same database).
    """
    db_for_partition = getattr(store, "_db_for_partition", None)
    if db_for_partition is None:
        return None
    skip = store.offset_key
    keys = db_for_partition(partition).keys()  # an Rdict: lazy, and sees no later writes
    return (key for key in keys if key != skip)


async def probe_metadata(host: str, port: int, client_id: str, timeout_ms: int, options: Any) -> None:
    """Open one connection to a broker (TLS and SASL as `options` say) and ask for metadata.

    aiokafka's public clients log and swallow the cause of a failed bootstrap; its connection factory
    `aiokafka.conn.create_conn` and `aiokafka.protocol.metadata.MetadataRequest` (undocumented) raise it,
    which lets the pre-flight tell a wrong password from a wrong protocol.
    """
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    conn: Any = await create_conn(host, port, client_id=client_id, request_timeout_ms=timeout_ms, **options)
    try:
        await conn.send(MetadataRequest([]))
    finally:
        conn.close()


def set_retry_backoff(clients: Iterable[Any], seconds: float) -> None:
    """Make running aiokafka clients (producers, consumers) wait `seconds` between their retries.

    aiokafka retries a failed metadata update, connection, fetch or coordinator lookup every
    `retry_backoff_ms` (100 ms) for as long as no broker answers, and has no public way to change that on
    a running client. This sets the private attributes its retry loops read: `_retry_backoff` of the
    client (`AIOKafkaClient`), the producer's sender and the consumer's fetcher, `_retry_backoff_ms` of
    the group coordinator. It also makes each client wait that long after a failed metadata update
    (`metadata_backoff`).
    """
    for client in clients:
        if client is None:
            continue
        network = getattr(client, "client", None) or getattr(client, "_client", None)
        if network is not None:
            metadata_backoff(network)
        parts = [network, getattr(client, "_sender", None), getattr(client, "_fetcher", None)]
        for part in parts:
            if part is not None and hasattr(part, "_retry_backoff"):
                part._retry_backoff = seconds
        coordinator = getattr(client, "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "_retry_backoff_ms"):
            coordinator._retry_backoff_ms = seconds * 1000


def metadata_backoff(client: Any) -> None:
    """Make an `AIOKafkaClient` wait its retry backoff after a failed metadata update (once per client).

    aiokafka's producer, with records waiting for a partition leader, asks for a metadata update and waits
    for it; a failed update (no broker answers) returns at once, so it asks again at once: connection
    attempts as fast as they are refused, a fifth of a core while the broker is away (measured). The
    private `AIOKafkaClient._metadata_update` is wrapped so that a failed update waits `_retry_backoff`.
    """
    if getattr(client, "_kpimon_backoff", False):
        return
    update = client._metadata_update

    async def _metadata_update(cluster_metadata: Any, topics: Any) -> Any:
        import asyncio

        updated = await update(cluster_metadata, topics)
        if not updated:
            await asyncio.sleep(client._retry_backoff)
        return updated

    client._metadata_update = _metadata_update
    client._kpimon_backoff = True


def faust_consumer_client(app: Any) -> Any:
    """The aiokafka consumer under Faust's consumer (in Faust's consumer thread), None before it exists.

    Faust keeps it in the private `_thread._consumer` of its aiokafka consumer.
    """
    thread = getattr(app.consumer, "_thread", None)
    return getattr(thread, "_consumer", None)


@functools.cache
def watched_worker() -> type[Any]:
    """`faust.Worker` arming a watchdog (its `watchdog.start()`) when SIGTERM or SIGINT asks it to stop.

    mode's worker handles the signals in the private `_on_sigterm` and `_on_sigint`, and has no hook that
    runs when a stop is asked for (only when it has gone far enough to stop services).
    """
    import faust

    class WatchedWorker(faust.Worker):
        def __init__(self, *args: Any, watchdog: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.watchdog = watchdog

        def _on_sigterm(self) -> None:
            self.watchdog.start()
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            self.watchdog.start()
            super()._on_sigint()

    return WatchedWorker


def plain_records(consumer: Any) -> bool:
    """Make a started aiokafka consumer hand out its records as aiokafka's own record objects instead of
    building a `ConsumerRecord` for each; returns whether it could (else the consumer is left as it was).

    aiokafka's `getmany` unpacks every fetched record into a `ConsumerRecord` dataclass (11 fields, the
    headers copied into a tuple): most of its per-record cost, a fifth of a worker's CPU. The record
    objects it unpacks them from (`DefaultRecord`, `LegacyRecord`) have the same `offset`, `key`, `value`,
    `timestamp` and `headers` (a list of (str, bytes) pairs), which is all kpimon reads of a record
    (`pipeline.batch.SourceRecord`); they carry no topic or partition, which `getmany` gives per batch.

    The fetcher keeps each partition's fetched data in `Fetcher._records` (private) as a `FetchResult`
    over a `PartitionRecords`, whose private `_records_iterator` yields the records; this replaces that
    mapping with one whose stores swap the iterator for `_plain_iterator`, the same walk through the
    record batches (CRC check, transactions, control batches, positions) without the conversion. Only for
    consumers without key or value deserializers (kpimon's read bytes).
    """
    from aiokafka.consumer.fetcher import FetchResult, PartitionRecords

    fetcher: Any = getattr(consumer, "_fetcher", None)
    records = getattr(fetcher, "_records", None)
    if not isinstance(records, dict):
        return False

    class PlainRecords(type(records)):  # type: ignore[misc]
        """`Fetcher._records` whose fetch results yield aiokafka's record objects."""

        def __setitem__(self, tp: Any, result: Any) -> None:
            if type(result) is FetchResult:
                partition_records: Any = getattr(result, "_partition_records", None)
                if (
                    type(partition_records) is PartitionRecords
                    and partition_records._key_deserializer is None
                    and partition_records._value_deserializer is None
                ):
                    partition_records._records_iterator = _plain_iterator(partition_records)
            super().__setitem__(tp, result)

    plain = PlainRecords()
    for tp, result in records.items():
        plain[tp] = result
    fetcher._records = plain
    return True


def _plain_iterator(partition_records: Any) -> Iterator[Any]:
    """aiokafka's `PartitionRecords._unpack_records` (0.11-0.14), yielding the record objects as they are."""
    from aiokafka.consumer.fetcher import READ_COMMITTED

    self = partition_records
    records = self._records
    read_committed = self._isolation_level == READ_COMMITTED
    while records.has_next():
        batch = records.next_batch()
        if self._check_crcs and not batch.validate_crc():
            from aiokafka.errors import CorruptRecordException

            raise CorruptRecordException(f"Invalid CRC - {self._tp}")
        if read_committed and batch.producer_id is not None:
            # Transactions: aiokafka's own bookkeeping of aborted producers, unchanged.
            self._consume_aborted_up_to(batch.base_offset)
            if batch.is_control_batch and self._contains_abort_marker(batch):
                self._aborted_producers.discard(batch.producer_id)
            if batch.is_transactional and batch.producer_id in self._aborted_producers:
                self.next_fetch_offset = batch.next_offset
                continue
        if batch.is_control_batch:
            self.next_fetch_offset = batch.next_offset
            continue
        for record in batch:
            offset = record.offset
            if offset < self.next_fetch_offset:
                continue  # a compressed message set's records before the fetch offset
            self.next_fetch_offset = offset + 1
            yield record
        self.next_fetch_offset = batch.next_offset
