"""`kpimon top` against a real broker: known records on `<prefix>kpimon-kpis` and a /metrics with known
figures; the full-screen view driven in tmux at 80x24, the plain lines through a pipe."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from kpimon.agents.config.topics import TopicSpec, ensure_topics
from kpimon.streams import output
from kpimon.streams.output import KpiRecord, day_name, day_number
from tests.helpers import KPIMON

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DAY = "2026-11-24"

METRICS = b"""\
# TYPE kpimon_events_total counter
kpimon_events_total{topic="clicks",outcome="accepted"} 4242.0
kpimon_events_total{topic="clicks",outcome="rejected"} 17.0
kpimon_events_total{topic="clicks",outcome="duplicate"} 5.0
# TYPE kpimon_dead_letters_total counter
kpimon_dead_letters_total{topic="clicks",reason="invalid_json"} 17.0
# TYPE kpimon_consumer_lag_messages gauge
kpimon_consumer_lag_messages{topic="clicks",partition="0"} 7.0
"""


def known_records() -> list[KpiRecord]:
    """14 days of all/all DAU (1000, 1100, ... 2300) and NPS 7d falling to +18.0, below its target 30."""
    records = []
    last = day_number(DAY)
    for i in range(14):
        day = day_name(last - 13 + i)
        common: dict[str, Any] = {"dimension": "all", "segment": "all", "day": day}
        records.append(KpiRecord(kpi="active_users", window="1d", value=1000 + 100 * i, **common))
        nps = 44.0 - 2 * i
        records.append(
            KpiRecord(
                kpi="nps",
                window="7d",
                value=nps,
                denominator=250,
                target=30.0,
                target_direction="min",
                breach=nps < 30,
                **common,
            )
        )
    records.append(
        KpiRecord(kpi="csat", window="7d", dimension="all", segment="all", day=DAY, value=None, denominator=0)
    )
    return records


async def _publish(bootstrap: str, topic: str, records: list[KpiRecord], create: bool) -> None:
    if create:
        await ensure_topics(bootstrap, [TopicSpec(topic, 2, {"cleanup.policy": "compact"})])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(topic, output.encode(record), key=record.key.encode())
    finally:
        await producer.stop()


def publish(bootstrap: str, topic: str, records: list[KpiRecord], create: bool = False) -> None:
    asyncio.run(_publish(bootstrap, topic, records, create))


@pytest.fixture
def kpi_topic(kafka_bootstrap: str, unique_prefix: str) -> str:
    """`<prefix>kpimon-kpis` (2 partitions, compacted) holding the known records."""
    topic = f"{unique_prefix}kpimon-kpis"
    publish(kafka_bootstrap, topic, known_records(), create=True)
    return topic


@pytest.fixture
def metrics_url() -> Iterator[str]:
    """A /metrics serving known pipeline figures, like a worker's."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def top_args(bootstrap: str, prefix: str, metrics_url: str, *extra: str) -> list[str]:
    return [
        KPIMON,
        "top",
        "--broker",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--metrics-url",
        metrics_url,
        "--interval",
        "0.5",
        *extra,
    ]


