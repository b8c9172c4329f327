"""End-to-end delay: from producing an event to its effect on the worker's /metrics, at a steady load.

Method. A fresh `kpimon worker` reads its own, empty input topics. The bench produces clicks stamped now
(so on the current UTC day) at a paced rate: every fifth click is a *marker*, the first click of a new
user, and the others are further clicks of users introduced earlier in the run (the cheap path: they
change no KPI), about the mix of a backfill. It scrapes the worker's /metrics every `interval` seconds for
`kpimon_active_users{window="1d",day="current",dimension="all",segment="all"}`. Each marker raises that
gauge by exactly 1, so the i-th marker is taken as visible at the first scrape showing the baseline plus
i + 1 users; its delay is that scrape's time minus the time the bench handed it to the producer. A warm-up
phase of a few seconds at the same rate comes first and is not measured. Limits: the scrape interval
bounds the resolution (a delay is over-estimated by at most one interval); markers of different
partitions may become visible out of order, and the count-based matching then attributes the delays in
the order of sending (the distribution is right up to that reordering); a marker never visible counts as
infinitely late; the scrapes themselves cost the worker a little CPU.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer

from bench.stats import StageResult, crossing_delays, percentile
from bench.worker import RunTopics, Worker, gauge_value
from kpimon.agents.config.topics import TopicSpec, ensure_topics
from kpimon.simulator.render import format_ts

_encoder = msgspec.json.Encoder()


def click(user_id: str, now_ms: int) -> bytes:
    """A valid click of `user_id` at `now_ms`, shaped like the simulator's."""
    return _encoder.encode(
        {
            "event_id": str(uuid.uuid4()),
            "user_id": user_id,
            "type": "page_view",
            "ts": format_ts(now_ms, 0, 0),
            "session_id": uuid.uuid4().hex[:16],
            "platform": "web",
            "plan": "free",
        }
    )


class Scraper:
    """Polls the DAU gauge of a worker in a thread and keeps (monotonic time, value) observations."""

    def __init__(self, worker: Worker, interval: float) -> None:
        self.worker = worker
        self.interval = interval
        self.observations: list[tuple[float, float]] = []
        self.scrapes = 0

    def latest(self) -> float | None:
        return self.observations[-1][1] if self.observations else None

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            text = await asyncio.to_thread(self.worker.metrics)
            self.scrapes += 1
            value = gauge_value(text) if text else None
            if value is not None:
                # The time the answer came back: the gauge had this value at most then.
                self.observations.append((time.monotonic(), value))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))


async def _send_paced(
    producer: AIOKafkaProducer,
    topic: str,
    rate: float,
    seconds: float,
    per_user: int,
    rng: random.Random,
    markers: list[float],
) -> None:
    """Send `rate * seconds` clicks at an even pace; append the send time of each marker to `markers`.

    Every `per_user`-th click is a marker: the first click of a new user, which turns the DAU gauge up by
    one. The others are further clicks of users already introduced in this phase (same day, same
    partition as their first click, so processed after it), which change no KPI: the cheap path.
    """
    total = int(rate * seconds)
    start = time.monotonic()
    users: list[str] = []
    index = 0
    while index < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while index < due:
            marker = index % per_user == 0
            if marker:
                users.append(f"d_{uuid.uuid4().hex[:12]}")
                user = users[-1]
            else:
                user = users[int(rng.random() * len(users))]
            now = time.monotonic()
            await producer.send(topic, click(user, time.time_ns() // 1_000_000), key=user.encode())
            if marker:
                markers.append(now)
            index += 1
        await asyncio.sleep(0.002)


async def _wait_for(scraper: Scraper, value: float, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = scraper.latest()
        if latest is not None and latest >= value:
            return True
        await asyncio.sleep(0.05)
    return False


async def run(
    bootstrap: str,
    scratch: Path,
    rate: float,
    seconds: float,
    warmup: float = 5.0,
    interval: float = 0.05,
    flush_interval: float = 1.0,
    partitions: int = 4,
    per_user: int = 5,
) -> StageResult:
    """Measure the delay distribution at `rate` events/s for `seconds` (after a warm-up); see module doc."""
    run_topics = RunTopics("bench-delay-clicks", "bench-delay-surveys", "bench-delay-")
    inputs = [TopicSpec(run_topics.clicks, partitions), TopicSpec(run_topics.surveys, partitions)]
    await ensure_topics(bootstrap, inputs + run_topics.changelog_specs(partitions), "bench")
    worker = Worker(bootstrap, run_topics, scratch / "delay", 7, flush_interval)
    result = StageResult("delay", complete=False)
    result.figures.update(
        offered_rate=rate,
        scrape_interval_s=interval,
        flush_interval_s=flush_interval,
        events_per_user=per_user,
    )
    rng = random.Random(0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    scraper = Scraper(worker, interval)
    scraping: asyncio.Task[None] | None = None
    try:
        deadline = time.monotonic() + 120
        while not worker.ready():
            if not worker.alive or time.monotonic() > deadline:
                result.note = f"the worker did not become ready:\n{worker.log_tail()}"
                return result
            await asyncio.sleep(0.3)
        await producer.start()
        scraping = asyncio.create_task(scraper.run())
        warm: list[float] = []
        await _send_paced(producer, run_topics.clicks, rate, warmup, per_user, rng, warm)
        if not await _wait_for(scraper, len(warm), 60):
            result.note = f"the warm-up events never showed on /metrics (gauge {scraper.latest()})"
            return result
        baseline = scraper.latest() or 0.0
        print(f"  delay: warm-up done ({len(warm)} new users); measuring {seconds:.0f} s", file=sys.stderr)
        sent: list[float] = []
        await _send_paced(producer, run_topics.clicks, rate, seconds, per_user, rng, sent)
        await _wait_for(scraper, baseline + len(sent), 30)
    finally:
        if scraping is not None:
            scraping.cancel()
        await producer.stop()
        await asyncio.to_thread(worker.stop)
    delays = crossing_delays(sent, scraper.observations, baseline)
    seen = [d for d in delays if d is not None]
    # An event that never showed counts as infinitely late.
    ranked = seen + [float("inf")] * (len(delays) - len(seen))
    result.events = int(rate * seconds)
    result.seconds = seconds
    result.rate = result.events / seconds if seconds else None
    result.complete = len(seen) == len(sent)
    result.figures.update(
        offered_rate=rate,
        p50_s=percentile(ranked, 50),
        p99_s=percentile(ranked, 99),
        max_s=max(seen) if seen else None,
        markers=len(sent),
        never_visible=len(sent) - len(seen),
        scrape_interval_s=interval,
        scrapes=scraper.scrapes,
        flush_interval_s=flush_interval,
    )
    if not result.complete:
        result.note = f"{len(sent) - len(seen)} markers not visible 30 s after the last send"
    return result
