"""The operator's series of /metrics on a real worker and broker (issue #20): process and build info,
rebalances, produce errors (a real refusal by the broker), and lag from the assignment on."""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from pathlib import Path

import pytest

from kpimon.agents.config.topics import TopicSpec, ensure_topics
from tests.helpers import free_port, wait_until
from tests.kafka_io import produce
from tests.workers import running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_process_build_rebalance_lag_and_produce_error_series(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    dead_letters = f"{unique_prefix}kpimon-dead-letters"
    # The broker refuses dead letters above 2,000 bytes, while the worker accepts messages up to 100 kB:
    # a rejected 5,000-byte message then cannot be dead-lettered, a real produce error.
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(dead_letters, 4, {"max.message.bytes": "2000"})]))
    env = {"KPIMON_MAX_MESSAGE_BYTES": "100000"}
    with running_worker(kafka_bootstrap, unique_prefix, free_port(), tmp_path, env=env) as worker:

        def lag_of_every_assigned_partition() -> bool:
            samples = worker.samples()
            assigned = {labels for name, labels in samples if name == "kpimon_assigned_partitions"}
            lagging = {labels for name, labels in samples if name == "kpimon_consumer_lag_messages"}
            return len(assigned) == 16 and lagging == assigned

        # No message has been sent yet: the lag series exist from the assignment on.
        asyncio.run(
            wait_until(lag_of_every_assigned_partition, timeout=30, message="lag of all 16 partitions")
        )
        samples = worker.samples()
        names = {name for name, _ in samples}
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names
        assert "python_info" in names
        assert samples[("kpimon_rebalances_total", frozenset())] >= 1
        build = [labels for name, labels in samples if name == "kpimon_build_info"]
        assert len(build) == 1 and dict(build[0])["version"] == version("kpimon")
        errors = {
            dict(labels)["topic"]: value
            for (name, labels), value in samples.items()
            if name == "kpimon_produce_errors_total"
        }
        assert errors == {
            dead_letters: 0,
            f"{unique_prefix}kpimon-rekeyed": 0,
            f"{unique_prefix}kpimon-partials": 0,
            f"{unique_prefix}kpimon-kpis": 0,
            f"{unique_prefix}app-user-state-changelog": 0,
            f"{unique_prefix}app-aggregates-changelog": 0,
        }

        asyncio.run(produce(kafka_bootstrap, f"{unique_prefix}clicks", [(None, b"x" * 5000)]))

        def refused() -> bool:
            key = ("kpimon_produce_errors_total", frozenset({("topic", dead_letters)}))
            return worker.samples().get(key) == 1

        asyncio.run(wait_until(refused, timeout=60, message="the refused dead letter counted"))
        assert worker.proc.poll() is None  # a refused write does not stop the worker
