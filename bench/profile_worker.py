"""`python -m bench.profile_worker`: where one `kpimon worker`'s CPU goes, by part of the worker.

Starts the bench's own Kafka, fills one traffic mix (as `python -m bench` does), starts one `kpimon
worker` over it and samples the worker with py-spy (`pip install py-spy`; it needs ptrace rights over the
worker, e.g. root) for the first `--seconds` of its backfill. The samples are sorted into the parts of the
worker (fetch, batch core, state encoding and changelog, flush and publish, ...) by the functions on
their stacks (`PARTS`, first match from the leaf up wins) and printed as shares of the samples in which the
worker's threads were on a CPU (py-spy without `--idle`). `--raw FILE` keeps py-spy's collapsed stacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import batchpath, fill
from bench.cluster import local_kafka
from bench.worker import RunTopics, Worker, cpu_seconds
from kpimon.agents.config.topics import ensure_topics

#: (part, substrings of a frame "function (file:line)"): the first part whose substring appears in a
#: stack, looking from the leaf towards the root, takes the sample. Order matters only within one frame.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle: waiting in epoll", ("EpollSelector.select", "select (selectors.py")),
    ("state encoding (UserState.to_bytes)", ("to_bytes (kpimon/streams/userstate.py",)),
    ("state decoding (UserState.from_bytes)", ("from_bytes (kpimon/streams/userstate.py",)),
    ("changelog record batches", ("send_pending (kpimon/agents/runtime/user_store.py", "_send_all (")),
    ("table store writes", ("__setitem__ (kpimon/agents/runtime/user_store.py",)),
    ("batch core (compiled core call)", ("_process_native (kpimon/agents/pipeline/batch.py",)),
    ("Python engine (records left to it)", ("_process_python (kpimon/agents/pipeline/batch.py",)),
    ("batch bookkeeping (metrics, write-back)", ("process (kpimon/agents/pipeline/batch.py",)),
    ("retention sweep", ("sweep (kpimon/agents/pipeline",)),
    ("flush partials", ("flush (kpimon/agents/runtime/publishing.py", "kpimon/agents/pipeline/partials.py")),
    (
        "aggregate and publish",
        ("kpimon/agents/runtime/aggregate_agent.py", "kpimon/agents/pipeline/aggregation.py"),
    ),
    ("/metrics and web", ("kpimon/agents/exporter/", "prometheus_client/")),
    (
        "fetch: unpacking records",
        (
            "_consumer_record (",
            "_unpack_records (",
            "_plain_iterator (",
            "PartitionRecords.__next__",
            "FetchResult.getall",
        ),
    ),
    ("fetch: aiokafka other", ("aiokafka/consumer/fetcher.py", "aiokafka/record/")),
    ("socket writes (produce and fetch requests)", ("_SelectorSocketTransport.write",)),
    ("produce: aiokafka", ("aiokafka/producer/",)),
    ("Kafka protocol and connections", ("aiokafka/conn.py", "aiokafka/protocol/", "aiokafka/client.py")),
    ("Faust and mode", ("faust/", "mode/")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop")),
)
OTHER = "other"


def part_of(stack: str) -> str:
    """The part of one collapsed stack (frames separated by ';', root first)."""
    for frame in reversed(stack.split(";")):
        for part, needles in PARTS:
            if any(needle in frame for needle in needles):
                return part
    return OTHER


def split(raw: str) -> Counter[str]:
    """Samples per part from py-spy's raw (collapsed) output: 'frame;frame;... count' lines."""
    parts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            parts[part_of(stack)] += int(count)
    return parts


def render(parts: Counter[str]) -> str:
    """The split as a table, largest first: shares of all samples and of the busy ones (not in epoll)."""
    total = sum(parts.values()) or 1
    busy = sum(count for part, count in parts.items() if not part.startswith("idle")) or 1
    lines = [f"{'part':<46} {'samples':>8} {'of all':>7} {'of busy':>8}"]
    for part, count in parts.most_common():
        share = "" if part.startswith("idle") else f"{count / busy:>8.1%}"
        lines.append(f"{part:<46} {count:>8} {count / total:>7.1%} {share}")
    lines.append(f"{'total':<46} {total:>8}")
    return "\n".join(lines)


