"""One fetched batch of a source partition: validate every message, update user states, count outcomes.

Pure of Kafka and Faust: the caller hands in the records, the user-state table (any mutable mapping) and
the wall clock, and gets back what must be sent (dead letters, re-keyed events). Nothing raised by the
input leaves `process`: validation turns every bad message into a `Rejected`, and a bug while applying a
valid event dead-letters that event with reason `internal_error`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from kpimon.agents.pipeline.core import CoreName, native_module, selected
from kpimon.agents.pipeline.counters import COUNTER_NAMES
from kpimon.agents.pipeline.deadletters import dead_letter_headers
from kpimon.agents.pipeline.engine import PendingRuns, SourceEngine, UserTable
from kpimon.agents.pipeline.metrics import PipelineMetrics
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Accepted, Kind, Policy, Reason, Rejected, validate

if TYPE_CHECKING:
    from kpimon import _native

log = logging.getLogger(__name__)

#: Header of a rekeyed message: the input topic kind it was first read from.
KIND_HEADER = "kpimon-kind"
#: The start of the warning logged when the compiled core fails (or panics) on a batch and the Python
#: engine takes it (each is also counted in kpimon_native_core_fallbacks_total); tests look for it in logs.
NATIVE_FAILED = "the compiled core failed on a batch"

Headers = Sequence[tuple[str, bytes]]


class SourceRecord(Protocol):
    """What kpimon reads of a consumed message (aiokafka's ConsumerRecord has these fields)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | None: ...  # epoch milliseconds
    @property
    def headers(self) -> Headers: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to produce because of the batch: a dead letter, or a valid event to re-key."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class BatchResult:
    """What a batch produced besides state changes."""

    dead_letters: list[Outgoing] = field(default_factory=list)
    rekeyed: list[Outgoing] = field(default_factory=list)
    accepted: int = 0


class StateCache(MutableMapping[bytes, UserState]):
    """Write-back view of the user-state table for one batch: each changed user is written once.

    A batch often holds several events of one user (a session's clicks); writing the state after each
    would send one changelog record per event. Reads go to the table once per user and batch.
    """

    def __init__(self, table: UserTable) -> None:
        self._table = table
        self._states: dict[bytes, UserState] = {}
        self._dirty: set[bytes] = set()
        #: The changelog bytes of states the compiled core encoded (`UserState.to_bytes` of the state).
        self._encoded: dict[bytes, bytes] = {}
        put = getattr(table, "put_encoded", None)
        self._put_encoded: Callable[[bytes, UserState, bytes], None] | None = put

    def __getitem__(self, key: bytes) -> UserState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = self._table[key]
        return state

    def get(self, key: bytes, default: UserState | None = None) -> UserState | None:  # type: ignore[override]
        state = self._states.get(key)
        if state is None:
            state = self._table.get(key)
            if state is None:
                return default
            self._states[key] = state
        return state

    def __setitem__(self, key: bytes, state: UserState) -> None:
        self._states[key] = state
        self._dirty.add(key)
        self._encoded.pop(key, None)  # changed since it was encoded, if it was

    def put_encoded(self, key: bytes, state: UserState, encoded: bytes | None) -> None:
        """Set a changed state together with its `to_bytes()` (None: not encoded), which the table gets
        with it when it takes encoded states (`UserStore.put_encoded`): no encoding in Python."""
        self[key] = state
        if encoded is not None:
            self._encoded[key] = encoded

    def __delitem__(self, key: bytes) -> None:
        raise NotImplementedError("user states are never deleted by a batch")

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def write_back(self) -> int:
        """Write every changed state to the table; return how many were written."""
        encoded, put = self._encoded, self._put_encoded
        for key in self._dirty:
            value = encoded.get(key) if put is not None else None
            if value is not None:
                put(key, self._states[key], value)  # type: ignore[misc]  # (put is not None here)
            else:
                self._table[key] = self._states[key]
        written = len(self._dirty)
        self._dirty.clear()
        encoded.clear()
        return written


@dataclass
class _Tally:
    """A batch's outcome counts and delays per input topic label."""

    accepted: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)


