"""The batch path alone, without Kafka: simulated messages -> `BatchProcessor.process`, timed in CPU seconds.

What a worker spends on its input besides fetching it: validation, per-user state, counter runs, the
outcome metrics. The messages are the bench's own (`bench.fill`), placed on 4 partitions by the same
murmur2 partitioner, and handed over in per-partition batches in send order, as the source reader does.
Only the `process` calls are timed (`time.process_time`), so the figure is messages per CPU second of
the batch path, robust to a busy machine. The digest of the result (every user state's bytes, every
counter group, the dead-letter reasons) lets two runs, or two cores, be compared for identical results.
Each mix runs through both batch cores (the Python engine and, when built, the compiled one), side by side
in the same run: their ratio and whether their digests are equal.

`python -m bench.batchpath --help` runs it alone (a few seconds to a minute); `python -m bench --only batch`
runs it as a stage of the suite.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from bench import fill
from bench.stats import StageResult
from kpimon.agents.pipeline import core
from kpimon.agents.pipeline.batch import BatchProcessor
from kpimon.agents.pipeline.engine import SourceEngine
from kpimon.agents.pipeline.metrics import PipelineMetrics
from kpimon.streams.events import MS_PER_DAY
from kpimon.streams.validation import Kind, Policy

PARTITIONS = 4
#: Messages per mix at most: the rate is steady long before the main data set's million.
MAX_EVENTS = 200_000
TOPICS = {"clicks": "bench-clicks", "surveys": "bench-surveys"}


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed message as `kpimon.agents.pipeline.batch.SourceRecord` reads it."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Batches:
    """Per-partition batches in the order a reader would hand them over, and what they hold."""

    batches: list[tuple[str, int, list[Record]]] = field(default_factory=list)
    messages: int = 0
    clicks: int = 0
    users: int = 0
    now_ms: int = 0


def batches_of(messages: Iterable[tuple[fill.Message, str]], now_ms: int, size: int = 2000) -> Batches:
    """Place `messages` on partitions like Kafka's default partitioner; cut each into `size` batches.

    Batches alternate between partitions (round robin by batch number), each partition's in offset order.
    """
    partition_of = fill._Partitioner(PARTITIONS)
    streams: dict[tuple[str, int], list[Record]] = {}
    users: set[bytes] = set()
    out = Batches(now_ms=now_ms)
    for message, _ in messages:
        tp = (TOPICS[message.kind], partition_of(message.key))
        stream = streams.setdefault(tp, [])
        stream.append(Record(len(stream), message.key, message.value, message.ts_ms))
        users.add(message.key)
        out.messages += 1
        out.clicks += message.kind == "clicks"
    out.users = len(users)
    chunks = {tp: [s[i : i + size] for i in range(0, len(s), size)] for tp, s in sorted(streams.items())}
    for round_ in range(max((len(c) for c in chunks.values()), default=0)):
        for (topic, partition), parts in chunks.items():
            if round_ < len(parts):
                out.batches.append((topic, partition, parts[round_]))
    return out


@dataclass
class Run:
    """One timed pass over the batches by a fresh engine."""

    messages: int
    cpu_seconds: float
    wall_seconds: float
    digest: str
    accepted: int
    dead_letters: int

    @property
    def per_cpu_second(self) -> float:
        """Messages per CPU second of the batch path."""
        return self.messages / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


def processor(max_lateness_days: int = 90, core_name: core.CoreName | None = None) -> BatchProcessor:
    """A batch processor as the worker builds it (own metrics registry), with a lateness bound that keeps
    the bench's whole history; `core_name` chooses the batch core (default: as the worker chooses)."""
    policy = Policy(max_lateness_days=max_lateness_days)
    engine = SourceEngine(max_lateness_days, max_future_ms=policy.max_future_ms)
    metrics = PipelineMetrics(CollectorRegistry(), topics=tuple(TOPICS.values()))
    kinds: dict[str, Kind] = {TOPICS["clicks"]: "clicks", TOPICS["surveys"]: "surveys"}
    labels: dict[Kind, str] = {"clicks": TOPICS["clicks"], "surveys": TOPICS["surveys"]}
    return BatchProcessor(engine, metrics, policy, kinds, labels, core=core_name)


def cores() -> tuple[core.CoreName, ...]:
    """The batch cores this installation has: the Python engine, and the compiled core when built."""
    return ("python", "native") if core.native_module() is not None else ("python",)


def run_once(data: Batches, core_name: core.CoreName | None = None) -> Run:
    """Process every batch with a fresh engine and user table; time the `process` calls only."""
    proc = processor(core_name=core_name)
    users: dict[bytes, Any] = {}
    cpu = wall = 0.0
    accepted = dead = 0
    gc.collect()
    for topic, partition, records in data.batches:
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        result = proc.process(topic, partition, records, users, data.now_ms)
        cpu += time.process_time() - started_cpu
        wall += time.perf_counter() - started_wall
        accepted += result.accepted
        dead += len(result.dead_letters)
    return Run(data.messages, cpu, wall, digest(proc.engine, users, data.now_ms), accepted, dead)


