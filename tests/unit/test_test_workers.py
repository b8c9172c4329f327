"""The integration tests' worker handle (tests/workers.py) fails a test whose worker's compiled core fell back
to the Python engine: by the worker's metric while it runs, by its log once it has stopped. Its wait for
/ready fails with the log of a worker that exited, and on a batch core other than the one asked for; its
stop kills a worker that ignores the signal."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kpimon.agents.pipeline.batch import NATIVE_FAILED
from tests.helpers import free_port, poll
from tests.workers import WorkerProcess


def stand_in(tmp_path: Path, script: str) -> str:
    """An executable that stands in for `kpimon` (its arguments `worker --web-port N ...` ignored)."""
    path = tmp_path / "kpimon"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def metrics_server() -> Iterator[tuple[int, list[bytes]]]:
    """A /metrics server on a free port answering the body in the list (tests set it)."""
    body = [b""]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], body
    server.shutdown()
    server.server_close()


def fallbacks_body(panic: int, error: int) -> bytes:
    return (
        "# TYPE kpimon_native_core_fallbacks_total counter\n"
        f'kpimon_native_core_fallbacks_total{{reason="panic"}} {panic}\n'
        f'kpimon_native_core_fallbacks_total{{reason="error"}} {error}\n'
    ).encode()


def test_a_running_worker_reporting_fallbacks_fails_the_check(
    tmp_path: Path, metrics_server: tuple[int, list[bytes]]
) -> None:
    port, body = metrics_server
    sleeper = stand_in(tmp_path, "exec sleep 60")
    worker = WorkerProcess([], port, tmp_path / "w.log", dict(os.environ), executable=sleeper)
    try:
        body[0] = fallbacks_body(0, 0)
        assert worker.native_core_fallbacks() == 0
        worker.check_no_fallbacks()  # a clean worker passes
        body[0] = fallbacks_body(2, 1)
        assert worker.native_core_fallbacks() == 3
        with pytest.raises(AssertionError, match="fell back to the Python engine 3 times"):
            worker.check_no_fallbacks()
    finally:
        worker.stop()  # reported once: stopping does not fail a second time


def test_a_stopped_worker_that_logged_a_fallback_fails_stop(tmp_path: Path) -> None:
    quits = stand_in(tmp_path, f"echo '[...] WARNING {NATIVE_FAILED} of partition 0'")
    worker = WorkerProcess([], free_port(), tmp_path / "w.log", dict(os.environ), executable=quits)
    worker.proc.wait(30)
    with pytest.raises(AssertionError, match="logged 'the compiled core failed on a batch'"):
        worker.stop()
    clean = stand_in(tmp_path, "echo 'batch core: native'")
    passes = WorkerProcess([], free_port(), tmp_path / "c.log", {}, executable=clean)
    passes.proc.wait(30)
    assert passes.stop() == 0  # its log holds no fallback


def test_wait_ready_fails_with_the_log_of_a_worker_that_exited(tmp_path: Path) -> None:
    quits = stand_in(tmp_path, "echo 'cannot start'; exit 3")
    worker = WorkerProcess([], free_port(), tmp_path / "w.log", dict(os.environ), executable=quits)
    with pytest.raises(AssertionError, match=r"worker exited with 3:\ncannot start"):
        worker.wait_ready(timeout=30)
    worker.stop()


def test_wait_ready_checks_the_batch_core_the_worker_says_it_runs(
    tmp_path: Path, metrics_server: tuple[int, list[bytes]]
) -> None:
    port, body = metrics_server  # answers 200 on /ready too
    body[0] = b'# TYPE kpimon_build_info gauge\nkpimon_build_info{core="python",version="0"} 1\n'
    sleeper = stand_in(tmp_path, "exec sleep 60")
    asked_native = WorkerProcess(
        [], port, tmp_path / "n.log", dict(os.environ), executable=sleeper, core="native"
    )
    asked_python = WorkerProcess(
        [], port, tmp_path / "p.log", dict(os.environ), executable=sleeper, core="python"
    )
    try:
        with pytest.raises(AssertionError, match="the worker runs the python core, not native"):
            asked_native.wait_ready(timeout=30)
        asked_python.wait_ready(timeout=30)
    finally:
        asked_native.stop()
        asked_python.stop()


def test_stop_kills_a_worker_that_ignores_the_signal(tmp_path: Path) -> None:
    stubborn = stand_in(tmp_path, "trap '' TERM; echo trapped; exec sleep 60")
    worker = WorkerProcess([], free_port(), tmp_path / "w.log", dict(os.environ), executable=stubborn)
    poll(lambda: worker.log_tail(), lambda tail: "trapped" in tail, timeout=30, message="the trap set")
    started = time.monotonic()
    assert worker.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 10
