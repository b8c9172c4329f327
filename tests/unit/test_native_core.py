"""The compiled batch core equals the Python engine, its specification: byte-equal user states, equal
counters, equal dead letters, re-keyed messages and outcome counts, on batches of valid and hostile
messages mixed (a differential property test), and on the bench's simulated traffic."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from kpimon.agents.config.settings import Settings
from kpimon.agents.pipeline import core
from kpimon.agents.pipeline.batch import KIND_HEADER, BatchProcessor
from kpimon.agents.pipeline.counters import COUNTER_NAMES
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.metrics import PipelineMetrics
from kpimon.streams.events import MS_PER_DAY
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Kind, Policy
from tests import hostile

pytestmark = pytest.mark.skipif(core.native_module() is None, reason="the compiled core is not built")

NOW = hostile.NOW_MS
USERS = tuple(f"u{i}" for i in range(10))
KINDS: dict[str, Kind] = {"clicks": "clicks", "surveys": "surveys"}
LABELS: dict[Kind, str] = {"clicks": "clicks", "surveys": "surveys"}


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = NOW
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def rfc3339(ms: int, offset_minutes: int, digits: int, zulu: str) -> str:
    """`ms` as RFC 3339 in a time zone `offset_minutes` east of UTC, with `digits` fraction digits."""
    moment = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000 + ms % 7)
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    if offset_minutes == 0 and zulu:
        return text + zulu
    sign = "-" if offset_minutes < 0 else "+"
    return text + f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"


@st.composite
def timestamps(draw: st.DrawFn, ms: int) -> Any:
    """`ms` as integer epoch milliseconds or as one of RFC 3339's spellings (some only msgspec reads)."""
    if draw(st.booleans()):
        return ms
    offset = draw(st.sampled_from([0, 0, 0, 60, -360, 330, -59]))
    digits = draw(st.sampled_from([0, 3, 3, 6, 7]))
    return rfc3339(ms, offset, digits, draw(st.sampled_from(["Z"] * 8 + ["z", ""])))


#: Segment values: more than the folder keeps (max_segment_values 3 below), a personal one, the reserved
#: ones and one too long to be valid.
LABEL_VALUES = st.sampled_from(
    [
        "ios",
        "android",
        "web",
        "ios",
        "web",
        "desk",
        "tv",
        "car",
        "me@example.com",
        "unknown",
        "other",
        "ü" * 65,
    ]
)


@st.composite
def events(draw: st.DrawFn, kind: Kind) -> tuple[str, dict[str, Any]]:
    """A valid-looking event of `kind` (some are too late, in the future or otherwise off) and its user."""
    user = draw(st.sampled_from(USERS))
    days_ago = draw(st.one_of(st.integers(0, 6), st.integers(0, 6), st.integers(0, 100)))
    ms = NOW - days_ago * MS_PER_DAY + draw(st.integers(-MS_PER_DAY, 600_000))
    event: dict[str, Any] = {"user_id": user, "ts": draw(timestamps(ms))}
    if kind == "clicks":
        event["event_id"] = f"c{draw(st.integers(0, 10**6))}"
        event["type"] = draw(st.sampled_from(["page_view", "tap", "tap", "push_received"]))
        if draw(st.booleans()):
            event["session_id"] = draw(st.sampled_from([None, "s1", "", "a\\nb", "\u00e9"]))
        if draw(st.booleans()):
            event["properties"] = draw(
                st.one_of(
                    st.none(), st.just({"a": [1, 2.5, "x\n", True, None], "b": {}}), hostile.json_values
                )
            )
    else:
        event["event_id"] = f"s{draw(st.integers(0, 12))}"  # repeated ids: duplicates
        event["survey"] = draw(st.sampled_from(["nps", "csat", "nps", "csat", "ces"]))
        event["action"] = draw(st.sampled_from(["shown", "answered", "answered", "dismissed"]))
        if event["action"] == "answered" or draw(st.integers(0, 9)) == 0:
            event["score"] = draw(st.integers(-1, 11))
        if draw(st.integers(0, 4)) == 0:
            event["comment"] = draw(st.sampled_from([None, "fine", "x" * 2001]))
    if draw(st.booleans()):
        signup = ms + draw(st.integers(-40, 2)) * MS_PER_DAY
        event["signup_ts"] = draw(st.one_of(st.none(), timestamps(signup)))
    for name in ("platform", "plan"):
        if draw(st.integers(0, 3)):
            event[name] = draw(st.one_of(st.none(), LABEL_VALUES))
    if draw(st.integers(0, 9)) == 0:
        event["extra"] = draw(hostile.json_values)
    return user, event


