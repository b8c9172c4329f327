"""`python -m bench`: kpimon's benchmark suite (issue #7). `python -m bench --help` explains it."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import batchpath, ceiling, delay, faust_variants, fill, kpimon_run, report
from bench.child import run_child
from bench.cluster import local_kafka
from bench.stats import StageResult

STAGES = (
    "batch",
    "ceiling",
    "ceiling-plain",
    "bare",
    "candidates",
    "naive",
    "quix",
    "kpimon",
    "kpimon2",
    "rss",
    "delay",
)
FULL: dict[str, float] = {
    "events": 1_000_000,
    "days": 30,
    "rss_users": 1_000_000,
    "timeout": 600,
    "delay_seconds": 30,
}
QUICK: dict[str, float] = {
    "events": 20_000,
    "days": 10,
    "rss_users": 20_000,
    "timeout": 120,
    "delay_seconds": 5,
}
#: The throughput stages that run on both traffic mixes.
MIX_STAGES = ("ceiling", "quix", "kpimon")
_MAIN_DATA_STAGES = {"ceiling", "ceiling-plain", "bare", "candidates", "naive", "quix", "kpimon", "kpimon2"}

DESCRIPTION = """\
Benchmark kpimon against a plain aiokafka consumer, a bare Faust agent and a naive Faust DAU, on the same
pre-filled 4-partition topics of a local Kafka the bench starts itself (a temporary run dir, the default
jar cache). Progress goes to stderr, the report to stdout.

stages (--only, comma-separated; all by default):
  batch    no Kafka: the batch path alone (validation, user states, counters) on in-memory batches of
           both traffic mixes, in messages per CPU second of `BatchProcessor.process` (bench/batchpath.py)
  ceiling  a plain aiokafka consumer (getmany) decoding every message with msgspec: the ceiling
  ceiling-plain  the same, its records aiokafka's own record objects instead of ConsumerRecords (as
           kpimon's source reader reads them): what building a ConsumerRecord per record costs
  bare     a Faust agent that only iterates over the raw messages (its own process)
  candidates  issue #7's levers on Faust's per-event cost, each a bare Faust process changed in one
           way: consumer/fetcher settings (10k records per poll, 8 MiB fetches, a 128k stream
           buffer), the conductor's cython_optimizations, stream.take(1000, within=1), and a bulk
           getmany task sending each batch as one event to a channel's agent; events/s and
           events/CPU-s each and over bare's (runs bare too when it is not chosen), and where bare's
           wall time goes: CPU-s/wall-s, its event loop on a CPU, waiting for one, asleep in epoll
  naive    a Faust DAU with per-event updates of 1-day tumbling windowed tables (its own process)
  quix     the peer: an exact DAU in Quix Streams (per-user state, group_by by day), its own process;
           needs the optional dependency (pip install -e '.[bench]'), else it reports why it did not run
  kpimon   one `kpimon worker`, timed from its first message until kpimon-kpis holds the true DAU of
           the last day (computed by the bench from the events it produced)
  kpimon2  the same with two `kpimon worker` processes in one group
  rss      one `kpimon worker` (`--store rocksdb` when the worker has that option) over --rss-users
           distinct users spread over --rss-days days: peak RSS (VmHWM) and user-state bytes per user
           (latest value sizes in the <app id>-user-state-changelog topic)
  (ceiling, quix and kpimon run on both traffic mixes: the main data set, where most clicks repeat a
   user-day already active, and a state-changing one, `kpimon simulate --clicks-per-day 1.8` over 60
   days, where most clicks turn a new user-day active; --one-mix skips the second)
  delay    a fresh worker fed clicks stamped now at half the kpimon rate (or --delay-rate), every
           --delay-per-user-th one the first click of a new user (a marker): the delay from producing
           a marker to its effect on the DAU gauge of /metrics, p50 and p99

