"""Run the KPI SQL over the loaded events and turn its rows into output records.

The KPI files are the numbered `NN_name.sql` files of reference/sql/, run in name order on one DuckDB
connection: `10_prepare.sql` builds what every KPI shares (de-duplicated `surveys`, the current day, first
days per user, the segments of every event) and creates `kpi_records`; each later file
(`20_engagement.sql`, `30_satisfaction.sql`) inserts its KPIs into `kpi_records`, and `40_uncertainty.sql`,
last, sets the 95 % interval (ci_low, ci_high) of every ratio that has one. A new KPI family is a new
numbered file before it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import duckdb

from kpimon.reference.load import DEFAULT_MAX_SEGMENT_VALUES, LoadStats, load, sql_text
from kpimon.streams.output import KpiRecord, day_name
from kpimon.streams.validation import Policy

_KPI_FILE = re.compile(r"^\d+_[a-z0-9_]+\.sql$")


def kpi_scripts() -> list[str]:
    """The names of the numbered KPI files, in the order they run."""
    folder = resources.files("kpimon.reference").joinpath("sql")
    return sorted(entry.name for entry in folder.iterdir() if _KPI_FILE.match(entry.name))


def rfc3339(ms: int) -> str:
    """RFC 3339 UTC text of an epoch-milliseconds instant, e.g. `2026-11-24T03:07:00.123Z`."""
    instant = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wall_clock_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(datetime.now(UTC).timestamp() * 1000)


def compute(con: duckdb.DuckDBPyConnection, updated_at: str) -> list[KpiRecord]:
    """Run every KPI file over the loaded tables; the records sorted by output key."""
    for name in kpi_scripts():
        con.execute(sql_text(name))
    rows = con.execute(
        'SELECT kpi, "window", dimension, segment, day, count_value, ratio_value, numerator, denominator, '
        "ci_low, ci_high FROM kpi_records"
    ).fetchall()
    records = [
        KpiRecord(
            kpi=kpi,
            window=window,
            dimension=dimension,
            segment=segment,
            day=day_name(day),
            value=count if count is not None else ratio,
            numerator=numerator,
            denominator=denominator,
            updated_at=updated_at,
            ci_low=low,
            ci_high=high,
        )
        for kpi, window, dimension, segment, day, count, ratio, numerator, denominator, low, high in rows
    ]
    records.sort(key=lambda record: record.key)
    return records


@dataclass(frozen=True)
class Result:
    """The records of one reference run and what loading saw."""

    records: list[KpiRecord]
    stats: LoadStats
    current_day: str | None


def run_reference(
    clicks: Path,
    surveys: Path,
    now_ms: int,
    policy: Policy,
    *,
    passive_types: Iterable[str] = (),
    max_segment_values: int = DEFAULT_MAX_SEGMENT_VALUES,
    personal_pattern: str = "",
    updated_at: str | None = None,
) -> Result:
    """Every KPI from the two input files, validated with wall clock `now_ms` under `policy`.

    `updated_at` (every record's publication time) defaults to the wall clock once the events are loaded.
    """
    con = duckdb.connect(":memory:")
    try:
        stats = load(
            con, clicks, surveys, now_ms, policy, passive_types, max_segment_values, personal_pattern
        )
        records = compute(con, updated_at or rfc3339(wall_clock_ms()))
        row = con.execute("SELECT day FROM current_day").fetchone()
    finally:
        con.close()
    current = None if row is None or row[0] is None else day_name(row[0])
    return Result(records, stats, current)
