"""What the Faust stages share: the child's command line and status file, and the parent's runner.

A child (`python -m bench.bare_faust ...`, `python -m bench.naive ...`, `python -m bench.faust_variants
...`) is a real Faust worker process. It counts the messages its agent has processed and writes a small
JSON status file every second and when it has seen the expected number: {"count", "untimed", "first",
"last", "done", "figures", "cpu", "wall", "loop_cpu", "loop_wait"} with the wall-clock times of the first
and the latest delivery, the messages of the first delivery (they start the clock, so they are not
timed), and, since that first delivery, the CPU seconds of the whole process, the wall seconds, and the
seconds its main thread (the event loop) spent on a CPU and runnable but waiting for one. The parent polls
that file, stops the child when it is done or when the stage's time is up, and turns the status into a
result (a partial rate on a timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from bench.fill import DataSet
from bench.stats import StageResult, parse_schedstat


def child_arguments(description: str, variants: Sequence[str] = ()) -> argparse.Namespace:
    """The command line every Faust child takes (and a required --variant when `variants` are given)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if variants:
        parser.add_argument("--variant", required=True, choices=list(variants))
    parser.add_argument("--broker", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--expected", type=int, required=True, help="messages to process before done")
    parser.add_argument("--status", type=Path, required=True, help="JSON status file to write")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--days", type=int, default=90, help="window retention of the naive tables")
    return parser.parse_args()


def child_app(args: argparse.Namespace, **settings: Any) -> tuple[faust.App, Any]:
    """The Faust app of a child and its input topic (raw bytes), configured alike for every stage."""
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.broker}",
        store="memory://",
        datadir=str(args.data_dir),
        topic_partitions=args.partitions,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        **settings,
    )
    topic = app.topic(*args.topics.split(","), key_serializer="raw", value_serializer="raw")
    return app, topic


def serve_child(app: faust.App, progress: Progress) -> None:
    """Run the child's Faust worker until the parent stops it, writing `progress` every second.

    Without Faust's terminal spinner, as `kpimon worker` runs: with a warning log level the spinner makes
    every library debug record be built, which would tax the Faust stages and not kpimon.
    """

    async def report() -> None:
        progress.write()

    app.timer(1.0)(report)
    runner = faust.Worker(app, loglevel="warning", quiet=True)
    runner.spinner = None
    runner.execute_from_commandline()