A stage that runs longer than --timeout is stopped and reports the rate measured so far.
Targets (issues #7, #16): kpimon >= 120,000 events/s per worker process (kpimon/ceiling >= 0.35) on the
main mix, >= 60,000 on the state-changing mix, kpimon/quix >= 2,
kpimon/naive >= 10, peak RSS <= 400 MB for 1M users, p99 delay <= 2 s.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see DESCRIPTION)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=None, help="messages of the main data set, at least [1,000,000]"
    )
    parser.add_argument(
        "--users", type=int, default=None, help="simulated population (default: enough for --events)"
    )
    parser.add_argument("--days", type=int, default=None, help="days of simulated history to today [30]")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rss-users", type=int, default=None, help="users of the rss stage [1,000,000]")
    parser.add_argument("--rss-days", type=int, default=60, help="days the rss stage's users are spread over")
    parser.add_argument("--only", default=",".join(STAGES), help="stages to run, comma-separated")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per stage before its cap [600]")
    parser.add_argument("--flush-interval", type=float, default=1.0, help="kpimon worker --flush-interval")
    parser.add_argument("--delay-rate", type=float, default=None, help="offered events/s of the delay stage")
    parser.add_argument("--delay-seconds", type=float, default=None, help="measured seconds of delay [30]")
    parser.add_argument(
        "--delay-per-user", type=int, default=5, help="delay stage: clicks per new user (1 = all markers)"
    )
    parser.add_argument(
        "--scrape-interval", type=float, default=0.05, help="delay stage: /metrics poll period"
    )
    parser.add_argument(
        "--one-mix",
        action="store_true",
        help="run ceiling, quix and kpimon on the main (repeat-heavy) mix only, not the state-changing one",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run of each stage (about 4 min)")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (Kafka data, worker logs)")
    args = parser.parse_args(argv)
    # Flags given explicitly win over the sizes of a full or a --quick run.
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    args.stages = [s for s in STAGES if s in stages]
    return args


def say(text: str) -> None:
    """Progress on stderr, timestamped."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def machine() -> str:
    """CPU model and count, for the report header."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def _show(result: StageResult) -> None:
    rate = f"{result.rate:,.0f} events/s" if result.rate else "no rate"
    say(f"{result.stage}: {rate} ({result.events:,} messages in {result.seconds:.1f} s) {result.note}")


async def _child(
    stage: str,
    module: str,
    bootstrap: str,
    data: fill.DataSet,
    scratch: Path,
    timeout: float,
    extra_args: list[str] | None = None,
) -> StageResult:
    """Run one Faust child stage (`bench.child.run_child`), with progress on stderr."""
    say(f"{stage}: python -m {module} {' '.join(extra_args or [])}".rstrip())
    result = await run_child(stage, module, bootstrap, data, scratch, timeout, extra_args or ())
    _show(result)
    return result


async def run_stages(
    args: argparse.Namespace, bootstrap: str, scratch: Path, meta: dict[str, Any]
) -> dict[str, StageResult]:
    """Fill the data sets the chosen stages need, then run the stages one after the other."""
    results: dict[str, StageResult] = {}
    stages = args.stages
    now = fill.now_ms()
    data: fill.DataSet | None = None
    if "batch" in stages:
        say("batch: the batch path alone, both mixes, in process")
        results["batch"] = batchpath.run(
            min(int(args.events), batchpath.MAX_EVENTS), int(args.days), args.seed
        )
        _show(results["batch"])
    if _MAIN_DATA_STAGES & set(stages):
        users = args.users or fill.users_for(args.events, args.days, args.seed, now)
        say(
            f"filling the main data set: ~{args.events:,} simulated messages of {users:,} users "
            f"over {args.days} days"
        )
        data = await fill.fill(bootstrap, fill.simulated(users, args.days, args.seed, now), "bench-main-")
        meta["data_sets"]["main"] = asdict(data)
        say(
            f"filled {data.events:,} messages in {data.fill_seconds:.1f} s; "
            f"true DAU of the last day {data.dau_last_day:,}"
        )
    if data is not None and "ceiling" in stages:
        say("ceiling: plain aiokafka consumer")
        results["ceiling"] = await ceiling.run(bootstrap, data, args.timeout)
        _show(results["ceiling"])
    if data is not None and "ceiling-plain" in stages:
        say("ceiling-plain: plain aiokafka consumer without ConsumerRecord objects")
        results["ceiling-plain"] = await ceiling.run(bootstrap, data, args.timeout, plain=True)
        _show(results["ceiling-plain"])
    if data is not None and ("bare" in stages or "candidates" in stages):
        # bare Faust is also the candidates' baseline ("Faust defaults"), so it runs for them too.
        results["bare"] = await _child("bare", "bench.bare_faust", bootstrap, data, scratch, args.timeout)
    if data is not None and "candidates" in stages:
        # Right after bare: their ratios to it are the figures, and on a shared machine the load
        # changes less over a few minutes than over the whole run.
        for variant in faust_variants.VARIANTS:
            results[report.candidate_key(variant)] = await _child(
                report.candidate_key(variant),
                "bench.faust_variants",
                bootstrap,
                data,
                scratch,
                args.timeout,
                extra_args=["--variant", variant],
            )
    if data is not None and "naive" in stages:
        results["naive"] = await _child("naive", "bench.naive", bootstrap, data, scratch, args.timeout)
    if data is not None and "quix" in stages:
        if importlib.util.find_spec("quixstreams") is None:
            results["quix"] = StageResult("quix", complete=False, note="quixstreams not installed: .[bench]")
            say("quix: skipped, quixstreams is not installed (pip install -e '.[bench]')")
        else:
            results["quix"] = await _child("quix", "bench.quix_dau", bootstrap, data, scratch, args.timeout)
    for stage, workers in (("kpimon", 1), ("kpimon2", 2)):
        if data is not None and stage in stages:
            say(f"{stage}: {workers} x kpimon worker")
            results[stage] = await kpimon_run.run(
                stage,
                bootstrap,
                data,
                scratch,
                args.timeout,
                workers,
                args.flush_interval,
                state_bytes=workers == 1,
            )
            _show(results[stage])
    mix_stages = [stage for stage in MIX_STAGES if stage in stages]
    if mix_stages and not args.one_mix:
        await run_changing_mix(args, bootstrap, scratch, meta, results, mix_stages, now)
    if "rss" in stages:
        say(f"filling the rss data set: {args.rss_users:,} distinct users over {args.rss_days} days")
        rss_data = await fill.fill(
            bootstrap, fill.many_users(args.rss_users, args.rss_days, args.seed, fill.now_ms()), "bench-rss-"
        )
        meta["data_sets"]["rss"] = asdict(rss_data)
        say(f"filled {rss_data.events:,} messages in {rss_data.fill_seconds:.1f} s")
        results["rss"] = await kpimon_run.run(
            "rss",
            bootstrap,
            rss_data,
            scratch,
            args.timeout,
            1,
            args.flush_interval,
            rocksdb=True,
            state_bytes=True,
        )
        _show(results["rss"])
    if "delay" in stages:
        measured = results["kpimon"].rate if "kpimon" in results else None
        offered = args.delay_rate or (measured / 2 if measured else 1000.0)
        say(f"delay: {offered:,.0f} events/s offered for {args.delay_seconds:.0f} s")
        results["delay"] = await delay.run(
            bootstrap,
            scratch,
            offered,
            args.delay_seconds,
            interval=args.scrape_interval,
            flush_interval=args.flush_interval,
            per_user=args.delay_per_user,
        )
        figures = results["delay"].figures
        say(f"delay: p50 {figures.get('p50_s')} s, p99 {figures.get('p99_s')} s {results['delay'].note}")
    return results