class BatchProcessor:
    """Apply batches of one worker's source partitions to its engine, metrics and user states."""

    def __init__(
        self,
        engine: SourceEngine,
        metrics: PipelineMetrics,
        policy: Policy,
        kinds: dict[str, Kind],
        labels: dict[Kind, str],
        core: str | None = None,
    ) -> None:
        """`kinds` maps the input topics to their kind (others are re-keyed and carry it in a header);
        `labels` names the input topic of each kind for metrics and dead letters; `core` chooses the
        batch core (`pipeline.core.selected`: the `core` setting; None: the compiled one when built)."""
        self.engine = engine
        self.metrics = metrics
        self.policy = policy
        self.kinds = kinds
        self.labels = labels
        self.core: CoreName = selected(core)
        self._native: _native.Core | None = None
        self._apply_error: type[Exception] = Exception
        self._core_panic: type[Exception] = Exception
        #: Batches the compiled core failed on (or panicked in) before writing, left to the Python engine:
        #: the differential tests require none, since the fallback's results are right and would hide a bug.
        #: Also counted in `kpimon_native_core_fallbacks_total{reason}`, which the integration tests'
        #: workers check when they stop (tests/workers.py).
        self.native_failures = 0
        if self.core == "native":
            module = native_module()
            assert module is not None  # selected() checked it
            if [f"{kpi}/{window}" for kpi, window in module.Core.counters()] != list(COUNTER_NAMES):
                raise RuntimeError(
                    "the compiled core (kpimon._native) numbers the counters differently: rebuild it"
                )
            self._apply_error = module.ApplyError
            self._core_panic = module.CorePanic
            self._native = module.Core(
                set(engine.passive_types),
                policy.max_lateness_days,
                engine.max_lateness_days,
                policy.max_future_ms,
                policy.max_message_bytes,
            )
            metrics.native_core_running()

    def process(
        self, topic: str, partition: int, records: Sequence[SourceRecord], users: UserTable, now_ms: int
    ) -> BatchResult:
        """Process `records` of topic/partition in offset order; skip offsets already processed."""
        engine = self.engine
        result = BatchResult()
        cache = StateCache(users)
        topic_kind = self.kinds.get(topic)
        next_offset = engine.positions.get((topic, partition), 0)
        # Counted per batch: a prometheus_client call per event costs as much as validating it.
        tally = _Tally()
        pending: PendingRuns = PendingRuns()
        rest: Sequence[SourceRecord] = records
        if self._native is not None and topic_kind is not None and records:
            delegated = self._process_native(
                topic_kind, partition, records, cache, now_ms, next_offset, tally
            )
            if delegated is not None:
                rest = [records[i] for i in delegated]
        self._process_python(
            topic, topic_kind, partition, rest, cache, now_ms, next_offset, tally, pending, result
        )
        engine.apply_pending(partition, pending)
        if records:
            engine.processed(topic, partition, records[-1].offset)
        cache.write_back()
        for label, count in tally.accepted.items():
            self.metrics.accepted_many(label, tally.delays[label])
            result.accepted += count
        for label, count in tally.duplicates.items():
            self.metrics.duplicate(label, count)
        return result

    def _process_native(
        self,
        kind: Kind,
        partition: int,
        records: Sequence[SourceRecord],
        cache: StateCache,
        now_ms: int,
        next_offset: int,
        tally: _Tally,
    ) -> list[int] | None:
        """Let the compiled core apply what it is certain of; the indices of the records left to the
        Python engine (None: the core failed, and left everything untouched)."""
        assert self._native is not None
        counters = self.engine.counters(partition)
        try:
            changed, accepted, duplicates, delays, max_day, delegated = self._native.process(
                kind,
                records,
                next_offset,
                cache.get,
                UserState,
                counters,
                self.engine.folder,
                now_ms,
                partition,
            )
        except self._apply_error:
            raise  # partly applied: the Python engine would apply part of the batch twice
        except Exception as exc:
            # A bug of the compiled core (an error, or a Rust panic it turned into CorePanic), found before
            # it changed anything: the Python engine, its specification, does the batch. A warning, not an
            # error: no event is lost or miscounted.
            self.native_failures += 1
            self.metrics.native_core_fallback("panic" if isinstance(exc, self._core_panic) else "error")
            log.warning(
                "%s of partition %d; the Python engine takes it", NATIVE_FAILED, partition, exc_info=True
            )
            return None
        for key, state, encoded in changed:
            cache.put_encoded(key, state, encoded)
        if max_day is not None:
            counters.saw_day(max_day)
        label = self.labels[kind]
        if accepted:
            tally.accepted[label] = tally.accepted.get(label, 0) + accepted
            tally.delays.setdefault(label, []).extend(delays)
        if duplicates:
            tally.duplicates[label] = tally.duplicates.get(label, 0) + duplicates
        return delegated

    def _process_python(
        self,
        topic: str,
        topic_kind: Kind | None,
        partition: int,
        records: Sequence[SourceRecord],
        cache: StateCache,
        now_ms: int,
        next_offset: int,
        tally: _Tally,
        pending: PendingRuns,
        result: BatchResult,
    ) -> None:
        """The Python engine: every record in offset order (the specification of the compiled core)."""
        engine, metrics, policy = self.engine, self.metrics, self.policy
        accepted, duplicates, delays = tally.accepted, tally.duplicates, tally.delays
        for record in records:
            offset = record.offset
            if offset < next_offset:
                continue  # re-read after a seek to an older committed offset: already applied
            kind = topic_kind or _rekeyed_kind(record.headers)
            label = self.labels[kind]
            key = record.key
            verdict = validate(kind, key, record.value, now_ms, policy)
            if isinstance(verdict, Accepted) and key is not None:
                try:
                    outcome = engine.on_event(cache, key, partition, verdict, now_ms, pending)
                except Exception as exc:  # a bug must neither crash the worker nor lose the event silently
                    log.exception("failed to process %s[%d]@%d", topic, partition, offset)
                    verdict = Rejected(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:300])
                else:
                    if outcome == "duplicate":
                        duplicates[label] = duplicates.get(label, 0) + 1
                    else:
                        accepted[label] = accepted.get(label, 0) + 1
                        delays.setdefault(label, []).append((now_ms - verdict.ts_ms) / 1000)
            if isinstance(verdict, Rejected):
                metrics.rejected(label, verdict.reason)
                headers = dead_letter_headers(verdict, topic, partition, offset, record.timestamp)
                result.dead_letters.append(Outgoing(key, record.value, headers))
            elif key is None:
                # Valid but unkeyed: route it to its user's partition first (the state lives there); it
                # is counted when it comes back from the re-key topic, keyed.
                user_key = verdict.event.user_id.encode()
                result.rekeyed.append(Outgoing(user_key, record.value, [(KIND_HEADER, kind.encode())]))

    def sweep(self, users: UserTable, partition: int, now_ms: int) -> None:
        """Expire old days from a slice of `partition`'s idle users (`SourceEngine.sweep`)."""
        self.engine.sweep(users, partition, now_ms)


def _rekeyed_kind(headers: Headers | None) -> Kind:
    for name, value in headers or ():
        if name == KIND_HEADER and value in (b"clicks", b"surveys"):
            return "clicks" if value == b"clicks" else "surveys"
    return "clicks"