async def _profile(args: argparse.Namespace, bootstrap: str, scratch: Path) -> tuple[str, dict[str, float]]:
    now = fill.now_ms()
    if args.mix == "changing":
        per_day, days = batchpath.CHANGING_CLICKS_PER_DAY, batchpath.CHANGING_DAYS
    else:
        per_day, days = None, args.days
    users = fill.users_for(args.events, days, args.seed, now, clicks_per_day=per_day)
    print(f"filling ~{args.events:,} messages ({args.mix} mix, {users:,} users)", file=sys.stderr)
    data = await fill.fill(
        bootstrap, fill.simulated(users, days, args.seed, now, per_day), f"prof-{args.mix}-"
    )
    topics = RunTopics(data.clicks_topic, data.surveys_topic, "prof-")
    await ensure_topics(bootstrap, topics.changelog_specs(data.partitions), "bench")
    lateness = int(time.time() // 86400) - data.first_day + 2
    worker = Worker(bootstrap, topics, scratch / "prof", lateness, 1.0, args.store)
    try:
        while not (worker.events_total() or 0) > 0:  # profile the backfill, not the start-up
            if not worker.alive:
                raise SystemExit(f"the worker exited:\n{worker.log_tail()}")
            await asyncio.sleep(0.2)
        events0, cpu0, t0 = worker.events_total() or 0, cpu_seconds(worker.proc.pid) or 0, time.monotonic()
        spy = [
            args.py_spy,
            "record",
            "--pid",
            str(worker.proc.pid),
            "--rate",
            str(args.rate),
            "--duration",
            str(int(args.seconds)),
            "--nonblocking",  # py-spy's default pauses the worker for every sample
            "--format",
            "raw",
            "--output",
            str(args.raw),
        ]
        if args.native:
            spy.append("--native")
        await asyncio.to_thread(subprocess.run, spy, check=True, capture_output=True)
        events = (worker.events_total() or 0) - events0
        wall, cpu = time.monotonic() - t0, (cpu_seconds(worker.proc.pid) or 0) - cpu0
    finally:
        await asyncio.to_thread(worker.stop)
    figures = {"events": events, "seconds": wall, "cpu_seconds": cpu, "total_events": data.events}
    return args.raw.read_text(), figures


def main(argv: list[str] | None = None) -> int:
    """Fill, run one worker under py-spy, print the split."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_worker", description=__doc__)
    parser.add_argument("--mix", choices=("repeat", "changing"), default="repeat")
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--days", type=int, default=30, help="days of the repeat mix")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20, help="seconds sampled")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--store", choices=("memory", "rocksdb"), default=None)
    parser.add_argument("--native", action="store_true", help="py-spy --native (Rust frames too)")
    parser.add_argument("--raw", type=Path, default=Path("profile.raw"), help="py-spy's collapsed stacks")
    parser.add_argument(
        "--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    )
    args = parser.parse_args(argv)
    if args.raw.suffix == ".txt" and args.raw.exists():
        # Re-split a profile already recorded (no Kafka).
        print(render(split(args.raw.read_text())))
        return 0
    with contextlib.ExitStack() as stack:
        bootstrap, scratch = stack.enter_context(local_kafka())
        raw, figures = asyncio.run(_profile(args, bootstrap, scratch))
    rate = figures["events"] / max(figures["seconds"], 1e-9)
    per_cpu = figures["events"] / max(figures["cpu_seconds"], 1e-9)
    with contextlib.suppress(OSError):
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"load average {' '.join(load)}")
    print(
        f"{args.mix} mix: {figures['events']:,.0f} messages in {figures['seconds']:.1f} s sampled "
        f"({rate:,.0f}/s, {per_cpu:,.0f} per CPU second; {figures['cpu_seconds'] / figures['seconds']:.2f} "
        f"CPU-s per s) of {figures['total_events']:,}"
    )
    print(render(split(raw)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
