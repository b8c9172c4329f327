"""A fetched batch without Kafka: outcomes, dead letters, re-keying, one table write per changed user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kpimon.agents.pipeline.batch import KIND_HEADER, BatchProcessor, StateCache
from kpimon.agents.pipeline.core import CoreName, native_module
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.metrics import PipelineMetrics
from kpimon.streams.events import MS_PER_DAY
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Policy
from tests import events

NOW = 1_795_500_000_000
POLICY = Policy(max_lateness_days=90)


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = NOW
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class CountingTable(dict[bytes, UserState]):
    """A user-state table that counts writes (each is a changelog record in the worker)."""

    writes = 0

    def __setitem__(self, key: bytes, value: UserState) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def click(user: str, n: int, days_ago: int = 0) -> bytes:
    """The click message number `n` of `user`, `days_ago` days before NOW."""
    ts = NOW - days_ago * MS_PER_DAY
    return events.message(events.click(user_id=user, ts=ts, event_id=f"c-{user}-{n}", type="tap"))


def processor(core: CoreName | None = None) -> tuple[BatchProcessor, SourceEngine, CollectorRegistry]:
    registry = CollectorRegistry()
    engine = SourceEngine(90)
    metrics = PipelineMetrics(registry, topics=("clicks", "surveys"))
    kinds: Any = {"clicks": "clicks", "surveys": "surveys"}
    labels: Any = {"clicks": "clicks", "surveys": "surveys"}
    return BatchProcessor(engine, metrics, POLICY, kinds, labels, core=core), engine, registry


def sample(registry: CollectorRegistry, outcome: str, topic: str = "clicks") -> float:
    value = registry.get_sample_value("kpimon_events_total", {"topic": topic, "outcome": outcome})
    return value or 0.0


def test_a_batch_counts_outcomes_and_writes_each_changed_user_once() -> None:
    batch, engine, registry = processor()
    table = CountingTable()
    records = [
        Record(0, b"u1", click("u1", 0)),
        Record(1, b"u1", click("u1", 1)),
        Record(2, b"u1", click("u1", 2, days_ago=1)),
        Record(3, b"u2", click("u2", 0)),
        Record(4, b"u3", b"{not json"),
    ]
    result = batch.process("clicks", 0, records, table, NOW)
    assert result.accepted == 4
    assert sample(registry, "accepted") == 4
    assert sample(registry, "rejected") == 1
    # Three events of u1 changed its state twice (two days); one write per changed user per batch.
    assert table.writes == 2
    assert set(table) == {b"u1", b"u2"}
    assert [dict(d.headers)["kpimon-reason"] for d in result.dead_letters] == [b"invalid_json"]
    assert result.dead_letters[0].value == b"{not json"  # original bytes
    assert engine.positions[("clicks", 0)] == 5


def test_offsets_already_processed_are_skipped() -> None:
    batch, engine, registry = processor()
    table = CountingTable()
    first = [Record(0, b"u1", click("u1", 0)), Record(1, b"u1", b"[]")]
    batch.process("clicks", 0, first, table, NOW)
    # A seek back to an older committed offset re-delivers offsets 0 and 1: nothing is counted twice.
    again = [*first, Record(2, b"u2", click("u2", 0))]
    result = batch.process("clicks", 0, again, table, NOW)
    assert result.accepted == 1
    assert len(result.dead_letters) == 0
    assert sample(registry, "accepted") == 2
    assert sample(registry, "rejected") == 1
    assert engine.positions[("clicks", 0)] == 3
    assert engine.partitions[0].version == 3


def test_unkeyed_valid_events_are_rekeyed_with_their_kind() -> None:
    batch, _, registry = processor()
    result = batch.process("rekeyed", 0, [Record(0, None, click("u9", 0))], CountingTable(), NOW)
    assert [(r.key, r.headers) for r in result.rekeyed] == [(b"u9", [(KIND_HEADER, b"clicks")])]
    assert result.accepted == 0
    assert sample(registry, "accepted") == 0


def test_a_rekeyed_survey_is_read_as_a_survey() -> None:
    batch, _, registry = processor()
    event = events.message(events.survey(user_id="u1", ts=NOW, survey="csat", score=4))
    record = Record(0, b"u1", event, headers=[(KIND_HEADER, b"surveys")])
    assert batch.process("rekeyed", 0, [record], CountingTable(), NOW).accepted == 1
    assert sample(registry, "accepted", topic="surveys") == 1


def test_a_bug_dead_letters_the_event_instead_of_raising() -> None:
    batch, engine, registry = processor("python")

    def broken(*_: Any) -> str:
        raise RuntimeError("boom")

    engine.on_event = broken  # type: ignore[method-assign]
    result = batch.process("clicks", 0, [Record(0, b"u1", click("u1", 0))], CountingTable(), NOW)
    headers = dict(result.dead_letters[0].headers)
    assert headers["kpimon-reason"] == b"internal_error"
    assert b"boom" in headers["kpimon-detail"]
    assert sample(registry, "rejected") == 1


class FailingCore:
    """A compiled core with a bug: it raises `error` (before or while applying the batch)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def process(self, *_: Any) -> Any:
        raise self.error