@st.composite
def messages(draw: st.DrawFn, kind: Kind) -> tuple[bytes | None, bytes | None]:
    """A message of a topic of `kind`: mostly valid events keyed by their user, some hostile."""
    choice = draw(st.integers(0, 19))
    if choice == 0:
        return draw(st.sampled_from([u.encode() for u in USERS])), draw(hostile.hostile_values(kind, NOW))
    user, event = draw(events(kind))
    order = list(event.items())
    if draw(st.booleans()):
        order.reverse()
    spaced = draw(st.booleans())
    value = json.dumps(dict(order), separators=(", ", ": ") if spaced else (",", ":")).encode()
    key: bytes | None = user.encode()
    if choice == 1:
        key = None  # unkeyed: re-keyed
    elif choice == 2:
        key = draw(st.sampled_from([b"u9", b"\xff", user.encode() + b" "]))
    return key, value


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[str, int, list[tuple[bytes | None, bytes | None]], bool]]:
    """Batches of the clicks, surveys and re-key topics: (topic, partition, messages, read again)."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        topic = draw(st.sampled_from(["clicks", "clicks", "surveys", "rekey"]))
        kind: Kind = "surveys" if topic == "surveys" else "clicks"
        size = draw(st.integers(1, 25))
        out.append(
            (
                topic,
                draw(st.integers(0, 1)),
                draw(st.lists(messages(kind), min_size=1, max_size=size)),
                draw(st.integers(0, 5)) == 0,
            )
        )
    return out


class EncodedStates(dict[bytes, UserState]):
    """A user-state table that takes encoded states as the worker's `UserStore` does: the bytes the
    compiled core hands over with a state must be the state's own `to_bytes()`."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded = 0

    def put_encoded(self, key: bytes, state: UserState, value: bytes) -> None:
        assert value == state.to_bytes(), (state, value)
        self.encoded += 1
        self[key] = state


@dataclass
class Outcome:
    """What one core made of the batches."""

    results: list[Any]
    states: dict[bytes, bytes]
    partials: list[Any]
    folded: dict[tuple[str, str], int]
    rejections: dict[tuple[str, str], int]
    samples: dict[tuple[str, str], float]
    #: Batches the compiled core failed on, left to the Python engine (whose results would hide the bug).
    failures: int = 0
    #: States written with the compiled core's encoding.
    encoded: int = 0
    #: kpimon_native_core_fallbacks_total by reason: the series the worker exports (none on Python).
    fallbacks: dict[str, float] = field(default_factory=dict)


