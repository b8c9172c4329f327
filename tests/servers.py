"""A server binary that a test runs (Prometheus, Alertmanager): started, awaited, read and stopped alike."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:  # refused while starting, or 503 until ready (HTTPError is an OSError)
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the server (its process group) and wait; SIGKILL if it does not exit. Its exit status."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode
