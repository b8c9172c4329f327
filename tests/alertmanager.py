"""A real Alertmanager for tests and a webhook receiver that records what it is sent.

`running_alertmanager()` starts Debian's `prometheus-alertmanager` on a free 127.0.0.1 port with a config
generated from a `MonitoringConfig` (monitoring/alertmanager.py), clustering off, and stops it on exit.
`running_webhook()` is an HTTP server on 127.0.0.1 that keeps every notification Alertmanager posts (the
receiver is the last path segment of the URL, as the generated webhooks are `<alert_webhook_url>/<receiver>`).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from monitoring.alertmanager import alertmanager_config
from monitoring.config import MonitoringConfig
from monitoring.render import to_yaml
from tests.helpers import free_port
from tests.prometheus import binary
from tests.servers import ServerProcess


@dataclass(frozen=True)
class Notification:
    """One webhook call: when it arrived, to which receiver, and Alertmanager's JSON payload."""

    received: float  # time.time()
    receiver: str
    payload: dict[str, Any]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alerts of the notification (each with status, labels, annotations)."""
        alerts: list[dict[str, Any]] = self.payload["alerts"]
        return alerts

    @property
    def group_labels(self) -> dict[str, str]:
        """The labels the notification's group is made of (the route's group_by)."""
        labels: dict[str, str] = self.payload["groupLabels"]
        return labels


class WebhookReceiver:
    """The notifications received so far (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[Notification] = []
        self.url = ""

    def add(self, notification: Notification) -> None:
        """Record one notification."""
        with self._lock:
            self._notifications.append(notification)

    def notifications(self, since: float = 0.0) -> list[Notification]:
        """Every notification received at or after `since` (time.time())."""
        with self._lock:
            return [n for n in self._notifications if n.received >= since]

    def firing(self, alertname: str, since: float = 0.0) -> list[tuple[Notification, dict[str, Any]]]:
        """(notification, alert) of every firing alert `alertname` received since `since`."""
        return [
            (n, a)
            for n in self.notifications(since)
            for a in n.alerts
            if a["labels"].get("alertname") == alertname and a["status"] == "firing"
        ]


@contextmanager
def running_webhook() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1:<free port>; `.url` is its base URL."""
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            name = self.path.rstrip("/").rsplit("/", 1)[-1]
            receiver.add(Notification(time.time(), name, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test reads the notifications, not a log

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class AlertmanagerServer(ServerProcess):
    """A `prometheus-alertmanager` subprocess on 127.0.0.1:`port` and a small client of its API v2."""

    name = "alertmanager"

    def __init__(self, config_file: Path, storage: Path, port: int, log_path: Path) -> None:
        super().__init__(
            [
                binary("prometheus-alertmanager"),
                f"--config.file={config_file}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                # One instance: no gossip port (its default 9094 would collide between sessions).
                "--cluster.listen-address=",
            ],
            port,
            log_path,
        )

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, with its status (active, suppressed: inhibitedBy, silencedBy)."""
        url = f"http://{self.address}/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true"
        with urllib.request.urlopen(url, timeout=10) as response:
            alerts: list[dict[str, Any]] = json.loads(response.read())
        return alerts


def write_config(directory: Path, config: MonitoringConfig) -> Path:
    """alertmanager.yml generated from `config` (as `make generate` renders the committed one); its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "alertmanager.yml"
    path.write_text(to_yaml(alertmanager_config(config), "test"))
    result = subprocess.run(
        [binary("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return path


@contextmanager
def running_alertmanager(config_file: Path, storage: Path) -> Iterator[AlertmanagerServer]:
    """A ready Alertmanager serving `config_file` on a free port; stopped on exit."""
    storage.mkdir(parents=True, exist_ok=True)
    server = AlertmanagerServer(config_file, storage, free_port(), config_file.parent / "alertmanager.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
