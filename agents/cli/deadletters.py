"""`kpimon dead-letters`: show the rejected messages of the dead-letter topic: reason, source, excerpt.

A dead letter keeps the original bytes as its value and says why and where in `kpimon-*` headers
(agents/pipeline/deadletters.py); this command reads them back for a person (or, with --json, a script).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, TopicPartition

from kpimon.agents.cli.errors import run_reading
from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.options import broker_option, kafka_options, topic_prefix_option
from kpimon.agents.config.preflight import check_access
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import topic_partitions
from kpimon.agents.pipeline.deadletters import REDACTED_HEADER
from kpimon.streams.validation import Reason

#: Dead letters read per partition from its end when showing the most recent ones: enough that a filter
#: by reason still finds --last of them in all but very lopsided topics, bounded so a long topic is not
#: read in full (--from-beginning reads everything).
SCAN_PER_PARTITION = 10_000


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as shown: why it was rejected, where it came from, and its bytes."""

    timestamp_ms: int
    partition: int
    offset: int
    reason: str
    detail: str
    field: str | None
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    key: str | None
    value: bytes | None
    redacted: str | None

    @property
    def source(self) -> str:
        """`topic[partition]@offset` of the rejected message."""
        where = self.source_topic
        if self.source_partition is not None:
            where += f"[{self.source_partition}]"
        if self.source_offset is not None:
            where += f"@{self.source_offset}"
        return where


def _int_or_none(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def parse(
    timestamp_ms: int,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]],
) -> DeadLetter:
    """A dead-letter message read from Kafka (missing headers show as `?`, never raise)."""
    found = dict(headers)

    def text(name: str) -> str | None:
        raw = found.get(name)
        return raw.decode("utf-8", "replace") if raw is not None else None

    return DeadLetter(
        timestamp_ms=timestamp_ms,
        partition=partition,
        offset=offset,
        reason=text("kpimon-reason") or "?",
        detail=text("kpimon-detail") or "",
        field=text("kpimon-field"),
        source_topic=text("kpimon-source-topic") or "?",
        source_partition=_int_or_none(found.get("kpimon-source-partition")),
        source_offset=_int_or_none(found.get("kpimon-source-offset")),
        key=key.decode("utf-8", "replace") if key is not None else None,
        value=value,
        redacted=text(REDACTED_HEADER),
    )


def excerpt(value: bytes | None, limit: int = 80) -> str:
    """The start of a message value on one line: control characters and undecodable bytes escaped."""
    if value is None:
        return "(null value)"
    if not value:
        return "(empty)"
    text = value[: limit * 4].decode("utf-8", "backslashreplace")
    # repr-style escapes keep the line one line and show what a terminal would hide.
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    if len(shown) > limit or len(value) > limit * 4:
        return shown[: limit - 1] + "…"
    return shown


def format_line(letter: DeadLetter, limit: int = 80) -> str:
    """One line per dead letter: time, reason, source, detail, excerpt of the value."""
    when = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    value = excerpt(letter.value, limit)
    if letter.redacted:
        value = f"(redacted: {letter.redacted}) {value}"
    detail = letter.detail + (f" [{letter.field}]" if letter.field else "")
    return f"{when}  {letter.reason:<18}  {letter.source:<24}  {detail}  |  {value}"


def as_json(letter: DeadLetter) -> str:
    """The dead letter as one JSON object (the value as text, undecodable bytes escaped)."""
    document: dict[str, Any] = asdict(letter)
    document["value"] = letter.value.decode("utf-8", "backslashreplace") if letter.value is not None else None
    document["source"] = letter.source
    return json.dumps(document, ensure_ascii=False)


def matches(letter: DeadLetter, reasons: Sequence[str]) -> bool:
    """Whether the dead letter has one of `reasons` (all match when none are given)."""
    return not reasons or letter.reason in reasons


