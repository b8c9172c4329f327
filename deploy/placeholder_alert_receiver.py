"""PLACEHOLDER alert receiver of deploy/compose.yaml: replace it by your pager, ticket and chat integrations.

The generated Alertmanager config (deploy/alertmanager/alertmanager.yml) posts every notification to
`alert_webhook_url/<receiver>` (monitoring/config.py; default http://127.0.0.1:9095/alerts). In compose this
service shares Alertmanager's network namespace, so that address is this script: it prints one line per
notification (`docker compose -f deploy/compose.yaml logs alert-receiver`) and answers 200. Alerts are then
seen somewhere, never silently dropped, but nobody is paged: replace the receivers before relying on them
(docs/alerts.md). Standard library only: it runs in the kpimon image or any Python 3.11+.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Where the generated receivers post, unless PORT says otherwise.
DEFAULT_PORT = 9095


def describe(receiver: str, body: bytes) -> str:
    """One log line for an Alertmanager webhook notification to `receiver`."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return f"PLACEHOLDER receiver {receiver}: not an Alertmanager notification ({len(body)} bytes)"
    alerts = payload.get("alerts", []) if isinstance(payload, dict) else []
    names = sorted({str(alert.get("labels", {}).get("alertname", "?")) for alert in alerts})
    status = payload.get("status", "?") if isinstance(payload, dict) else "?"
    return (
        f"PLACEHOLDER receiver {receiver}: {status}, {len(alerts)} alert(s): {', '.join(names) or '-'}"
        " (nobody is notified: replace this receiver, docs/alerts.md)"
    )


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        print(describe(self.path.rstrip("/").rsplit("/", 1)[-1], body), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the notification line above says what matters."""


def main() -> None:
    """Serve on 127.0.0.1:PORT (Alertmanager's own loopback in compose) until stopped."""
    port = int(os.environ.get("PORT", DEFAULT_PORT))
    server = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    print(f"PLACEHOLDER alert receiver on 127.0.0.1:{port}: replace it (docs/alerts.md)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
