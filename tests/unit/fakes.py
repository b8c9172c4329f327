"""In-memory stand-ins for the narrow interfaces of agents/runtime/ports.py, recording what happened in order.

Each fake appends to one shared `log`, so a test can assert the order of changelog sends, flushes and
commits across them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kpimon.agents.runtime.ports import FetchError, Headers, TopicPartition
from kpimon.streams.userstate import UserState


@dataclass(frozen=True)
class Record:
    """A fetched input message."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    headers: Sequence[tuple[str, bytes]] = ()


def click_record(offset: int, user: str, ts_ms: int, **fields: Any) -> Record:
    """A valid click of `user` at `ts_ms`, keyed by the user."""
    event = {"event_id": f"e-{user}-{offset}", "user_id": user, "ts": ts_ms, "type": "page_view", **fields}
    return Record(offset, user.encode(), json.dumps(event).encode(), ts_ms)


@dataclass
class FakeFetcher:
    """Serves queued records of the assigned partitions, in offset order, `max_records` at most per call."""

    log: list[tuple[Any, ...]]
    queued: dict[TopicPartition, list[Record]] = field(default_factory=dict)
    assignment: list[TopicPartition] = field(default_factory=list)
    failures: int = 0
    started: bool = False
    stopped: bool = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self.assignment = list(partitions)
        self.log.append(("assign", tuple(partitions)))

    async def getmany(self, timeout_ms: int, max_records: int) -> Mapping[TopicPartition, Sequence[Any]]:
        if self.failures:
            self.failures -= 1
            raise FetchError("broker gone")
        out: dict[TopicPartition, list[Record]] = {}
        for tp in self.assignment:
            records = self.queued.get(tp, [])
            if records:
                out[tp], self.queued[tp] = records[:max_records], records[max_records:]
        return out

    def highwater(self, partition: TopicPartition) -> int | None:
        return None

    async def position(self, partition: TopicPartition) -> int | None:
        return None


@dataclass
class FakeOutbox:
    """Records sends and flushes; `batch_client()` is a token the changelog fake expects."""

    log: list[tuple[Any, ...]]
    sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)

    def send_soon(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        self.sent.append((topic, key, value, list(headers)))
        self.log.append(("send", topic))

    async def ebb(self) -> None:
        pass

    async def flush(self) -> None:
        self.log.append(("flush",))

    def batch_client(self) -> Any:
        return "batch-client"


@dataclass
class FakeCommitter:
    """Commits whatever it is given unless `refuse` is set."""

    log: list[tuple[Any, ...]]
    refuse: bool = False
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> bool:
        self.log.append(("commit", dict(offsets)))
        if self.refuse:
            return False
        self.committed.update(offsets)
        return True


class FakeStore(dict[bytes, UserState]):
    """User states in a dict; writes wait as pending changelog records until `send_pending`."""

    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self.log = log
        self.pending: list[bytes] = []

    def __setitem__(self, key: bytes, state: UserState) -> None:
        super().__setitem__(key, state)
        self.pending.append(key)

    async def send_pending(self, producer: Any, min_bytes: int = 0) -> int:
        assert producer == "batch-client"
        if not self.pending or len(self.pending) * 100 < min_bytes:
            return 0
        sent, self.pending = len(self.pending), []
        self.log.append(("changelog", sent))
        return sent


@dataclass
class FakeSender:
    """A topic: remembers what was sent, with the partition asked for."""

    sent: list[tuple[bytes, bytes, int | None]] = field(default_factory=list)

    async def send(self, *, key: bytes, value: bytes, partition: int | None = None) -> None:
        self.sent.append((key, value, partition))
