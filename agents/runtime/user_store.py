"""The user-state table as the bulk path writes it: the store at once, the changelog in record batches.

A Faust table sends one changelog record per assignment through Faust's producer buffer and aiokafka's
per-message `send`: about 20 us of Python per record, a quarter of a worker's CPU under a backfill. Here a
write goes to the table's store (memory or RocksDB, exactly where Faust would put it) and its changelog
record is appended to an aiokafka record batch of the same changelog partition; `send_pending` hands the
batches to the producer. The changelog topic, its partitioning, recovery and the RocksDB persisted
offsets stay Faust's: only the per-record send is replaced.

Every user-state write of the worker must go through one `UserStore`: two writers of one changelog
partition could reorder a user's records, and recovery keeps the last one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from faust.types import TP

from kpimon.agents import compat
from kpimon.streams.userstate import UserState

log = logging.getLogger(__name__)


class UserStore(MutableMapping[bytes, UserState]):
    """A mapping over a Faust table's store whose writes are changelogged in batches.

    Writes must happen inside `compat.writing_partition` (as a Faust table's must happen
    while an event is processed): the partition of the current event is the changelog partition.
    """

    def __init__(self, table: Any) -> None:
        """`table` is the Faust table (`tables.table`) whose store and changelog topic are used."""
        self.table = table
        self._pending: dict[int, list[tuple[bytes, bytes]]] = {}
        self._pending_bytes = 0
        # One hand-over at a time: two could interleave their batches of one partition (the source reader
        # and the ingest agent's fallback both send), and recovery keeps a key's last record.
        self._sending = asyncio.Lock()
        #: Called with the changelog topic and the record count of a batch Kafka did not take (metrics).
        self.on_send_error: Callable[[str, int], None] | None = None
        self._raw_store_of: Any = None
        self._raw_store = False
        self._memory: dict[Any, Any] | None = None

    @property
    def _store(self) -> Any:
        return self.table.data

    def _raw(self, store: Any) -> bool:
        """Whether `store` keeps bytes (compat.raw_store), asked once per store object: the isinstance
        check against Faust's abstract base class cost 0.5 us per read, 4 % of a worker. Notes the dict of
        a memory store (`compat.memory_dict`) at the same time."""
        if store is not self._raw_store_of:
            self._raw_store_of, self._raw_store = store, compat.raw_store(store)
            self._memory = compat.memory_dict(store)
        return self._raw_store

    def __getitem__(self, key: bytes) -> UserState:
        state: UserState = self._store[key]
        return state

    def get(self, key: bytes, default: UserState | None = None) -> UserState | None:  # type: ignore[override]
        """The state of `key`, or `default`.

        From RocksDB straight through the store's raw read and UserState's own decoding: the store's
        mapping interface raises and catches a KeyError for every unknown user and decodes through
        Faust's serializer registry, a fifth of a worker's CPU when most users are new.
        """
        store = self._store
        if self._raw(store):
            raw = compat.raw_get(store, key)
            return default if raw is None else UserState.from_bytes(raw)
        state: UserState | None = (self._memory if self._memory is not None else store).get(key)
        return default if state is None else state

    def __setitem__(self, key: bytes, state: UserState) -> None:
        self.put_encoded(key, state, state.to_bytes())

    def put_encoded(self, key: bytes, state: UserState, value: bytes) -> None:
        """Write `state`, whose `to_bytes()` is `value` (the compiled core encodes the states it changes)."""
        partition = compat.current_partition()
        if partition is None:
            raise RuntimeError("user states are written while a source partition is processed")
        store = self._store
        if self._raw(store):
            # RocksDB keeps bytes: store the changelog's own encoding instead of encoding twice.
            compat.raw_set(store, key, value)
        elif self._memory is not None:
            self._memory[key] = state
        else:
            store[key] = state
        pending = self._pending.get(partition)
        if pending is None:
            pending = self._pending[partition] = []
        pending.append((key, value))
        self._pending_bytes += len(key) + len(value)

    def __delitem__(self, key: bytes) -> None:
        raise NotImplementedError("user states are never deleted")

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._store.keys())

    def __len__(self) -> int:
        return len(self._store)

    def keys_of_partition(self, partition: int) -> Iterator[bytes]:
        """The keys of a source partition's states: lazily from its RocksDB database, else a snapshot of
        every key (the caller checks each state's partition). A list of a million fresh key objects per
        partition was over 100 MB of a worker's peak memory with RocksDB."""
        store: Any = self._store
        keys = compat.partition_keys(store, partition)
        return keys if keys is not None else iter(list(store.keys()))

    @property
    def pending(self) -> int:
        """Changelog records written to the store but not yet handed to the producer."""
        return sum(len(records) for records in self._pending.values())

    async def send_pending(self, producer: Any, min_bytes: int = 0) -> int:
        """Hand the pending changelog records to `producer` (aiokafka's), in record batches, in order.

        With `min_bytes`, only once that much is pending: a record batch waits until the previous one of
        its partition is on its way, so sending a few records after every fetched batch would make each
        fetched batch wait a produce round trip. Returns how many records were handed over. They are
        delivered with the producer's next flush; a RocksDB store then notes the changelog offset it
        holds (as Faust's own changelog callback does).
        """
        if not self._pending or self._pending_bytes < min_bytes:
            return 0
        async with self._sending:
            return await self._send_all(producer)

    async def _send_all(self, producer: Any) -> int:
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        topic: str = self.table.changelog_topic.get_topic_name()
        sent = 0
        for partition, records in pending.items():
            batch = producer.create_batch()
            count = 0
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    if count == 0:
                        raise ValueError(
                            f"a user state of {len(value)} bytes exceeds the producer's batch size"
                        )
                    await self._send(producer, batch, topic, partition, count)
                    batch, count = producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None)
                count += 1
            await self._send(producer, batch, topic, partition, count)
            sent += len(records)
        return sent

    async def _send(self, producer: Any, batch: Any, topic: str, partition: int, count: int) -> None:
        future = await producer.send_batch(batch, topic, partition=partition)
        store = self._store
        tp = TP(topic, partition)

        def persisted(done: Any) -> None:
            # What Faust's changelog callback does for each record: RocksDB remembers how far the
            # changelog it holds goes, so a restart reads only the rest.
            if not done.cancelled() and done.exception() is None:
                store.set_persisted_offset(tp, done.result().offset + count - 1)
            elif not done.cancelled() and self.on_send_error is not None:
                self.on_send_error(topic, count)

        future.add_done_callback(persisted)
