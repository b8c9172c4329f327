"""`kpimon simulate --broker` and live mode against a real broker: what is sent is what was generated."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from click.testing import CliRunner

from kpimon.agents.cli.replay import send_files
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import key_of
from kpimon.simulator.cli import simulate
from kpimon.simulator.live import live_traffic
from kpimon.simulator.model import Counts, LiveModel, Scenario
from kpimon.streams.validation import Accepted, Policy, Rejected, validate
from tests.helpers import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

NOW = "2026-11-24T12:00:00Z"


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[Any]:
    """Every record of `topic` (all partitions, from the beginning), once `expected` have arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, f"no topic {topic}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        end = await consumer.end_offsets(partitions)
        assert sum(end.values()) == len(records), f"{topic}: {sum(end.values())} records, read {len(records)}"
        return records
    finally:
        await consumer.stop()


def test_broker_mode_sends_exactly_the_file_lines_keyed_as_replay(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    args = ["--users", "120", "--days", "5", "--seed", "4", "--now", NOW, "--invalid-fraction", "0.05"]
    runner = CliRunner()
    written = runner.invoke(simulate, [*args, "--out-dir", str(tmp_path)])
    assert written.exit_code == 0, written.output
    sent = runner.invoke(simulate, [*args, "--broker", kafka_bootstrap, "--topic-prefix", unique_prefix])
    assert sent.exit_code == 0, sent.output
    assert sent.stderr.split(" (")[0] == written.stderr.split(" (")[0]  # the same counts
    # The same files through `kpimon replay`, to compare partitions.
    replayed = Settings.from_env({}, broker=kafka_bootstrap, topic_prefix=f"{unique_prefix}replay-")
    files = [(replayed.clicks, tmp_path / "clicks.jsonl"), (replayed.surveys, tmp_path / "surveys.jsonl")]
    asyncio.run(send_files(replayed, files, show_progress=False))
    for kind in ("clicks", "surveys"):
        lines = (tmp_path / f"{kind}.jsonl").read_bytes().splitlines()
        records = asyncio.run(read_topic(kafka_bootstrap, f"{unique_prefix}{kind}", len(lines)))
        assert Counter((r.key, r.value) for r in records) == Counter((key_of(v), v) for v in lines)
        via_replay = asyncio.run(read_topic(kafka_bootstrap, f"{unique_prefix}replay-{kind}", len(lines)))
        partition_of = {r.key: r.partition for r in via_replay if r.key is not None}
        assert all(r.partition == partition_of[r.key] for r in records if r.key is not None)
        # A user's messages share a partition, in the order of the file.
        by_key: dict[bytes, list[bytes]] = defaultdict(list)
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            if record.key is not None:
                by_key[record.key].append(record.value)
        for key, values in by_key.items():
            assert values == [v for v in lines if key_of(v) == key]


async def test_live_mode_sends_current_valid_traffic_and_flushes_on_stop(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    settings = Settings.from_env({}, broker=kafka_bootstrap, topic_prefix=unique_prefix)
    start = time.time_ns() // 1_000_000
    model = LiveModel(
        200,
        9,
        start,
        200.0,
        invalid_fraction=0.05,
        scenarios=[Scenario.parse("nps-drop:ios")],
        scenario_after_s=1,
    )
    counts = Counts()
    stop = asyncio.Event()
    task = asyncio.create_task(live_traffic(settings, model, 200.0, stop, counts))
    await wait_until(
        lambda: task.done() or (model.scenario_started and counts.clicks > 300 and counts.invalid > 0),
        timeout=60,
        message="the scenario started and 300 clicks, some invalid, sent",
    )
    stop.set()
    sent = await task
    assert model.scenario_started
    assert sent == counts.clicks + counts.surveys
    assert counts.clicks > 300 and counts.invalid > 0
    now = time.time_ns() // 1_000_000
    kinds: tuple[tuple[Literal["clicks", "surveys"], int], ...] = (
        ("clicks", counts.clicks),
        ("surveys", counts.surveys),
    )
    for kind, expected in kinds:
        records = await read_topic(kafka_bootstrap, f"{unique_prefix}{kind}", expected)
        assert len(records) == expected  # everything acknowledged before live_traffic returned
        verdicts = [validate(kind, r.key, r.value, now, Policy()) for r in records]
        rejected = [v for v in verdicts if isinstance(v, Rejected)]
        assert all(
            isinstance(v, Accepted) and start - 4 * 86_400_000 <= v.ts_ms <= now
            for v in verdicts
            if not isinstance(v, Rejected)
        )
        if kind == "clicks":
            assert 0 < len(rejected) < 0.15 * len(records)