async def run_changing_mix(
    args: argparse.Namespace,
    bootstrap: str,
    scratch: Path,
    meta: dict[str, Any],
    results: dict[str, StageResult],
    stages: list[str],
    now: int,
) -> None:
    """The throughput stages again, on the state-changing mix (issue #16): `kpimon simulate
    --clicks-per-day 1.8` over 60 days, about as many messages as the main data set. Results go to
    `<stage>-changing`."""
    per_day, days = batchpath.CHANGING_CLICKS_PER_DAY, batchpath.CHANGING_DAYS
    users = fill.users_for(args.events, days, args.seed, now, clicks_per_day=per_day)
    say(f"filling the state-changing data set: ~{args.events:,} messages of {users:,} users over {days} days")
    messages = fill.simulated(users, days, args.seed, now, clicks_per_day=per_day)
    data = await fill.fill(bootstrap, messages, "bench-changing-")
    meta["data_sets"]["changing"] = asdict(data)
    say(
        f"filled {data.events:,} messages in {data.fill_seconds:.1f} s; "
        f"true DAU of the last day {data.dau_last_day:,}"
    )
    for stage in stages:
        key = f"{stage}-changing"
        if stage == "ceiling":
            say(f"{key}: plain aiokafka consumer")
            result = await ceiling.run(bootstrap, data, args.timeout)
        elif stage == "quix":
            if importlib.util.find_spec("quixstreams") is None:
                continue
            result = await _child(key, "bench.quix_dau", bootstrap, data, scratch, args.timeout)
        else:
            say(f"{key}: 1 x kpimon worker")
            result = await kpimon_run.run(key, bootstrap, data, scratch, args.timeout, 1, args.flush_interval)
        result.stage = key
        results[key] = result
        _show(result)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: stages stop their workers and the bench stops its Kafka on the way out."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the bench; the report goes to stdout (and to --json)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    meta: dict[str, Any] = {
        "when": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "stages": args.stages,
        "quick": args.quick,
        "timeout_s": args.timeout,
        "flush_interval_s": args.flush_interval,
        "data_sets": {},
    }
    try:
        if args.stages == ["batch"]:  # the one stage without Kafka
            results = asyncio.run(run_stages(args, "", Path("."), meta))
        else:
            say(f"starting a local Kafka for the bench ({meta['machine']})")
            with local_kafka(keep=args.keep) as (bootstrap, scratch):
                say(f"Kafka on {bootstrap}, scratch dir {scratch}")
                results = asyncio.run(run_stages(args, bootstrap, scratch, meta))
    except KeyboardInterrupt:
        say("interrupted: workers and Kafka stopped, no report")
        return 130
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    print(report.render(results, meta))
    if "delay" in results:
        print()
        print(delay.__doc__ or "")
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(results, meta), indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
