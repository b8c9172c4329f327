"""The integration tests' worker handle fails a test whose worker's compiled core fell back to the Python
engine (tests/workers.py): by the worker's metric while it runs, by its log once it has stopped."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kpimon.agents.pipeline.batch import NATIVE_FAILED
from tests.helpers import free_port
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
