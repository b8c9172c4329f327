"""`kpimon kpis`: read the output topic to its end and write the latest record per key as JSON lines."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, TopicPartition

from kpimon.agents.cli.errors import run_reading
from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.options import broker_option, kafka_options, topic_prefix_option
from kpimon.agents.config.preflight import check_access
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import topic_partitions
from kpimon.streams import output
from kpimon.streams.output import KpiRecord


async def read_kpis(
    bootstrap: str, topic: str, timeout: float = 60, options: Mapping[str, Any] | None = None
) -> dict[str, KpiRecord]:
    """The latest record per key of the compacted KPI topic, read from the beginning to the current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **(options or {})
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(bootstrap, topic, options)
        if not partitions:
            raise click.ClickException(f"topic {topic} does not exist on {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        latest: dict[str, KpiRecord] = {}
        remaining = {tp for tp in tps if end[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while remaining:
            if loop.time() > deadline:
                raise click.ClickException(f"timed out reading {topic}")
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    key = record.key.decode() if record.key is not None else None
                    if key is None:
                        continue
                    if record.value is None:
                        latest.pop(key, None)  # a tombstone deletes the key
                    else:
                        latest[key] = output.decode(record.value)
                    if record.offset + 1 >= end[tp]:
                        remaining.discard(tp)
        return latest
    finally:
        await consumer.stop()


async def _read(settings: Settings) -> dict[str, KpiRecord]:
    await check_access(settings)
    return await read_kpis(settings.broker, settings.kpis, options=aiokafka_options(settings))


def write_records(records: dict[str, KpiRecord], out: Path | None) -> None:
    """Sorted by key, one JSON object per line, to `out` or stdout."""
    lines = b"".join(output.encode(records[key]) + b"\n" for key in sorted(records))
    if out is None:
        sys.stdout.buffer.write(lines)
    else:
        out.write_bytes(lines)


@click.command()
@broker_option
@topic_prefix_option
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Output file.  [default: stdout]"
)
@kafka_options
def kpis(broker: str | None, topic_prefix: str | None, out: Path | None, kafka: dict[str, Any]) -> None:
    """Write the current content of kpimon-kpis: the latest record per key, sorted, as JSON lines.

    The same format as `kpimon reference`, so the two can be compared.
    """
    try:
        settings = Settings.from_env(broker=broker, topic_prefix=topic_prefix, **kafka)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    records = run_reading(_read(settings), settings.kpis, settings.broker)
    write_records(records, out)
    click.echo(f"{len(records)} records", err=True)
