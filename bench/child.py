"""What the Faust stages share: the child's command line and status file, and the parent's runner.

A child (`python -m bench.bare_faust ...`, `python -m bench.naive ...`) is a real Faust worker process.
It counts the messages its agent has processed and writes a small JSON status file every second and
when it has seen the expected number: {"count", "first", "last", "done", "figures", "cpu"} with the
wall-clock times of the first and the latest message and the CPU seconds the process used since the
first one. The parent polls that file, stops the child when it is done or when the stage's time is up,
and turns the status into a result (a partial rate on a timeout).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from bench.fill import DataSet
from bench.stats import StageResult


def child_arguments(description: str) -> argparse.Namespace:
    """The command line every Faust child takes."""
    parser = argparse.ArgumentParser(description=description)
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


def serve_child(app: faust.App) -> None:
    """Run the child's Faust worker until the parent stops it.

    Without Faust's terminal spinner, as `kpimon worker` runs: with a warning log level the spinner makes
    every library debug record be built, which would tax the Faust stages and not kpimon.
    """
    runner = faust.Worker(app, loglevel="warning", quiet=True)
    runner.spinner = None
    runner.execute_from_commandline()


@dataclass
class Progress:
    """The child's counter and its status file."""

    expected: int
    path: Path
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    done: bool = False
    cpu_first: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)

    def tick(self) -> bool:
        """Count one processed message; True exactly when the expected count is reached."""
        now = time.time()
        if not self.count:
            self.first = now
            self.cpu_first = time.process_time()
        self.count += 1
        self.last = now
        if self.count == self.expected:
            self.done = True
            self.write()
            return True
        return False

    def write(self) -> None:
        """Write the status atomically (the parent may read at any moment)."""
        status = {
            "count": self.count,
            "first": self.first,
            "last": self.last,
            "done": self.done,
            "figures": self.figures,
            # CPU seconds of this process since the first message, at the moment of `count`.
            "cpu": time.process_time() - self.cpu_first if self.count else 0.0,
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
    stage: str, module: str, bootstrap: str, data: DataSet, scratch: Path, timeout: float
) -> StageResult:
    """Run `python -m <module>` over the data set until it has processed every message or time is up."""
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
    # The first message is not timed (it starts the clock), hence count - 1.
    result = StageResult.from_count(
        stage,
        max(0, count - 1),
        float(status.get("last", 0.0)) - float(status.get("first", 0.0)),
        complete=done,
    )
    result.figures.update(status.get("figures", {}))
    result.figures["cpu_seconds"] = float(status.get("cpu", 0.0))
    if not done:
        result.note = f"capped after {timeout:.0f} s: partial rate over {count:,} of {data.events:,} messages"
    return result
