"""The narrow interfaces the source reader, the checkpoint and the publishers work through.

Each is what one of them needs of Kafka or Faust, and no more: `kafka_io` adapts the real clients to them,
and the unit tests (tests/unit/test_source_reader.py, test_checkpoint.py, test_publishing.py) use
in-memory fakes, so commit-after-flush, revoke, rebuild and flush are tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

#: A partition of a topic, as kpimon names it everywhere outside the Kafka clients.
TopicPartition = tuple[str, int]
Headers = Sequence[tuple[str, bytes]]


class SourceRecord(Protocol):
    """One fetched input message (aiokafka's ConsumerRecord has these attributes)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None
    headers: Any


class FetchError(Exception):
    """A fetch failed for a reason that may pass (the broker went away, a partition moved): retry."""


class Fetcher(Protocol):
    """Fetches assigned source partitions in bulk (an aiokafka consumer with manual assignment)."""

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Disconnect."""

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch exactly these partitions from now on, each from the group's committed offset."""

    async def getmany(self, timeout_ms: int, max_records: int) -> Mapping[TopicPartition, Sequence[Any]]:
        """The records fetched since the last call, by partition (waits up to `timeout_ms` for some).

        Raises `FetchError` when the fetch failed for a reason worth retrying."""

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's high watermark as last fetched, None when unknown."""

    async def position(self, partition: TopicPartition) -> int | None:
        """The next offset to fetch of an assigned partition (the committed one before the first fetch)."""


class Outbox(Protocol):
    """Where a worker's output records go: Faust's producer and the aiokafka producer under it."""

    def send_soon(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Queue one record (dead letters, re-keyed events) without waiting."""

    async def ebb(self) -> None:
        """Wait while the producer's buffer is over its limit (back-pressure on the reader)."""

    async def flush(self) -> None:
        """Return once every record queued so far is acknowledged by Kafka."""

    def batch_client(self) -> Any:
        """The aiokafka producer, for record-batch sends of the user-state changelog."""


class Committer(Protocol):
    """Commits source offsets for the consumer group (through its member, Faust's consumer)."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> bool:
        """Commit the offsets; False when nothing was committed (e.g. the partitions moved)."""


class ChangelogWriter(Protocol):
    """A store whose writes wait in memory until handed to the producer (runtime/user_store.py)."""

    async def send_pending(self, producer: Any, min_bytes: int = 0) -> int:
        """Hand pending changelog records to `producer`, once at least `min_bytes` are pending."""


class StateStore(ChangelogWriter, Protocol):
    """The user states of a worker (runtime/user_store.py): a mapping whose writes are changelogged."""

    def get(self, key: bytes, default: Any = None) -> Any:
        """The state of `key`, or `default`."""

    def __getitem__(self, key: bytes) -> Any:
        """The state of `key` (KeyError when unknown)."""

    def __setitem__(self, key: bytes, state: Any) -> None:
        """Write a state (to the store at once, to the changelog when pending records are sent)."""


class Sender(Protocol):
    """Sends records to one topic and waits for them to be queued (a Faust topic)."""

    async def send(self, *, key: bytes, value: bytes, partition: int | None = None) -> Any:
        """Queue one record on the producer."""