@pytest.mark.skipif(native_module() is None, reason="the compiled core is not built")
def test_a_bug_of_the_compiled_core_leaves_the_batch_to_the_python_engine() -> None:
    batch, _, registry = processor("native")
    batch._native = FailingCore(ValueError("boom"))  # type: ignore[assignment]
    table = CountingTable()
    result = batch.process(
        "clicks", 0, [Record(0, b"u1", click("u1", 0)), Record(1, b"u1", click("u1", 1))], table, NOW
    )
    assert result.accepted == 2 and not result.dead_letters
    assert table[b"u1"].first_seen == NOW // MS_PER_DAY
    assert sample(registry, "accepted") == 2
    # Failing after it changed states or counters: retrying in Python would count the batch twice.
    batch._native = FailingCore(batch._apply_error("half done"))  # type: ignore[assignment]
    with pytest.raises(batch._apply_error):
        batch.process("clicks", 0, [Record(2, b"u1", click("u1", 2))], table, NOW)


def test_the_state_cache_reads_each_user_once_and_writes_back_only_changes() -> None:
    table = CountingTable({b"u1": UserState(), b"u2": UserState()})
    table.writes = 0
    cache = StateCache(table)
    assert cache.get(b"u1") is table[b"u1"]
    assert cache.get(b"missing") is None
    cache[b"u3"] = UserState()
    assert table.writes == 0  # nothing reaches the table before write_back
    assert cache.write_back() == 1
    assert set(table) == {b"u1", b"u2", b"u3"}
    assert cache.write_back() == 0


def test_the_delay_histogram_counts_batches_like_prometheus_histograms() -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, topics=("clicks",))
    metrics.accepted_many("clicks", [0.05, 0.07, -2.0, 3600.0, 10**7])
    metrics.accepted_many("clicks", [1.0])

    def bucket(le: str) -> float | None:
        return registry.get_sample_value("kpimon_event_delay_seconds_bucket", {"topic": "clicks", "le": le})

    # Bounds are inclusive (le), negative delays count as 0, huge ones only in +Inf.
    assert bucket("0.05") == 2
    assert bucket("0.1") == 3
    assert bucket("1.0") == 4
    assert bucket("3600.0") == 5
    assert bucket("604800.0") == 5
    assert bucket("+Inf") == 6
    assert registry.get_sample_value("kpimon_event_delay_seconds_count", {"topic": "clicks"}) == 6
    assert registry.get_sample_value("kpimon_event_delay_seconds_sum", {"topic": "clicks"}) == pytest.approx(
        0.12 + 3601 + 10**7
    )
    assert registry.get_sample_value("kpimon_events_total", {"topic": "clicks", "outcome": "accepted"}) == 6