def digest(engine: SourceEngine, users: dict[bytes, Any], now_ms: int) -> str:
    """A hash of every user state's bytes and every counter group's values: equal results, equal digest."""
    h = hashlib.sha256()
    for key in sorted(users):
        h.update(key)
        h.update(users[key].to_bytes())
    groups = sorted(
        (p.source, p.dimension, p.segment, p.day, sorted(p.counts.items()))
        for p in engine.take_partials(now_ms + 400 * MS_PER_DAY)  # every day, however late
    )
    h.update(repr(groups).encode())
    return h.hexdigest()[:16]


#: The state-changing mix (issue #16): about 1.8 clicks per active user-day over 60 days of history.
CHANGING_CLICKS_PER_DAY = 1.8
CHANGING_DAYS = 60


def mixes(events: int, days: int, seed: int, now_ms: int) -> dict[str, Iterator[tuple[fill.Message, str]]]:
    """The bench's traffic mixes by name: `repeat` (the simulator's sessions, most clicks repeat a user-day
    already seen) and `changing` (most clicks turn a new user-day active)."""
    per_day, changing_days = CHANGING_CLICKS_PER_DAY, CHANGING_DAYS
    users = fill.users_for(events, days, seed, now_ms)
    changing_users = fill.users_for(events, changing_days, seed, now_ms, clicks_per_day=per_day)
    return {
        "repeat": fill.simulated(users, days, seed, now_ms),
        "changing": fill.simulated(changing_users, changing_days, seed, now_ms, clicks_per_day=per_day),
    }


def run(events: int, days: int, seed: int, repeats: int = 3, size: int = 2000) -> StageResult:
    """The batch stage: each mix through each core, `repeats` passes; the best pass's messages per CPU
    second per mix and core, the compiled core's ratio to the Python engine, and whether they agree."""
    now_ms = fill.now_ms()
    now_ms -= now_ms % 3_600_000  # the same data and digests for every run within the hour
    figures: dict[str, Any] = {}
    total = 0
    seconds = 0.0
    chosen = core.selected()
    for name, messages in mixes(events, days, seed, now_ms).items():
        data = batches_of(messages, now_ms, size)
        per_core: dict[str, Any] = {}
        for core_name in cores():
            runs = [run_once(data, core_name) for _ in range(repeats)]
            best = min(runs, key=lambda r: r.cpu_seconds)
            per_core[core_name] = {
                "cpu_seconds": best.cpu_seconds,
                "per_cpu_second": best.per_cpu_second,
                "us_per_message": 1e6 * best.cpu_seconds / max(1, data.messages),
                "accepted": best.accepted,
                "dead_letters": best.dead_letters,
                "digest": best.digest,
                "identical": len({r.digest for r in runs}) == 1,
            }
        python, native = per_core["python"], per_core.get("native")
        figures[name] = {
            "messages": data.messages,
            "clicks": data.clicks,
            "users": data.users,
            "cores": per_core,
            # The compiled core over the Python engine, in messages per CPU second (None: not built).
            "ratio": native["per_cpu_second"] / python["per_cpu_second"] if native else None,
            "digests_equal": len({f["digest"] for f in per_core.values()}) == 1,
            "identical": all(f["identical"] for f in per_core.values()),
        }
        total += data.messages
        seconds += per_core[chosen]["cpu_seconds"]
    result = StageResult.from_count(
        "batch", total, seconds, note=f"CPU seconds of process() only, {chosen} core"
    )
    result.figures = figures
    return result


def describe(figures: dict[str, Any]) -> list[str]:
    """One line per mix and core, then the cores' ratio and agreement (the stage's printed report)."""
    out = []
    for name, f in figures.items():
        out.append(f"{name}: {f['messages']:,} messages ({f['clicks']:,} clicks, {f['users']:,} users)")
        for core_name, c in f["cores"].items():
            out.append(
                f"  {core_name:>6}: {c['per_cpu_second']:,.0f} messages/CPU-s ({c['us_per_message']:.2f} us "
                f"each), accepted {c['accepted']:,}, dead letters {c['dead_letters']:,}, digest "
                f"{c['digest']}{'' if c['identical'] else ' (passes differ!)'}"
            )
        if f["ratio"] is not None:
            out.append(
                f"  native/python: {f['ratio']:.2f}x (target >= {TARGET_RATIO:g}x: "
                f"{'met' if f['ratio'] >= TARGET_RATIO else 'NOT met'}), digests equal: "
                f"{'yes' if f['digests_equal'] else 'NO'}"
            )
        else:
            out.append("  native: not built (the Python engine only)")
    return out


#: Issue #16: the compiled core does the batch path at least this many times faster than the Python engine.
TARGET_RATIO = 6.0


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.batchpath`: the batch stage alone, its figures on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.batchpath", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="messages per mix [100,000]")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="passes per mix (the fastest counts)")
    parser.add_argument("--batch", type=int, default=2000, help="records per partition batch")
    args = parser.parse_args(argv)
    result = run(args.events, args.days, args.seed, args.repeats, args.batch)
    for line in describe(result.figures):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
