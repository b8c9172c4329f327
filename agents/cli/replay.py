"""`kpimon replay`: send files of recorded messages to the input topics, one line one message, as-is."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec
from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.options import broker_option, kafka_options, setting, topic_prefix_option
from kpimon.agents.config.preflight import KafkaAccessError, check_access
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import DURABLE_PRODUCER, TopicSpec, ensure_topics, key_of
from kpimon.streams.events import Timestamp, day_of, epoch_ms
from kpimon.streams.output import day_name

# Unacknowledged sends allowed in flight; bounds memory while keeping the producer's batches full.
_WINDOW = 20_000


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of `path` without their line terminator, byte for byte (no decoding, no stripping)."""
    with path.open("rb") as handle:
        for line in handle:
            yield line[:-1] if line.endswith(b"\n") else line


class _Stamped(msgspec.Struct):
    """Only the event time of a message (every other field is ignored)."""

    ts: Timestamp


_STAMP = msgspec.json.Decoder(_Stamped)


def event_days(path: Path) -> tuple[int, Counter[int]]:
    """(line count, events per event day) of a file; lines without a readable `ts` count only as lines."""
    lines, days = 0, Counter[int]()
    for line in read_lines(path):
        lines += 1
        try:
            stamp = _STAMP.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError, ValueError):
            continue
        days[day_of(epoch_ms(stamp.ts))] += 1
    return lines, days


@dataclass(frozen=True)
class Lateness:
    """How much of a file the worker's lateness bound would drop, were it replayed today."""

    events: int
    too_late: int
    oldest: int | None
    newest: int | None
    #: The smallest --max-lateness-days that keeps every event, with a day of margin for a replay that
    #: runs past midnight.
    needed_days: int


def lateness(days: Counter[int], today: int, max_lateness_days: int) -> Lateness:
    """The worker's rule (streams/validation.py): an event whose day is before today - bound is too late."""
    bound = today - max_lateness_days
    oldest = min(days) if days else None
    return Lateness(
        events=sum(days.values()),
        too_late=sum(count for day, count in days.items() if day < bound),
        oldest=oldest,
        newest=max(days) if days else None,
        needed_days=max(max_lateness_days, today - oldest + 1) if oldest is not None else max_lateness_days,
    )


def describe(name: str, found: Lateness, max_lateness_days: int) -> tuple[str, str | None]:
    """(the time-range line, the warning or None) that `replay` prints for one file."""
    if found.oldest is None or found.newest is None:
        return f"{name}: no event with a readable ts", None
    summary = f"{name}: {found.events:,} events from {day_name(found.oldest)} to {day_name(found.newest)}"
    if not found.too_late:
        return summary, None
    share = 100 * found.too_late / found.events
    warning = (
        f"warning: {found.too_late:,} of {found.events:,} events ({share:.0f} %) in {name} are older than "
        f"the worker's lateness bound ({max_lateness_days} days): the worker dead-letters them as too_late. "
        f"To keep them, run the worker with --max-lateness-days {found.needed_days} "
        f"(or KPIMON_MAX_LATENESS_DAYS={found.needed_days}) before replaying."
    )
    return summary, warning


async def send_files(
    settings: Settings, files: list[tuple[str, Path]], show_progress: bool = True, total: int | None = None
) -> int:
    """Send every line of each (topic, file) pair; return the count once all are acknowledged.

    `total`: the files' line count when already known (the progress bar's end).
    """
    await check_access(settings)
    security = aiokafka_options(settings)
    specs = [TopicSpec(t, settings.partitions) for t, _ in files]
    await ensure_topics(
        settings.broker,
        specs,
        options=security,
        replication_factor=settings.replication_factor,
        min_insync_replicas=settings.min_insync_replicas,
    )
    total = sum(sum(1 for _ in read_lines(p)) for _, p in files) if total is None else total
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker,
        **security,
        **DURABLE_PRODUCER,
        linger_ms=20,
        max_batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    sent = 0
    try:
        with Progress(
            TextColumn("[bold]replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not show_progress,
        ) as progress:
            task = progress.add_task("replay", total=total)
            pending: list[asyncio.Future[object]] = []
            for topic, path in files:
                for line in read_lines(path):
                    pending.append(await producer.send(topic, value=line, key=key_of(line)))
                    if len(pending) >= _WINDOW:
                        await asyncio.gather(*pending)
                        sent += len(pending)
                        progress.update(task, completed=sent)
                        pending = []
            await asyncio.gather(*pending)
            sent += len(pending)
            progress.update(task, completed=sent)
    finally:
        await producer.stop()
    return sent


@click.command()
@click.option(
    "--clicks",
    "clicks_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of click messages, one per line.",
)
@click.option(
    "--surveys",
    "surveys_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of survey messages, one per line.",
)
@broker_option
@topic_prefix_option
@setting("partitions", "Partitions of topics created when missing.", type=int)
@setting(
    "max_lateness_days",
    "The worker's lateness bound, to warn about events it would drop (this command sends them all).",
    type=int,
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@kafka_options
def replay(
    clicks_file: Path | None,
    surveys_file: Path | None,
    broker: str | None,
    topic_prefix: str | None,
    partitions: int | None,
    max_lateness_days: int | None,
    quiet: bool,
    kafka: dict[str, Any],
) -> None:
    """Send recorded messages to the clicks and surveys topics and wait until Kafka acknowledged all.

    Each line is one message value, sent byte for byte (invalid lines too: the worker dead-letters them).
    The key is the line's user_id when the line is a JSON object with one, so a user's events share a
    partition; other lines are sent without a key.

    Before sending, it prints each file's event days and warns when events are older than the worker's
    lateness bound (--max-lateness-days, KPIMON_MAX_LATENESS_DAYS or the config file; the worker must run
    with the same value), since the worker would reject those as too_late.
    """
    if clicks_file is None and surveys_file is None:
        raise click.UsageError("give --clicks FILE, --surveys FILE or both")
    try:
        settings = Settings.from_env(
            broker=broker,
            topic_prefix=topic_prefix,
            partitions=partitions,
            max_lateness_days=max_lateness_days,
            **kafka,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    files: list[tuple[str, Path]] = []
    if clicks_file is not None:
        files.append((settings.clicks, clicks_file))
    if surveys_file is not None:
        files.append((settings.surveys, surveys_file))
    today = day_of(int(time.time() * 1000))
    total = 0
    for _, path in files:
        lines, days = event_days(path)
        total += lines
        summary, warning = describe(
            path.name, lateness(days, today, settings.max_lateness_days), settings.max_lateness_days
        )
        click.echo(summary, err=True)
        if warning is not None:
            click.secho(warning, err=True, fg="yellow")
    try:
        count = asyncio.run(send_files(settings, files, show_progress=not quiet, total=total))
    except KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # a broker problem: one clear line, not a traceback
        raise click.ClickException(f"replay to {settings.broker} failed: {exc!r}") from None
    click.echo(f"sent {count} messages to {', '.join(t for t, _ in files)}", err=True)