def run(name: core.CoreName, data: list[Any], lateness: int) -> Outcome:
    engine = SourceEngine(lateness, passive_types=("push_received",), max_segment_values=3)
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, topics=("clicks", "surveys"))
    processor = BatchProcessor(engine, metrics, Policy(max_lateness_days=lateness), KINDS, LABELS, core=name)
    assert processor.core == name
    users = EncodedStates()
    offsets: dict[tuple[str, int], int] = {}
    results = []
    for topic, partition, batch, again in data:
        first = offsets.get((topic, partition), 0)
        records = [
            Record(first + i, key, value, headers=[(KIND_HEADER, b"surveys" if i % 3 == 0 else b"clicks")])
            for i, (key, value) in enumerate(batch)
        ]
        offsets[topic, partition] = first + len(records)
        for attempt in range(2 if again else 1):
            # Read again: from an older offset after a seek (the first part is skipped).
            chunk = (
                records
                if attempt == 0
                else [*records[len(records) // 2 :], Record(offsets[topic, partition], b"u0", batch[0][1])]
            )
            if attempt:
                offsets[topic, partition] += 1
            result = processor.process(topic, partition, chunk, users, NOW)
            results.append(
                (
                    [(o.key, o.value, o.headers) for o in result.dead_letters],
                    [(o.key, o.value, o.headers) for o in result.rekeyed],
                    result.accepted,
                )
            )
    partials = sorted(
        (p.source, p.version, p.dimension, p.segment, p.day, sorted(p.counts.items()))
        for p in engine.take_partials(NOW + 400 * MS_PER_DAY)
    )
    samples = {
        (s.labels["topic"], s.labels["outcome"]): s.value
        for metric in registry.collect()
        if metric.name == "kpimon_events"
        for s in metric.samples
        if s.name == "kpimon_events_total"
    }
    return Outcome(
        results,
        {key: state.to_bytes() for key, state in users.items()},
        partials,
        dict(engine.folder.folded),
        dict(metrics.rejections),
        samples,
        processor.native_failures,
        users.encoded,
        {
            s.labels["reason"]: s.value
            for metric in registry.collect()
            if metric.name == "kpimon_native_core_fallbacks"
            for s in metric.samples
            if s.name == "kpimon_native_core_fallbacks_total"
        },
    )


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=batches(), lateness=st.sampled_from([7, 90]))
def test_the_compiled_core_equals_the_python_engine(data: list[Any], lateness: int) -> None:
    python, native = run("python", data, lateness), run("native", data, lateness)
    assert native.results == python.results  # dead letters (reasons, details), re-keyed, accepted
    assert native.states == python.states  # byte-equal user states
    assert native.partials == python.partials  # equal counters (every group, every day)
    assert native.folded == python.folded
    assert native.rejections == python.rejections
    assert native.samples == python.samples
    assert native.failures == 0  # the compiled core did the batches: no error or panic fell back
    assert native.fallbacks == {"panic": 0, "error": 0}  # exported at 0 from the start
    assert python.fallbacks == {}  # the Python engine has nothing to fall back from


def test_the_core_is_chosen_by_the_core_setting() -> None:
    assert core.selected("python") == "python"
    assert core.selected("native") == "native"
    assert core.selected(None) == core.selected("") == "native"  # installed: the default
    with pytest.raises(ValueError, match="KPIMON_CORE"):
        core.selected("rust")
    assert Settings.from_env({"KPIMON_CORE": "python"}).core == "python"
    with pytest.raises(ValueError, match="core must be"):
        Settings.from_env({"KPIMON_CORE": "rust"})


def test_the_core_numbers_the_counters_as_the_partition_counters_do() -> None:
    module = core.native_module()
    assert module is not None
    assert [f"{kpi}/{window}" for kpi, window in module.Core.counters()] == list(COUNTER_NAMES)


def test_new_segment_values_are_folded_as_the_python_engine_folds_them() -> None:
    """More new values than the folder keeps, some of a user whose records go to the Python engine (the
    first record of u0 is in the future): the cap must fold the same values whichever core applied them."""

    def click(user: str, n: int, platform: str, ts: int = NOW - 1000) -> tuple[bytes, bytes]:
        event = {"event_id": f"c{n}", "user_id": user, "ts": ts, "type": "tap", "platform": platform}
        return user.encode(), json.dumps(event).encode()

    values = ["ios", "android", "web", "desk", "tv", "car"]
    within_room = [("clicks", 0, [click(f"u{i}", i, v) for i, v in enumerate(values[:3])], False)]
    beyond_room = [("clicks", 0, [click(f"u{i}", i, v) for i, v in enumerate(values)], False)]
    delegated_first = [
        (
            "clicks",
            0,
            [
                click("u0", 8, "car", ts=NOW + MS_PER_DAY),
                click("u0", 9, "tv"),
                *(click(f"u{i + 1}", i, v) for i, v in enumerate(values)),
            ],
            False,
        )
    ]
    # The states the core applies come with their bytes (checked against to_bytes by EncodedStates).
    assert run("native", within_room, 7).encoded == 3
    for data in (within_room, beyond_room, delegated_first, within_room + beyond_room):
        python, native = run("python", data, 7), run("native", data, 7)
        assert python.encoded == 0
        assert native.states == python.states
        assert native.partials == python.partials
        assert native.folded == python.folded
        assert native.failures == 0


#: The compiled core's failpoints (kpimon._native._set_failpoint, tests only).
Failpoint = Literal["compute", "write"] | None


@pytest.fixture
def failpoint() -> Iterator[Callable[[Failpoint], None]]:
    """Set the compiled core's test-only failpoint; reset it whatever the test does (it is process-wide)."""
    module = core.native_module()
    assert module is not None
    yield module._set_failpoint
    module._set_failpoint(None)


def mixed_batches() -> list[Any]:
    """Clicks and surveys of several users over several days: state-changing and repeated clicks, a
    passive one, a duplicate survey, an invalid, an unkeyed and a re-keyed message."""

    def message(event: dict[str, Any]) -> bytes:
        return json.dumps(event).encode()

    clicks = []
    for n in range(40):
        user, days_ago = USERS[n % 7], n % 5
        event = {"event_id": f"c{n}", "user_id": user, "ts": NOW - days_ago * MS_PER_DAY - n * 1000}
        event["type"] = "push_received" if n % 11 == 0 else "tap"
        event["platform"] = ("ios", "web", "android")[n % 3]
        if n % 4 == 0:
            event["signup_ts"] = NOW - 3 * MS_PER_DAY
        clicks.append((user.encode(), message(event)))
    clicks.append((b"u1", b'{"user_id": "u1", "ts": "yesterday"}'))
    clicks.append((None, message({"event_id": "c99", "user_id": "u8", "ts": NOW - 5000, "type": "tap"})))
    surveys = [
        (
            user.encode(),
            message(
                {
                    "event_id": f"s{n % 6}",
                    "user_id": user,
                    "ts": NOW - (n % 3) * MS_PER_DAY,
                    "survey": "nps",
                    "action": "answered",
                    "score": n % 11,
                    "plan": "pro",
                }
            ),
        )
        for n, user in enumerate(USERS[:6] * 2)
    ]
    return [
        ("clicks", 0, clicks[:25], False),
        ("surveys", 1, surveys, False),
        ("clicks", 0, clicks[25:], True),
    ]


def test_a_panic_before_any_write_leaves_the_batch_to_the_python_engine(
    failpoint: Callable[[Failpoint], None],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A Rust panic in the compute phase is an ordinary exception (PyO3's PanicException is a
    BaseException, which would end the worker): the Python engine takes the batch, with one warning."""
    data = mixed_batches()
    python = run("python", data, 7)
    assert native_handles_some(data), "the batches must exercise the compiled core"
    failpoint("compute")
    with caplog.at_level(logging.WARNING, logger="kpimon.agents.pipeline.batch"):
        panicked = run("native", data, 7)  # would raise PanicException (a BaseException) unguarded
    assert panicked.results == python.results
    assert panicked.states == python.states  # byte-equal user states
    assert panicked.partials == python.partials  # equal counters
    assert panicked.folded == python.folded
    assert panicked.rejections == python.rejections
    assert panicked.samples == python.samples
    calls = sum(2 if again else 1 for *_, again in data)
    assert panicked.failures == calls
    assert panicked.fallbacks == {"panic": calls, "error": 0}  # each batch counted, as a panic
    warnings = [r for r in caplog.records if r.name == "kpimon.agents.pipeline.batch"]
    assert len(warnings) == calls  # one per batch, each a warning naming the panic
    for record in warnings:
        assert record.levelno == logging.WARNING
        assert record.exc_info is not None and type(record.exc_info[1]).__name__ == "CorePanic"
        assert 'failpoint "compute"' in str(record.exc_info[1])
    # The panic is reported once, through that log record: the default panic hook does not print it too.
    assert "panicked at" not in capfd.readouterr().err


def native_handles_some(data: list[Any]) -> bool:
    """Whether the compiled core itself applies records of `data` (it delegates some to Python)."""
    module = core.native_module()
    assert module is not None
    engine = SourceEngine(7, passive_types=("push_received",), max_segment_values=3)
    native = module.Core({"push_received"}, 7, 7, Policy().max_future_ms, Policy().max_message_bytes)
    topic, partition, batch, _ = data[0]
    records = [Record(i, key, value) for i, (key, value) in enumerate(batch)]
    users: dict[bytes, UserState] = {}
    counters = engine.counters(partition)
    _, accepted, *_ = native.process(
        topic, records, 0, users.get, UserState, counters, engine.folder, NOW, partition
    )
    return accepted > 0


def test_a_panic_after_the_first_write_is_an_apply_error(failpoint: Callable[[Failpoint], None]) -> None:
    """A panic once the core has written a state cannot go to the Python engine (it would apply part of
    the batch twice): it is the ApplyError path, an ordinary exception, not PyO3's PanicException."""
    module = core.native_module()
    assert module is not None
    engine = SourceEngine(7, passive_types=("push_received",), max_segment_values=3)
    processor = BatchProcessor(
        engine, PipelineMetrics(CollectorRegistry()), Policy(max_lateness_days=7), KINDS, LABELS, "native"
    )
    topic, partition, batch, _ = mixed_batches()[0]
    first = UserState()
    users = {b"u0": first}
    before = first.to_bytes()
    failpoint("write")
    with pytest.raises(module.ApplyError, match=r'panicked.*failpoint "write"') as raised:
        processor.process(topic, partition, [Record(i, k, v) for i, (k, v) in enumerate(batch)], users, NOW)
    assert isinstance(raised.value, Exception)
    assert first.to_bytes() != before  # the write had begun: u0's state object was updated in place
    failpoint(None)
    with pytest.raises(ValueError, match="unknown failpoint"):
        failpoint("nowhere")


class _FailingCore:
    """Stands in for the compiled core: raises an ordinary exception (not a panic) before writing."""

    def process(self, *args: object) -> None:
        raise RuntimeError("a bug of the compiled core")


def test_an_error_before_any_write_is_counted_as_a_fallback_of_reason_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not only panics: any exception the core raises before it wrote is a fallback, counted by reason."""
    data = mixed_batches()
    python = run("python", data, 7)
    engine = SourceEngine(7, passive_types=("push_received",), max_segment_values=3)
    registry = CollectorRegistry()
    processor = BatchProcessor(
        engine, PipelineMetrics(registry), Policy(max_lateness_days=7), KINDS, LABELS, "native"
    )
    processor._native = _FailingCore()  # type: ignore[assignment]
    topic, partition, batch, _ = data[0]
    users: dict[bytes, UserState] = {}
    with caplog.at_level(logging.WARNING, logger="kpimon.agents.pipeline.batch"):
        result = processor.process(
            topic, partition, [Record(i, k, v) for i, (k, v) in enumerate(batch)], users, NOW
        )
    assert result.accepted == python.results[0][2]  # the Python engine did the batch
    assert processor.native_failures == 1
    fallbacks = "kpimon_native_core_fallbacks_total"
    assert registry.get_sample_value(fallbacks, {"reason": "error"}) == 1
    assert registry.get_sample_value(fallbacks, {"reason": "panic"}) == 0
    assert [r.exc_info[1].args for r in caplog.records if r.exc_info] == [("a bug of the compiled core",)]
