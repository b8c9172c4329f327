"""Pre-filling the benchmark topics fast: simulated or synthetic events, produced in big batches.

Messages are keyed by `user_id` and placed with Kafka's default murmur2 partitioner (computed here, once
per user), so they land where any Kafka producer would put them and a user's events share a partition.
Each record's Kafka timestamp is the event time, as many producers do (the naive Faust stage windows by
it). The producer appends to one `BatchBuilder` per topic-partition and sends full batches, which is an
order of magnitude faster than one `send()` per message.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from kpimon.agents.config.topics import TopicSpec, ensure_topics
from kpimon.simulator.model import DAY_MS, BatchConfig, batch_traffic
from kpimon.simulator.render import format_signup, format_ts, render

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Message:
    """One message to produce: topic kind (`clicks` or `surveys`), key, value, event time."""

    kind: str
    key: bytes
    value: bytes
    ts_ms: int


@dataclass
class Expected:
    """What the bench knows about the data it produced: counts and the true DAU per UTC day."""

    events: int = 0
    clicks: int = 0
    surveys: int = 0
    bytes: int = 0
    active: dict[int, set[str]] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)

    def add(self, message: Message, user_id: str) -> None:
        """Count one produced message; a click makes its user active on its UTC day."""
        self.events += 1
        self.bytes += len(message.value)
        self.users.add(user_id)
        if message.kind == "clicks":
            self.clicks += 1
            self.active.setdefault(message.ts_ms // DAY_MS, set()).add(user_id)
        else:
            self.surveys += 1

    @property
    def last_day(self) -> int:
        """The newest UTC day number with a click."""
        return max(self.active)

    def dau(self, day: int) -> int:
        """Distinct users with a click on `day`."""
        return len(self.active.get(day, ()))


@dataclass(frozen=True)
class DataSet:
    """A filled pair of input topics and the truth about them."""

    clicks_topic: str
    surveys_topic: str
    partitions: int
    events: int
    clicks: int
    surveys: int
    users: int
    days: int
    first_day: int
    last_day: int
    dau_last_day: int
    mean_value_bytes: float
    fill_seconds: float

    @property
    def topics(self) -> tuple[str, str]:
        return (self.clicks_topic, self.surveys_topic)


def _config(
    users: int, days: int, seed: int, now_ms: int, clicks_per_day: float | None = None
) -> BatchConfig:
    return BatchConfig(
        users=users,
        days=days,
        end_day=now_ms // DAY_MS,
        now_ms=now_ms,
        seed=seed,
        late_fraction=0.0,
        duplicate_fraction=0.0,
        invalid_fraction=0.0,
        clicks_per_day=clicks_per_day,
    )


def simulated(
    users: int, days: int, seed: int, now_ms: int, clicks_per_day: float | None = None
) -> Iterator[tuple[Message, str]]:
    """Valid messages from kpimon's own simulator (no late, duplicate or broken ones), in send order.

    Realistic shapes: sessions, segments, timestamps in every accepted form, NPS and CSAT surveys.
    `clicks_per_day` is the simulator's knob (`kpimon simulate --clicks-per-day`): None for its own
    sessions (most clicks repeat a user-day), about 1.8 for traffic where most clicks change state.
    """
    config = _config(users, days, seed, now_ms, clicks_per_day)
    config.check()
    for out in batch_traffic(config):
        draft = out.draft
        yield Message(draft.topic, draft.user_id.encode(), render(draft), draft.ts_ms), draft.user_id


def many_users(
    users: int, days: int, seed: int, now_ms: int, extra_days_mean: float = 0.25
) -> Iterator[tuple[Message, str]]:
    """Clicks of `users` distinct users spread over `days` days ending today: the state-size data set.

    Each user is active on a first day drawn uniformly, plus a geometric number of later days (mean
    `extra_days_mean`), one click per active day, with the simulator's field shapes. Emitted day by day.
    """
    rng = random.Random(f"kpimon-bench:{seed}")
    last_day = now_ms // DAY_MS
    first_day = last_day - days + 1
    # The last day only up to two minutes ago: no event may lie in the worker's future.
    last_day_ms = max(1, now_ms - 120_000 - last_day * DAY_MS)
    by_day: list[list[int]] = [[] for _ in range(days)]
    stop = 1.0 / (1.0 + extra_days_mean)
    for index in range(users):
        day = int(rng.random() * days)
        by_day[day].append(index)
        while rng.random() > stop:
            day += 1 + int(rng.random() * 7)
            if day >= days:
                break
            by_day[day].append(index)
    platforms = ("ios", "android", "web")
    plans = ("free", "free", "free", "pro", "team")
    types = ("page_view", "click", "app_open", "feature_used", "search")
    for offset, indices in enumerate(by_day):
        day = first_day + offset
        span = last_day_ms if day == last_day else DAY_MS
        rng.shuffle(indices)
        stamps = sorted(day * DAY_MS + int(rng.random() * span) for _ in indices)
        for index, ts_ms in zip(indices, stamps, strict=True):
            user_id = f"u_{index * 2654435761 % (1 << 48):012x}"
            signup_ms = (first_day - 1 - index % 400) * DAY_MS + index % DAY_MS
            obj: dict[str, Any] = {
                "event_id": f"{rng.getrandbits(128):032x}",
                "user_id": user_id,
                "type": types[index % 5],
                "ts": format_ts(ts_ms, 0, 0),
                "session_id": f"{rng.getrandbits(64):016x}",
                "platform": platforms[index % 3],
                "plan": plans[index % 5],
                "signup_ts": format_signup(signup_ms, 0),
            }
            yield Message("clicks", user_id.encode(), _encoder.encode(obj), ts_ms), user_id


class _Partitioner:
    """Kafka's default partitioner for keyed messages (murmur2), cached per key."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = (murmur2(key) & 0x7FFFFFFF) % self.partitions
        return found


