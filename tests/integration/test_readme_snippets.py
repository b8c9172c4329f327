"""The README's "Send your own events" and "Read the KPIs from your service" snippets run as printed,
against a real broker (only the bootstrap address is replaced)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kafka_io import produce, read_all

pytestmark = [pytest.mark.kafka]

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def snippet(marker: str, bootstrap: str) -> str:
    (code,) = [block for block in python_blocks() if marker in block]
    assert "127.0.0.1:9092" in code
    return code.replace("127.0.0.1:9092", bootstrap)


@pytest.fixture
def fresh_broker_topics(kafka_bootstrap: str) -> str:
    """The snippets use the default topic names: only on the tests' own broker, never an external one."""
    if os.environ.get("KPIMON_TEST_BOOTSTRAP"):
        pytest.skip("writes to the unprefixed topics clicks, surveys and kpimon-kpis")
    return kafka_bootstrap


def test_send_your_own_events_snippet(fresh_broker_topics: str, tmp_path: Path) -> None:
    script = tmp_path / "send.py"
    script.write_text(snippet("AIOKafkaProducer", fresh_broker_topics))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    clicks = asyncio.run(read_all(fresh_broker_topics, "clicks", 1))
    assert clicks[-1].key == b"u42"
    assert json.loads(clicks[-1].value)["type"] == "page_view"
    surveys = asyncio.run(read_all(fresh_broker_topics, "surveys", 1))
    assert json.loads(surveys[-1].value)["score"] == 9


def test_read_the_kpis_snippet_keeps_following(fresh_broker_topics: str, tmp_path: Path) -> None:
    def record(day: str, value: float) -> tuple[bytes, bytes]:
        body = {
            "kpi": "nps", "window": "7d", "dimension": "all", "segment": "all", "day": day,
            "value": value, "numerator": 3, "denominator": 10, "breach": False,
        }  # fmt: skip
        return f"nps/7d/all/all/{day}".encode(), json.dumps(body).encode()

    asyncio.run(produce(fresh_broker_topics, "kpimon-kpis", [record("2026-12-01", 30.0)]))
    script = tmp_path / "read.py"
    script.write_text(snippet("AIOKafkaConsumer", fresh_broker_topics))
    reader = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().split() == ["2026-12-01", "7d", "30.0", "10", "False"]
        time.sleep(1)
        asyncio.run(produce(fresh_broker_topics, "kpimon-kpis", [record("2026-12-02", -5.0)]))
        assert reader.stdout.readline().split() == ["2026-12-02", "7d", "-5.0", "10", "False"]
    finally:
        reader.terminate()
        reader.wait(10)