def loop_times() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of this process's main thread.

    The main thread runs Faust's event loop; its wall time minus these two is the time the loop slept
    (in epoll, waiting for I/O or a timer). (0, 0) where /proc/self/schedstat is not available.
    """
    try:
        return parse_schedstat(Path("/proc/self/schedstat").read_text())
    except (OSError, ValueError):
        return 0.0, 0.0


@dataclass
class Progress:
    """The child's counter and its status file."""

    expected: int
    path: Path
    count: int = 0
    #: Messages of the first delivery: they start the clock, so the rate leaves them out.
    untimed: int = 0
    first: float = 0.0
    last: float = 0.0
    done: bool = False
    cpu_first: float = 0.0
    loop_first: tuple[float, float] = (0.0, 0.0)
    figures: dict[str, Any] = field(default_factory=dict)
    _final: dict[str, float] | None = field(default=None, repr=False)

    def _start(self, now: float, messages: int) -> None:
        self.first = now
        self.untimed = messages
        self.cpu_first = time.process_time()
        self.loop_first = loop_times()

    def tick(self) -> bool:
        """Count one processed message; True exactly when the expected count is reached."""
        now = time.time()
        if not self.count:
            self._start(now, 1)
        self.count += 1
        self.last = now
        if self.count == self.expected:
            self.done = True
            self.write()
            return True
        return False

    def add(self, messages: int) -> bool:
        """Count `messages` processed together (one batch); True exactly when the expected count is
        first reached."""
        if messages <= 0:
            return False
        now = time.time()
        if not self.count:
            self._start(now, messages)
        self.count += messages
        self.last = now
        if not self.done and self.count >= self.expected:
            self.done = True
            self.write()
            return True
        return False

    def measured(self) -> dict[str, float]:
        """CPU and wall seconds since the first delivery, as of now; frozen once done.

        "cpu" is the CPU time of the whole process (all threads); "wall" the wall time; "loop_cpu" and
        "loop_wait" the main thread's time on a CPU and runnable but waiting for one. Frozen at the
        moment the expected count is reached: the status is written again after that (the timer, the
        naive stage's figures), and an idle process's later seconds are not part of the run.
        """
        if self._final is not None:
            return self._final
        if not self.count:
            return {"cpu": 0.0, "wall": 0.0, "loop_cpu": 0.0, "loop_wait": 0.0}
        loop_cpu, loop_wait = loop_times()
        values = {
            "cpu": time.process_time() - self.cpu_first,
            "wall": time.time() - self.first,
            "loop_cpu": loop_cpu - self.loop_first[0],
            "loop_wait": loop_wait - self.loop_first[1],
        }
        if self.done:
            self._final = values
        return values

    def write(self) -> None:
        """Write the status atomically (the parent may read at any moment)."""
        status = {
            "count": self.count,
            "untimed": self.untimed,
            "first": self.first,
            "last": self.last,
            "done": self.done,
            "figures": self.figures,
            **self.measured(),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(self.path)


def read_status(path: Path) -> dict[str, Any]:
    """The child's latest status ({} before the first write)."""
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return status


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group started for `proc`, SIGKILL it if it does not exit in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def run_child(
    stage: str,
    module: str,
    bootstrap: str,
    data: DataSet,
    scratch: Path,
    timeout: float,
    extra_args: Sequence[str] = (),
) -> StageResult:
    """Run `python -m <module> ... <extra_args>` over the data set until it has processed every message
    or time is up."""
    work = scratch / stage
    work.mkdir(parents=True, exist_ok=True)
    status_path = work / "status.json"
    log_path = work / "child.log"
    cmd = [
        sys.executable,
        "-m",
        module,
        "--broker",
        bootstrap,
        "--app-id",
        f"bench-{stage}-{os.getpid()}",
        "--topics",
        ",".join(data.topics),
        "--partitions",
        str(data.partitions),
        "--expected",
        str(data.events),
        "--status",
        str(status_path),
        "--data-dir",
        str(work / "data"),
        "--days",
        str(data.days + 10),
        *extra_args,
    ]
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    status: dict[str, Any] = {}
    next_report = started + 15
    try:
        while time.monotonic() - started < timeout:
            status = read_status(status_path)
            if status.get("done") or proc.poll() is not None:
                break
            if time.monotonic() >= next_report:
                next_report += 15
                count, span = status.get("count", 0), status.get("last", 0) - status.get("first", 0)
                shown = f"{count / span:,.0f}/s" if span > 0 else "-"
                print(f"  {stage}: {count:,}/{data.events:,} messages ({shown})", file=sys.stderr)
            await asyncio.sleep(0.5)
        status = read_status(status_path)
    finally:
        # Also on cancellation (Ctrl-C, SIGTERM): the child has its own session and must not outlive us.
        stop_process(proc)
    count = int(status.get("count", 0))
    done = bool(status.get("done"))
    if proc.returncode not in (None, 0, -signal.SIGTERM) and not done and not count:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        print(f"  {stage}: the child exited with {proc.returncode}:\n" + "\n".join(tail), file=sys.stderr)
    # The first delivery (one message, or one batch) is not timed: it starts the clock.
    result = StageResult.from_count(
        stage,
        max(0, count - int(status.get("untimed", 1))),
        float(status.get("last", 0.0)) - float(status.get("first", 0.0)),
        complete=done,
    )
    result.figures.update(status.get("figures", {}))
    result.figures["cpu_seconds"] = float(status.get("cpu", 0.0))
    for name in ("wall", "loop_cpu", "loop_wait"):
        result.figures[f"{name}_seconds"] = float(status.get(name, 0.0))
    if not done:
        result.note = f"capped after {timeout:.0f} s: partial rate over {count:,} of {data.events:,} messages"
    return result
