"""A server binary that a test runs (Prometheus, Alertmanager): started, awaited, read and stopped alike.

`wait_serving` and `stop_group` serve `kpimon worker`'s handle too (tests/workers.py): every process a test
starts in a session of its own is awaited and stopped the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


def wait_serving(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    timeout: float,
    name: str,
    log_tail: Callable[[], str],
    interval: float,
) -> None:
    """Block until `ready()` says True; fail with the log's tail if the process exits first or `timeout`
    seconds pass. `ready` raising OSError (refused while starting, an HTTP error status) is not ready yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{log_tail()}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(interval)
    raise AssertionError(f"{name} not ready after {timeout}s:\n{log_tail()}")


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Send `sig` to the process group of `proc` (started in a session of its own, so that whatever it
    started ends too) and wait; SIGKILL the group if it does not exit within `timeout`. Its exit status."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


class ServerProcess:
    """A subprocess serving HTTP on 127.0.0.1:`port`, its stdout and stderr written to `log_path`.

    It runs in a session of its own, so that `stop()` ends it and whatever it started; ready when its
    `/-/ready` endpoint (Prometheus' and Alertmanager's) answers 200.
    """

    #: How failures name the server ("prometheus exited with 1").
    name = "server"

    def __init__(self, args: Sequence[str], port: int, log_path: Path, cwd: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def address(self) -> str:
        """host:port of the server."""
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until /-/ready answers 200, or fail with the server's log."""
        wait_serving(self.proc, self._ready, timeout, self.name, self.log_tail, interval=0.2)

    def _ready(self) -> bool:
        # Refused while starting, 503 until ready: both OSErrors (HTTPError is one), for wait_serving.
        with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the server (its process group) and wait; SIGKILL if it does not exit. Its exit status."""
        code = stop_group(self.proc, signal.SIGTERM, timeout)
        self._log.close()
        return code
