"""Loopback HTTP servers for redirect tests: a "worker" that redirects and a "trap" that records.

Each server answers per `routes` (path -> (status, Location or None)); a 200 route needs `TOKEN` in the
Authorization header (else 401) and serves `METRICS`. Every request's (path, Authorization) is recorded.
"""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

USER, PASSWORD = "prometheus", "top-Pa55-never-elsewhere"
TOKEN = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
METRICS = b'kpimon_events_total{topic="clicks",outcome="accepted"} 7.0\n'


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers per `routes` (path -> (status, Location or None)), records (path, Authorization)."""

    routes: dict[str, tuple[int, str | None]]
    seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        status, location = self.routes.get(self.path, (404, None))
        if status == 200 and self.headers.get("Authorization") != TOKEN:
            status = 401
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        body = METRICS if status == 200 else b"no\n"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(routes: dict[str, tuple[int, str | None]]) -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A server on a free loopback port: (its base URL, the requests it saw), stopped on exit."""
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (Recorder,), {"routes": routes, "seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
