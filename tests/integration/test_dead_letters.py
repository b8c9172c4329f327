"""No silent drops, end to end on real Kafka (issue #20): `kpimon replay` warns about events older than the
lateness bound, the worker logs a summary of its rejections, and `kpimon dead-letters` shows them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kpimon.streams.events import MS_PER_DAY
from tests import events
from tests.helpers import KPIMON, free_port, wait_until
from tests.kafka_io import produce
from tests.pipeline import events_total
from tests.workers import running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def click(n: int, ts_ms: int) -> bytes:
    return events.message(events.click(user_id=f"u{n % 5}", ts=ts_ms, event_id=f"e{n}", type="view"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")}
    result = subprocess.run(
        [KPIMON, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


def test_replay_warns_worker_logs_and_dead_letters_shows(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    old, recent = now - 20 * MS_PER_DAY, now - 60_000
    lines = [click(i, old) for i in range(6)] + [click(10 + i, recent) for i in range(4)]
    lines += [b"not json at all", b'{"event_id": "x", "user_id": "u1", "ts": "yesterday", "type": "v"}']
    clicks = tmp_path / "clicks.jsonl"
    clicks.write_bytes(b"\n".join(lines) + b"\n")
    where = ["--broker", kafka_bootstrap, "--topic-prefix", unique_prefix]
    env = {"KPIMON_REJECTION_LOG_INTERVAL": "1"}
    with running_worker(kafka_bootstrap, unique_prefix, free_port(), tmp_path, env=env) as worker:
        replayed = run("replay", *where, "--clicks", str(clicks), "--quiet")
        assert "clicks.jsonl: 10 events from" in replayed.stderr
        assert "6 of 10 events (60 %) in clicks.jsonl are older than" in replayed.stderr
        assert "--max-lateness-days 21" in replayed.stderr

        asyncio.run(
            wait_until(lambda: events_total(worker) >= len(lines), timeout=60, message="all events processed")
        )
        assert events_total(worker, "rejected") == 8

        def logged() -> bool:
            return "rejected 8 messages to the dead-letter topic" in worker.log_path.read_text()

        asyncio.run(wait_until(logged, timeout=30, message="the rejection summary in the worker's log"))
        log = worker.log_path.read_text()
        assert "too_late 6 (" + unique_prefix + "clicks)" in log
        assert "invalid_json 1" in log and "invalid_timestamp 1" in log
        assert "--max-lateness-days" in log

        shown = run("dead-letters", *where).stdout.splitlines()
        assert len(shown) == 8
        assert sum("too_late" in line for line in shown) == 6
        assert any("invalid_json" in line and line.endswith("not json at all") for line in shown)
        assert all(f"{unique_prefix}clicks[" in line for line in shown)

        late = run("dead-letters", *where, "--reason", "too_late", "--json").stdout.splitlines()
        documents = [json.loads(line) for line in late]
        assert len(documents) == 6
        assert {d["reason"] for d in documents} == {"too_late"}
        assert sorted(json.loads(d["value"])["event_id"] for d in documents) == [f"e{i}" for i in range(6)]
        assert len(run("dead-letters", *where, "--last", "2").stdout.splitlines()) == 2
        everything = run("dead-letters", *where, "--from-beginning", "--reason", "invalid_json").stdout
        assert len(everything.splitlines()) == 1

        follower = subprocess.Popen(
            [KPIMON, "dead-letters", *where, "--last", "0", "--follow", "--reason", "key_mismatch"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(3)  # let it reach the end before the new dead letters exist
            asyncio.run(
                produce(
                    kafka_bootstrap,
                    f"{unique_prefix}clicks",
                    [(b"someone-else", click(99, recent)), (None, b"[1, 2]")],
                )
            )
            assert follower.stdout is not None
            line = follower.stdout.readline()  # blocks until the worker dead-letters it
            assert "key_mismatch" in line and "e99" in line
        finally:
            follower.terminate()
            follower.wait(10)
