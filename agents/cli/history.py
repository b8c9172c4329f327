"""`kpimon history`: the KPI history in kpimon-kpis as OpenMetrics, to backfill Prometheus with promtool."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kpimon.agents.cli.errors import run_reading
from kpimon.agents.cli.kpis import read_kpis
from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.options import kafka_options
from kpimon.agents.config.preflight import check_access
from kpimon.agents.config.settings import Settings
from kpimon.agents.exporter.history import Series, by_day, history_series, openmetrics_lines, sample_count
from kpimon.streams.events import day_of
from kpimon.streams.output import KpiRecord, day_name, day_number


def _day(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return day_number(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a day YYYY-MM-DD", param_hint=option) from None


def write_series(series: Series, step: int, handle: TextIO) -> None:
    """The OpenMetrics text of `series` to `handle`."""
    for line in openmetrics_lines(series, step):
        handle.write(line + "\n")


def write_days(series: Series, step: int, directory: Path) -> list[Path]:
    """One OpenMetrics file per day, `YYYY-MM-DD.om`, in `directory`; their paths, oldest first."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for day, one_day in sorted(by_day(series).items()):
        path = directory / f"{day_name(day)}.om"
        with path.open("w", encoding="utf-8") as handle:
            write_series(one_day, step, handle)
        paths.append(path)
    return paths


#: promtool's largest block: it cuts blocks of 2 hours by default and reads its whole input file once per
#: block, so a day's file was read 12 times and made 12 blocks. Up to a day, it picks 18-hour blocks (its
#: ranges are 2 h times powers of 3): 2 reads and 2 blocks a day, the same samples, about 4 times faster
#: (29 days of tests/integration/test_history_prometheus.py: 62 s -> 16 s at load 4.5 on 2 cores).
MAX_BLOCK_DURATION = "--max-block-duration=24h"


def run_promtool(paths: list[Path], data_dir: Path, promtool: str, show_progress: bool) -> None:
    """`promtool tsdb create-blocks-from openmetrics` for each file, into Prometheus's `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    block_option = [MAX_BLOCK_DURATION]
    with Progress(
        TextColumn("[bold]promtool"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("promtool", total=len(paths))
        for path in paths:
            while True:
                command = [
                    promtool,
                    "tsdb",
                    "create-blocks-from",
                    "openmetrics",
                    "--quiet",
                    *block_option,
                    str(path),
                    str(data_dir),
                ]
                result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
                output = (result.stdout + result.stderr).strip()
                # A promtool without this (hidden) option refuses it before writing anything: its
                # default 2-hour blocks then, as before the option was passed.
                if result.returncode != 0 and block_option and "max-block-duration" in output:
                    block_option = []
                    continue
                break
            if result.returncode != 0:
                raise click.ClickException(f"promtool failed on {path.name}: {output[-2000:]}")
            progress.advance(task)


@click.command()
@click.option(
    "--broker", envvar="KPIMON_BROKER", help="Kafka bootstrap HOST:PORT.  [default: 127.0.0.1:9092]"
)
@click.option(
    "--topic-prefix", envvar="KPIMON_TOPIC_PREFIX", help="Prefix of every topic name.  [default: none]"
)
@click.option(
    "--load-into",
    type=click.Path(file_okay=False, path_type=Path),
    help="Prometheus's data directory (--storage.tsdb.path): write the blocks there with promtool.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one OpenMetrics file per day here, for promtool (the fastest to load).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write everything as one OpenMetrics file (`-`: stdout).",
)
@click.option("--from", "first", help="First day, YYYY-MM-DD.  [default: the oldest day in kpimon-kpis]")
@click.option(
    "--to", "last", help="Last day, YYYY-MM-DD.  [default: yesterday (UTC): today is live on /metrics]"
)
@click.option(
    "--step",
    type=click.IntRange(min=1),
    default=3600,
    help="Seconds between the samples of a day (must divide 86400). A query finds a sample at most 5 min "
    "old: graphs need a step at least this long.",
)
@click.option("--promtool", "promtool_path", help="The promtool to run.  [default: promtool on PATH]")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@kafka_options
def history(
    broker: str | None,
    topic_prefix: str | None,
    load_into: Path | None,
    out_dir: Path | None,
    out: Path | None,
    first: str | None,
    last: str | None,
    step: int,
    promtool_path: str | None,
    quiet: bool,
    kafka: dict[str, Any],
) -> None:
    """Put the KPI history of kpimon-kpis into Prometheus: samples stamped with their day, as OpenMetrics.

    The series are those the dashboards read (`dimension_segment:<metric>:max`), so after a backfill
    Grafana shows the history (docs/metrics.md, "History in Prometheus"):

    \b
    kpimon history --load-into /var/lib/prometheus/metrics2    # runs promtool, one file per day
    kpimon history --out-dir history/                          # only the files, for promtool elsewhere
    """
    if sum(option is not None for option in (load_into, out_dir, out)) == 0:
        raise click.UsageError("give --load-into DATA_DIR, --out-dir DIR or --out FILE")
    if out is not None and (load_into is not None or out_dir is not None):
        raise click.UsageError("--out writes one file: not with --load-into or --out-dir")
    if 86_400 % step:
        raise click.BadParameter(f"{step} does not divide a day (86400 s) evenly", param_hint="--step")
    promtool = None
    if load_into is not None:
        promtool = promtool_path or shutil.which("promtool")
        if promtool is None:
            raise click.ClickException(
                "promtool is not on PATH: it comes with Prometheus (Debian: `apt-get install prometheus`); "
                "or write the files with --out-dir and run promtool where it is installed"
            )
    try:
        settings = Settings.from_env(broker=broker, topic_prefix=topic_prefix, **kafka)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    start_option, end_option = _day(first, "--from"), _day(last, "--to")

    async def read() -> dict[str, KpiRecord]:
        await check_access(settings)
        return await read_kpis(settings.broker, settings.kpis, options=aiokafka_options(settings))

    records = run_reading(read(), settings.kpis, settings.broker)
    days = [day_number(record.day) for record in records.values()]
    if not days:
        raise click.ClickException(f"{settings.kpis} holds no records")
    start = start_option if start_option is not None else min(days)
    end = end_option if end_option is not None else day_of(int(time.time() * 1000)) - 1
    series = history_series(records.values(), start, end)
    count = sum(len(family) for family in series.values())
    span = f"days {day_name(start)} to {day_name(end)}"
    summary = f"{sample_count(series, step):,} samples of {count:,} series, {span}"
    if out is not None:
        if str(out) == "-":
            write_series(series, step, sys.stdout)
        else:
            with out.open("w", encoding="utf-8") as handle:
                write_series(series, step, handle)
        click.echo(f"{summary}, in {out}", err=True)
        return
    with tempfile.TemporaryDirectory(prefix="kpimon-history-") as scratch:
        directory = out_dir if out_dir is not None else Path(scratch)
        paths = write_days(series, step, directory)
        if out_dir is not None:
            click.echo(f"{summary}, in {len(paths)} files in {out_dir}", err=True)
        if load_into is not None and promtool is not None:
            run_promtool(paths, load_into, promtool, show_progress=not quiet)
            click.echo(
                f"{summary}: loaded into {load_into}. Prometheus finds new blocks within a minute; its "
                "retention (--storage.tsdb.retention.time, 15d by default) must cover the oldest day.",
                err=True,
            )