class Tmux:
    """A tmux server of our own (its own socket), one session running one command at 80x24."""

    def __init__(self, command: list[str] | str) -> None:
        """`command`: the arguments of one program, or a shell command line."""
        self.socket = f"kpimon-test-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        shell = command if isinstance(command, str) else shlex.join(command)
        self._tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", shell, env=env)
        self.socket_path = self._tmux("display-message", "-p", "#{socket_path}").stdout.strip()

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-u", "-L", self.socket, *args], capture_output=True, text=True, env=env, check=False
        )

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "top").stdout

    def alive(self) -> bool:
        return self._tmux("has-session", "-t", "top").returncode == 0

    def wait_for(self, *parts: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if all(part in text for part in parts):
                return text
            if not self.alive():
                break
            time.sleep(0.3)
        raise AssertionError(f"{parts} not on the screen after {timeout}s:\n{text}")

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def close(self) -> None:
        """Stop the server (and what still runs in it) and remove its socket."""
        self._tmux("kill-server")
        if self.socket_path:
            Path(self.socket_path).unlink(missing_ok=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (deploy/system-deps.sh installs it)")
def test_top_in_a_terminal_shows_values_and_breaches_and_follows_the_topic(
    kafka_bootstrap: str, unique_prefix: str, kpi_topic: str, metrics_url: str
) -> None:
    tmux = Tmux(top_args(kafka_bootstrap, unique_prefix, metrics_url))
    try:
        text = tmux.wait_for("▼ BREACH", "2,300", "lag 7")
        lines = text.rstrip("\n").splitlines()
        assert len(lines) <= 24 and max(len(line) for line in lines) <= 80, text
        assert "all/all" in lines[0] and f"day {DAY}" in lines[0] and "live" in lines[0], text
        dau = next(line for line in lines if line.startswith("DAU"))
        assert "2,300" in dau and "▁▂▂▃▃▄▄▅▅▆▆▇▇█" in dau, text
        nps = next(line for line in lines if line.startswith("NPS 7d"))
        assert "+18.0" in nps and "≥ 30" in nps and "▼ BREACH" in nps, text
        csat = next(line for line in lines if line.startswith("CSAT 7d"))
        assert csat.split()[2] == "–", text  # undefined, not 0
        pipeline = next(line for line in lines if line.startswith("Pipeline"))
        assert "accepted 4,242" in pipeline and "dead letters 17" in pipeline, text

        # A new record on the topic reaches the screen: NPS recovers, the breach mark goes.
        recovered = KpiRecord(
            kpi="nps",
            window="7d",
            dimension="all",
            segment="all",
            day=DAY,
            value=31.5,
            denominator=260,
            target=30.0,
            target_direction="min",
            breach=False,
        )
        publish(kafka_bootstrap, kpi_topic, [recovered])
        text = tmux.wait_for("+31.5", timeout=30)
        assert "BREACH" not in text, text

        tmux.send("C-c")
        deadline = time.monotonic() + 20
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive(), f"kpimon top did not quit on Ctrl-C:\n{tmux.screen()}"
    finally:
        tmux.close()


def test_top_through_a_pipe_prints_plain_lines(
    kafka_bootstrap: str, unique_prefix: str, kpi_topic: str, metrics_url: str
) -> None:
    once = subprocess.run(
        top_args(kafka_bootstrap, unique_prefix, metrics_url, "--once"),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert once.returncode == 0, once.stderr
    line = once.stdout.strip()
    assert "\n" not in line, once.stdout
    assert f"all/all  day {DAY}  DAU 2300" in line
    assert "NPS 7d +18.0!" in line  # "!" marks the breach
    assert "CSAT 7d –" in line
    assert "accepted 4242  rejected 17  duplicate 5  dead letters 17  lag 7" in line

    follow = subprocess.Popen(
        top_args(kafka_bootstrap, unique_prefix, metrics_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert follow.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines.append(follow.stdout.readline())
            if "DAU 2300" in lines[-1] and "events/s 0.0" in lines[-1]:
                break  # loaded, and a second scrape of the unchanged counters gave a rate
        else:
            raise AssertionError("".join(lines))
        assert lines[0].startswith("kpimon top: one line per refresh"), lines
        assert "NPS 7d +18.0!" in lines[-1]
    finally:
        follow.send_signal(signal.SIGTERM)
        rest, _ = follow.communicate(timeout=30)
    assert follow.returncode == 0, rest


def test_top_once_fails_clearly_without_the_topic(kafka_bootstrap: str, unique_prefix: str) -> None:
    result = subprocess.run(
        [
            KPIMON,
            "top",
            "--broker",
            kafka_bootstrap,
            "--topic-prefix",
            unique_prefix,
            "--once",
            "--no-metrics",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"topic {unique_prefix}kpimon-kpis does not exist" in result.stderr