async def produce(
    bootstrap: str,
    messages: Iterator[tuple[Message, str]],
    clicks_topic: str,
    surveys_topic: str,
    partitions: int = 4,
    progress_every: int = 200_000,
) -> Expected:
    """Create the topics, produce every message in large batches, wait for all acks; return the truth."""
    await ensure_topics(
        bootstrap, [TopicSpec(clicks_topic, partitions), TopicSpec(surveys_topic, partitions)], "bench-fill"
    )
    topics = {"clicks": clicks_topic, "surveys": surveys_topic}
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        linger_ms=0,
    )
    await producer.start()
    expected = Expected()
    partition_of = _Partitioner(partitions)
    builders: dict[tuple[str, int], Any] = {}
    pending: list[asyncio.Future[Any]] = []
    started = time.monotonic()
    try:
        for message, user_id in messages:
            tp = (topics[message.kind], partition_of(message.key))
            builder = builders.get(tp)
            if builder is None:
                builder = builders[tp] = producer.create_batch()
            if builder.append(key=message.key, value=message.value, timestamp=message.ts_ms) is None:
                pending.append(await producer.send_batch(builder, tp[0], partition=tp[1]))
                builder = builders[tp] = producer.create_batch()
                builder.append(key=message.key, value=message.value, timestamp=message.ts_ms)
            expected.add(message, user_id)
            if expected.events % progress_every == 0:
                rate = expected.events / (time.monotonic() - started)
                print(f"  fill: {expected.events:,} messages ({rate:,.0f}/s)", file=sys.stderr)
        for (topic, partition), builder in builders.items():
            if builder.record_count():
                pending.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return expected


def data_set(
    expected: Expected, clicks_topic: str, surveys_topic: str, partitions: int, seconds: float
) -> DataSet:
    """The summary of a filled pair of topics."""
    days = sorted(expected.active)
    return DataSet(
        clicks_topic=clicks_topic,
        surveys_topic=surveys_topic,
        partitions=partitions,
        events=expected.events,
        clicks=expected.clicks,
        surveys=expected.surveys,
        users=len(expected.users),
        days=len(days),
        first_day=days[0],
        last_day=days[-1],
        dau_last_day=expected.dau(days[-1]),
        mean_value_bytes=expected.bytes / max(1, expected.events),
        fill_seconds=seconds,
    )


async def fill(
    bootstrap: str,
    messages: Iterator[tuple[Message, str]],
    prefix: str,
    partitions: int = 4,
) -> DataSet:
    """Fill `<prefix>clicks` and `<prefix>surveys` from `messages`; return what they hold."""
    started = time.monotonic()
    clicks_topic, surveys_topic = f"{prefix}clicks", f"{prefix}surveys"
    expected = await produce(bootstrap, messages, clicks_topic, surveys_topic, partitions)
    return data_set(expected, clicks_topic, surveys_topic, partitions, time.monotonic() - started)


def users_for(
    events: int, days: int, seed: int, now_ms: int, sample: int = 1000, clicks_per_day: float | None = None
) -> int:
    """A population whose simulated traffic over `days` days gives slightly more than `events` messages.

    Measured by simulating `sample` users first (a fraction of a second): messages grow linearly with
    the population.
    """
    per_user = sum(1 for _ in batch_traffic(_config(sample, days, seed, now_ms, clicks_per_day))) / sample
    return max(10, int(events / per_user * 1.03) + 1)


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000
