"""`kpimon reference`: every KPI in batch from the files `kpimon replay` sends, as output-topic JSON lines."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click

from kpimon.agents.config.settings import Settings
from kpimon.reference.compute import run_reference, wall_clock_ms
from kpimon.reference.load import DEFAULT_MAX_SEGMENT_VALUES
from kpimon.streams.events import epoch_ms
from kpimon.streams.output import encode

_EPOCH_MS = re.compile(r"-?\d+")


def parse_instant(text: str) -> int:
    """Epoch milliseconds of `text`: integer epoch milliseconds, or RFC 3339 with an offset (or `Z`)."""
    text = text.strip()
    if _EPOCH_MS.fullmatch(text):
        return int(text)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not RFC 3339 or epoch milliseconds: {text!r}") from None
    if instant.tzinfo is None:
        raise ValueError(f"an RFC 3339 time needs an offset (e.g. Z or +00:00): {text!r}")
    return epoch_ms(instant)


class Instant(click.ParamType):
    """A click parameter holding an instant as epoch milliseconds."""

    name = "TS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """Epoch milliseconds of an RFC 3339 or epoch-milliseconds option value."""
        if isinstance(value, int):
            return value
        try:
            return parse_instant(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@click.command("reference")
@click.option("--clicks", type=_FILE, required=True, help="The clicks messages, one JSON value per line.")
@click.option("--surveys", type=_FILE, required=True, help="The surveys messages, one JSON value per line.")
@click.option(
    "--now",
    "now_ms",
    type=Instant(),
    default=None,
    help="Validation wall clock, RFC 3339 or epoch ms (default: the wall clock).",
)
@click.option(
    "--max-lateness-days",
    type=click.IntRange(min=0),
    default=None,
    help="Reject events whose day is older than the wall-clock day minus N (default 7, or "
    "KPIMON_MAX_LATENESS_DAYS).",
)
@click.option(
    "--passive-type",
    "passive_types",
    multiple=True,
    help="A click type that does not mark its user active (repeatable; default: KPIMON_PASSIVE_TYPES, "
    "comma-separated, else none).",
)
@click.option(
    "--max-segment-values",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_SEGMENT_VALUES,
    show_default=True,
    help="Distinct values kept per segment dimension; later ones fold into 'other'.",
)
@click.option(
    "--segment-personal-pattern",
    default=None,
    help="Regular expression of segment values that are personal data: they fold into 'other', as e-mail "
    "addresses always do (default: KPIMON_SEGMENT_PERSONAL_PATTERN, else none).",
)
@click.option(
    "--out",
    type=click.File("wb"),
    default="-",
    show_default=True,
    help="Where to write the records (JSON lines sorted by key; - is stdout).",
)
def reference(
    clicks: Path,
    surveys: Path,
    now_ms: int | None,
    max_lateness_days: int | None,
    passive_types: tuple[str, ...],
    max_segment_values: int,
    segment_personal_pattern: str | None,
    out: IO[bytes],
) -> None:
    """Compute every KPI in batch with DuckDB SQL: the truth the stream is held to.

    Each line is validated as the worker validates a message (invalid lines are counted and skipped),
    then the KPIs of every segment and day are computed from the accepted events: engagement (active
    users, stickiness, lifecycle, churn) from the clicks, satisfaction (NPS, CSAT, shown and dismissed
    counts, response rates; windows 7d and 30d) from the de-duplicated surveys, and the 95 % interval
    (ci_low, ci_high) of nps, csat, churn_rate and the response rates. The latest record per output key
    is written as one JSON line, sorted by key. A summary goes to stderr.
    """
    try:
        settings = Settings.from_env(
            max_lateness_days=max_lateness_days,
            passive_types=",".join(passive_types) or None,
            segment_personal_pattern=segment_personal_pattern,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    result = run_reference(
        clicks,
        surveys,
        wall_clock_ms() if now_ms is None else now_ms,
        settings.policy,
        passive_types=settings.passive,
        max_segment_values=max_segment_values,
        personal_pattern=settings.segment_personal_pattern,
    )
    for record in result.records:
        out.write(encode(record) + b"\n")
    out.flush()
    click.echo(result.stats.summary(), err=True)
    click.echo(f"current day: {result.current_day or 'none'}; {len(result.records)} records", err=True)