async def read_dead_letters(
    bootstrap: str,
    topic: str,
    emit: Callable[[DeadLetter], None],
    reasons: Sequence[str] = (),
    last: int | None = 20,
    follow: bool = False,
    options: dict[str, Any] | None = None,
) -> int:
    """Emit the matching dead letters, oldest first: all (`last` None) or the `last` most recent ones.

    With `follow`, keep emitting new ones as they arrive, until cancelled. Returns the count emitted.
    """
    partitions = await topic_partitions(bootstrap, topic, options)
    if not partitions:
        raise click.ClickException(f"topic {topic} does not exist on {bootstrap} (no worker has run yet?)")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **(options or {})
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        for tp in tps:
            start = begin[tp] if last is None else max(begin[tp], end[tp] - max(last, SCAN_PER_PARTITION))
            consumer.seek(tp, start)
        backlog: list[DeadLetter] = []
        remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < end[tp]:
                        letter = parse(
                            record.timestamp,
                            tp.partition,
                            record.offset,
                            record.key,
                            record.value,
                            record.headers,
                        )
                        if matches(letter, reasons):
                            backlog.append(letter)
            # The position, not the last offset seen: offsets can have gaps (compaction, transactions).
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
        backlog.sort(key=lambda letter: (letter.timestamp_ms, letter.partition, letter.offset))
        shown = backlog if last is None else backlog[-last:] if last > 0 else []
        for letter in shown:
            emit(letter)
        count = len(shown)
        while follow:
            batches = await consumer.getmany(timeout_ms=1000)
            arrived = [
                parse(record.timestamp, tp.partition, record.offset, record.key, record.value, record.headers)
                for tp, records in batches.items()
                for record in records
            ]
            arrived.sort(key=lambda letter: (letter.timestamp_ms, letter.partition, letter.offset))
            for letter in arrived:
                if matches(letter, reasons):
                    emit(letter)
                    count += 1
        return count
    finally:
        await consumer.stop()


@click.command("dead-letters")
@broker_option
@topic_prefix_option
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    type=click.Choice([reason.value for reason in Reason]),
    help="Only dead letters with this reason (repeatable).  [default: all]",
)
@click.option(
    "--last", type=click.IntRange(min=0), default=20, help="Show this many of the most recent ones."
)
@click.option("--from-beginning", is_flag=True, help="Show all of them, from the oldest (instead of --last).")
@click.option(
    "--follow", "-f", is_flag=True, help="Then keep showing new ones as they arrive (Ctrl-C stops)."
)
@click.option("--json", "as_json_lines", is_flag=True, help="One JSON object per dead letter, every field.")
@click.option("--width", type=click.IntRange(min=10), default=80, help="Characters of the value shown.")
@kafka_options
def dead_letters(
    broker: str | None,
    topic_prefix: str | None,
    reasons: tuple[str, ...],
    last: int,
    from_beginning: bool,
    follow: bool,
    as_json_lines: bool,
    width: int,
    kafka: dict[str, Any],
) -> None:
    """Show the messages the worker rejected: when, reason, source topic[partition]@offset, detail, value.

    \b
    kpimon dead-letters                         # the 20 most recent
    kpimon dead-letters --reason too_late -f    # too_late ones, then follow
    kpimon dead-letters --from-beginning --json # all, as JSON lines

    The reasons are listed in docs/events.md. Without --from-beginning, the most recent are looked for among
    the last 10,000 dead letters of each partition.
    """
    try:
        settings = Settings.from_env(broker=broker, topic_prefix=topic_prefix, **kafka)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    def emit(letter: DeadLetter) -> None:
        line = as_json(letter) if as_json_lines else format_line(letter, width)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()  # --follow is read live, often through a pipe

    async def run() -> int:
        await check_access(settings)
        return await read_dead_letters(
            settings.broker,
            settings.dead_letters,
            emit,
            reasons=reasons,
            last=None if from_beginning else last,
            follow=follow,
            options=aiokafka_options(settings),
        )

    try:
        count = run_reading(run(), settings.dead_letters, settings.broker)
    except KeyboardInterrupt:
        return
    if not as_json_lines:
        click.echo(f"{count} dead letters", err=True)
