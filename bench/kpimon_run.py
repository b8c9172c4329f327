"""kpimon stages: N `kpimon worker` processes over the pre-filled topics, timed to the final DAU value.

Timing starts when a worker's /metrics first counts a processed message (the count at that moment is not
timed) and ends when `kpimon-kpis` holds the expected DAU of the last day for `active_users/1d/all/all`,
the value the bench computed from the events it produced: every event is then processed and its effect
published. On a timeout the rate is the partial one from the workers' `kpimon_events_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.fill import DataSet
from bench.stats import StageResult
from bench.worker import (
    RunTopics,
    Worker,
    cpu_seconds,
    has_store_option,
    labelled_value,
    peak_rss_bytes,
    sample_value,
)
from kpimon.agents.config.topics import ensure_topics, topic_partitions

_EPOCH = date(1970, 1, 1)
_POLL = 0.5
#: Seconds to wait for the final value once every message is processed (flushes are paced in a backfill).
_STALL = 120.0


def day_text(day: int) -> str:
    """A UTC day number as YYYY-MM-DD."""
    return (_EPOCH + timedelta(days=day)).isoformat()


def dau_key(day: int) -> str:
    """The kpimon-kpis key of the global DAU of a day (docs/output.md)."""
    return f"active_users/1d/all/all/{day_text(day)}"


async def watch_value(
    bootstrap: str, topic: str, key: str, expected: float, found: asyncio.Event, latest: dict[str, object]
) -> None:
    """Tail `topic` from the beginning until the record of `key` has value `expected`; then set `found`.

    `latest["value"]` follows the newest value of `key` seen.
    """
    wanted = key.encode()
    while not await topic_partitions(bootstrap, topic):  # the worker creates it
        await asyncio.sleep(1)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        while not found.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for record in records:
                    if record.key == wanted and record.value is not None:
                        latest["value"] = msgspec.json.decode(record.value).get("value")
                        if latest["value"] == expected:
                            found.set()
    finally:
        await consumer.stop()


async def changelog_state_bytes(bootstrap: str, topic: str, timeout: float = 300) -> tuple[int, int]:
    """(distinct keys, sum of their latest value sizes) of a table changelog, read to its end."""
    partitions = await topic_partitions(bootstrap, topic)
    if not partitions:
        return 0, 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    await consumer.start()
    sizes: dict[bytes, int] = {}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=100_000)
            for tp, records in batches.items():
                for record in records:
                    if record.key is None:
                        continue
                    if record.value is None:
                        sizes.pop(record.key, None)
                    else:
                        sizes[record.key] = len(record.value)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return len(sizes), sum(sizes.values())


def reader_held(metrics_texts: list[str]) -> dict[str, float]:
    """How long the workers' source readers waited for flushes and publications (issue #16 item 7): the
    longest single wait, and all waits summed, in seconds, how many waits there were and how many took
    longer than 0.1 s (the histogram's bucket; empty when the workers do not export them). The longest
    wait is one sample of a noisy machine: the count over 0.1 s compares runs more steadily."""
    longest = [sample_value(t, "kpimon_reader_held_max_seconds") for t in metrics_texts]
    total = [sample_value(t, "kpimon_reader_held_seconds_sum") for t in metrics_texts]
    if not any(v is not None for v in longest):
        return {}
    figures = {
        "reader_held_max_s": max(v for v in longest if v is not None),
        "reader_held_total_s": sum(v for v in total if v is not None),
    }
    counts = [sample_value(t, "kpimon_reader_held_seconds_count") for t in metrics_texts]
    within = [labelled_value(t, "kpimon_reader_held_seconds_bucket", le="0.1") for t in metrics_texts]
    if all(v is not None for v in counts + within):
        figures["reader_held_waits"] = sum(v for v in counts if v is not None)
        figures["reader_held_over_100ms"] = figures["reader_held_waits"] - sum(
            v for v in within if v is not None
        )
    return figures


def _cpu(workers: list[Worker]) -> float:
    """CPU seconds the workers have used so far."""
    return sum(cpu_seconds(w.proc.pid) or 0.0 for w in workers)


def _total(workers: list[Worker]) -> float | None:
    counts = [w.events_total() for w in workers]
    known = [c for c in counts if c is not None]
    return sum(known) if known else None


async def run(
    stage: str,
    bootstrap: str,
    data: DataSet,
    scratch: Path,
    timeout: float,
    workers: int = 1,
    flush_interval: float = 1.0,
    rocksdb: bool = False,
    state_bytes: bool = False,
) -> StageResult:
    """Run `workers` kpimon workers sharing one group over `data`; see the module docstring."""
    run_topics = RunTopics(data.clicks_topic, data.surveys_topic, f"bench-{stage}-")
    store = "rocksdb" if rocksdb and has_store_option() else None
    await ensure_topics(bootstrap, run_topics.changelog_specs(data.partitions), "bench")
    found = asyncio.Event()
    latest: dict[str, object] = {}
    watcher = asyncio.create_task(
        watch_value(bootstrap, run_topics.kpis, dau_key(data.last_day), data.dau_last_day, found, latest)
    )
    lateness = int(time.time() // 86400) - data.first_day + 2
    started = time.monotonic()
    procs = [
        Worker(bootstrap, run_topics, scratch / stage, lateness, flush_interval, store)
        for _ in range(workers)
    ]
    t0 = c0 = t_last = c_last = all_seen = 0.0
    moved = started
    cpu0 = cpu_last = cpu_all_seen = 0.0
    base_rss: list[int | None] = []
    next_report = started + 15
    failed = ""
    try:
        while not found.is_set() and time.monotonic() - started < timeout:
            await asyncio.sleep(_POLL)
            dead = [w for w in procs if not w.alive]
            if dead:
                failed = f"a worker exited with {dead[0].proc.returncode}:\n{dead[0].log_tail()}"
                break
            total = await asyncio.to_thread(_total, procs)
            now = time.monotonic()
            if total is None:
                continue
            cpu = _cpu(procs)
            if not t0 and total > 0:
                t0, c0, cpu0 = now, total, cpu
                # What the workers hold before they hold users: the base of the RSS extrapolation.
                base_rss = [peak_rss_bytes(w.proc.pid, "VmRSS") for w in procs]
            if total != c_last:
                moved = now
            elif now - moved > _STALL:
                failed = f"no message processed for {_STALL:.0f} s (at {total:,.0f} of {data.events:,})"
                break
            t_last, c_last, cpu_last = now, total, cpu
            if total < data.events:
                all_seen = 0.0
            elif not all_seen:
                all_seen, cpu_all_seen = now, cpu
            elif now - all_seen > _STALL:
                failed = (
                    f"every message was processed {_STALL:.0f} s ago but kpimon-kpis shows DAU "
                    f"{latest.get('value')} for {dau_key(data.last_day)}, not {data.dau_last_day}"
                )
                break
            if now >= next_report:
                next_report += 15
                span = now - t0 if t0 else 0
                shown = f"{(total - c0) / span:,.0f}/s" if span > 0 else "-"
                print(f"  {stage}: {total:,.0f}/{data.events:,} messages ({shown})", file=sys.stderr)
        finished = time.monotonic()
        cpu_finished = _cpu(procs)
        rss = [w.peak_rss_bytes() for w in procs]
        problems = [line for w in procs for line in w.problems()]
        final = await asyncio.to_thread(_total, procs)
        texts = await asyncio.gather(*(asyncio.to_thread(w.metrics) for w in procs))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in procs))
    if failed:
        print(f"  {stage}: {failed}", file=sys.stderr)
    done = found.is_set()
    if done:
        result = StageResult.from_count(stage, int(data.events - c0), finished - t0, complete=True)
    elif all_seen:  # every message processed, but the final value never showed
        result = StageResult.from_count(stage, int(data.events - c0), all_seen - t0, complete=False)
        result.note = failed.splitlines()[0] if failed else "capped before the final value was published"
    else:
        result = StageResult.from_count(stage, int(c_last - c0), t_last - t0, complete=False)
        result.note = (
            failed.splitlines()[0]
            if failed
            else (f"capped after {timeout:.0f} s: partial rate from kpimon_events_total ({c_last:,.0f} done)")
        )
    # CPU seconds the workers spent on the timed part (up to the same moment as the rate).
    if done:
        result.figures["cpu_seconds"] = cpu_finished - cpu0
    elif all_seen:
        result.figures["cpu_seconds"] = cpu_all_seen - cpu0
    else:
        result.figures["cpu_seconds"] = cpu_last - cpu0
    if problems:
        result.figures["worker_log_problems"] = problems
        print(f"  {stage}: the worker logs show problems:\n    " + "\n    ".join(problems), file=sys.stderr)
    result.figures.update(reader_held(texts))
    result.figures["workers"] = workers
    result.figures["processed"] = final
    result.figures["store"] = store or "default"
    result.figures["peak_rss_bytes"] = [r for r in rss if r is not None]
    result.figures["base_rss_bytes"] = [r for r in base_rss if r is not None]
    result.figures["users"] = data.users
    if rocksdb and store is None:
        result.figures["store_note"] = "kpimon worker has no --store option: measured with its default store"
    if state_bytes:
        keys, total_bytes = await changelog_state_bytes(bootstrap, run_topics.user_state_changelog)
        result.figures["state_users"] = keys
        result.figures["state_bytes"] = total_bytes
        result.figures["changelog"] = run_topics.user_state_changelog
    return result
