"""UserStore: writes land in the table's store at once and in the changelog as ordered record batches."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from kpimon.agents import compat
from kpimon.agents.app import create_app
from kpimon.agents.runtime.user_store import UserStore
from kpimon.streams.userstate import UserState


class FakeProducer:
    """aiokafka's batch API with real record batches; remembers what was sent, acknowledges at once."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes]]]] = []
        self.next_offset: dict[int, int] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)  # 0: no compression

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        records = DefaultRecordBatch(bytearray(batch._build()))
        pairs = [(bytes(r.key), bytes(r.value)) for r in records]
        self.sent.append((topic, partition, pairs))
        offset = self.next_offset.get(partition, 0)
        self.next_offset[partition] = offset + len(pairs)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(_Metadata(offset))
        return future


class _Metadata:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def _state(day: int) -> UserState:
    state = UserState()
    state.note_seen(day)
    return state


def _store(tmp_path: Path, store: str = "memory") -> tuple[Any, UserStore]:
    kpimon = create_app(_settings(tmp_path, store))
    return kpimon.users, UserStore(kpimon.users)


def _settings(tmp_path: Path, store: str) -> Any:
    from kpimon.agents.config.settings import Settings

    return Settings(app_id="t-user-store", data_dir=tmp_path, store=store)


async def test_writes_reach_the_store_at_once_and_the_changelog_in_order_by_partition(tmp_path: Path) -> None:
    table, users = _store(tmp_path)
    topic = table.changelog_topic.get_topic_name()
    with compat.writing_partition("clicks", 1):
        users[b"a"] = _state(100)
        users[b"b"] = _state(101)
        users[b"a"] = _state(102)  # a second write of one key in a batch: both records, in order
    with compat.writing_partition("clicks", 3):
        users[b"c"] = _state(103)
    assert users[b"a"].last_seen == 102 and users.get(b"c") is not None and users.get(b"zz") is None
    assert users.pending == 4
    producer = FakeProducer(batch_size=1 << 20)
    assert await users.send_pending(producer) == 4
    assert users.pending == 0
    by_partition = {(t, p): pairs for t, p, pairs in producer.sent}
    assert [k for k, _ in by_partition[topic, 1]] == [b"a", b"b", b"a"]
    assert [k for k, _ in by_partition[topic, 3]] == [b"c"]
    # The changelog record restores through the changelog topic's own codec (what recovery reads).
    serializers = table.app.serializers
    restored = serializers.loads_value(None, by_partition[topic, 1][2][1], serializer=table.value_serializer)
    assert restored == _state(102)
    assert await users.send_pending(producer) == 0  # nothing left


async def test_a_full_record_batch_is_sent_and_the_rest_follows_in_order(tmp_path: Path) -> None:
    _, users = _store(tmp_path)
    with compat.writing_partition("clicks", 0):
        for i in range(200):
            users[f"user-{i:03d}".encode()] = _state(100 + i % 7)
    producer = FakeProducer(batch_size=2048)
    assert await users.send_pending(producer) == 200
    assert len(producer.sent) > 1  # split over several record batches
    keys = [key for _, _, pairs in producer.sent for key, _ in pairs]
    assert keys == [f"user-{i:03d}".encode() for i in range(200)]


async def test_a_rocksdb_store_holds_the_bytes_and_notes_the_changelog_offset(tmp_path: Path) -> None:
    table, users = _store(tmp_path, store="rocksdb")
    topic = table.changelog_topic.get_topic_name()
    with compat.writing_partition("clicks", 2):
        for i in range(50):
            users[f"u{i}".encode()] = _state(200 + i)
        assert users[b"u7"] == _state(207)  # read back through the store's own decoding
        assert users.get(b"u8") == _state(208)  # and through the raw read
        assert users.get(b"nobody") is None
    producer = FakeProducer(batch_size=1024)
    await users.send_pending(producer)
    await asyncio.sleep(0)  # the acknowledgement callbacks
    from faust.types import TP

    # Faust resumes recovery after the last changelog offset the store holds: 50 records, offsets 0..49.
    assert table.data.persisted_offset(TP(topic, 2)) == 49


def test_a_write_outside_a_partition_is_refused(tmp_path: Path) -> None:
    _, users = _store(tmp_path)
    with pytest.raises(RuntimeError, match="source partition"):
        users[b"a"] = _state(1)


async def test_a_sweep_walks_one_rocksdb_partition_lazily_without_the_offset_key(tmp_path: Path) -> None:
    _, users = _store(tmp_path, store="rocksdb")
    with compat.writing_partition("clicks", 0):
        users[b"p0-a"] = _state(1)
        users[b"p0-b"] = _state(2)
    with compat.writing_partition("clicks", 1):
        users[b"p1-a"] = _state(3)
    await users.send_pending(FakeProducer(batch_size=1 << 20))
    await asyncio.sleep(0)  # the persisted offsets are now in the partitions' databases too
    keys = users.keys_of_partition(0)
    assert not isinstance(keys, list)
    assert sorted(keys) == [b"p0-a", b"p0-b"]
    assert list(users.keys_of_partition(1)) == [b"p1-a"]


async def test_with_the_memory_store_a_sweep_gets_a_snapshot_of_every_key(tmp_path: Path) -> None:
    _, users = _store(tmp_path)
    with compat.writing_partition("clicks", 0):
        users[b"a"] = _state(1)
    with compat.writing_partition("clicks", 1):
        users[b"b"] = _state(2)
    keys = users.keys_of_partition(0)
    with compat.writing_partition("clicks", 0):
        users[b"c"] = _state(3)  # a write during the sweep does not disturb it
    assert sorted(keys) == [b"a", b"b"]  # the engine skips states of other partitions itself


async def test_records_are_held_back_until_enough_are_pending(tmp_path: Path) -> None:
    _, users = _store(tmp_path)
    producer = FakeProducer(batch_size=1 << 20)
    with compat.writing_partition("clicks", 0):
        users[b"a"] = _state(1)
    assert await users.send_pending(producer, min_bytes=5_000) == 0
    assert producer.sent == [] and users.pending == 1
    with compat.writing_partition("clicks", 0):
        for i in range(300):
            users[f"user-{i}".encode()] = _state(i)
    assert await users.send_pending(producer, min_bytes=5_000) == 301
    assert users.pending == 0
    with compat.writing_partition("clicks", 0):
        users[b"b"] = _state(2)
    assert await users.send_pending(producer) == 1  # no threshold: everything (before a commit)


class SlowProducer(FakeProducer):
    """Suspends in every send, as aiokafka does while the previous batch of a partition drains."""

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        await asyncio.sleep(0.01)
        return await super().send_batch(batch, topic, partition=partition)


async def test_concurrent_hand_overs_keep_a_partitions_records_in_order(tmp_path: Path) -> None:
    _, users = _store(tmp_path)
    producer = SlowProducer(batch_size=512)  # several batches per hand-over
    with compat.writing_partition("clicks", 0):
        for i in range(200):
            users[b"k"] = _state(i)
    first = asyncio.create_task(users.send_pending(producer))
    await asyncio.sleep(0)  # the first hand-over is suspended in its first send
    with compat.writing_partition("clicks", 0):
        for i in range(200, 400):
            users[b"k"] = _state(i)
    await asyncio.gather(first, users.send_pending(producer))
    serializers = users.table.app.serializers
    days = [
        serializers.loads_value(None, value, serializer=users.table.value_serializer).last_seen
        for _, _, pairs in producer.sent
        for _, value in pairs
    ]
    assert len(producer.sent) > 4
    assert days == list(range(400))  # the changelog's last record of the key is its latest state
