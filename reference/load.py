"""Read the replayed input files, validate every line as the worker does, and load the accepted events.

Python does only I/O and validation here; every KPI rule (de-duplication included) is SQL. Each line of
an input file is one Kafka message value, exactly what `kpimon replay` sends, invalid lines included.
Replay keys a message by its own user_id, so the key passed to validation is that user_id when the line
is a JSON object with a string user_id, else None (a key mismatch therefore never happens).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from kpimon.streams.events import ClickEvent, SurveyEvent, day_of, epoch_ms
from kpimon.streams.validation import Accepted, Kind, Policy, validate

#: Rows buffered in Python before they are appended to DuckDB.
BATCH_ROWS = 100_000

#: The default cap on distinct values per segment dimension (docs/definitions.md, "Activity and segments").
DEFAULT_MAX_SEGMENT_VALUES = 50


@dataclass
class LoadStats:
    """What loading saw: accepted events per topic kind, rejections per (kind, reason)."""

    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)

    def summary(self) -> str:
        """One human line per topic kind, e.g. `clicks: 10 accepted, 2 rejected (invalid_json 2)`."""
        lines = []
        for kind in ("clicks", "surveys"):
            reasons = sorted((r, n) for (k, r), n in self.rejected.items() if k == kind)
            total = sum(n for _, n in reasons)
            detail = ", ".join(f"{r} {n}" for r, n in reasons)
            rejected = f"{total} rejected" + (f" ({detail})" if detail else "")
            lines.append(f"{kind}: {self.accepted[kind]} accepted, {rejected}")
        return "\n".join(lines)


class _KeyProbe(msgspec.Struct):
    """Just the user_id of a message, whatever its type (other fields are skipped)."""

    user_id: Any = None


_probe = msgspec.json.Decoder(_KeyProbe)


def message_key(value: bytes) -> bytes | None:
    """The key `kpimon replay` sends with `value`: its string user_id as UTF-8, else None."""
    try:
        user_id = _probe.decode(value).user_id
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError, OverflowError):
        return None
    if not isinstance(user_id, str):
        return None
    try:
        return user_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape: not representable as a Kafka key
        return None


def read_messages(path: Path) -> Iterator[bytes]:
    """The message values of an input file: one per line, without the line end (LF or CRLF)."""
    with path.open("rb") as lines:
        for line in lines:
            if line.endswith(b"\r\n"):
                yield line[:-2]
            elif line.endswith(b"\n"):
                yield line[:-1]
            else:
                yield line


def sql_text(name: str) -> str:
    """The text of `reference/sql/<name>` (package data)."""
    return resources.files("kpimon.reference").joinpath("sql", name).read_text(encoding="utf-8")


def create_tables(
    con: duckdb.DuckDBPyConnection,
    passive_types: Iterable[str] = (),
    max_segment_values: int = DEFAULT_MAX_SEGMENT_VALUES,
    personal_pattern: str = "",
) -> None:
    """Create the empty input tables (sql/schema.sql) and store the run settings."""
    con.execute(sql_text("schema.sql"))
    for passive in sorted(set(passive_types)):
        con.execute("INSERT INTO passive_types VALUES (?)", [passive])
    con.execute("INSERT INTO settings VALUES (?, ?)", [max_segment_values, personal_pattern])


def _click_row(seq: int, verdict: Accepted) -> tuple[object, ...]:
    event = verdict.event
    assert isinstance(event, ClickEvent)
    return (
        seq,
        event.user_id,
        verdict.day,
        _day_or_none(event.signup_ts),
        event.platform,
        event.plan,
        event.type,
    )


def _survey_row(seq: int, verdict: Accepted) -> tuple[object, ...]:
    event = verdict.event
    assert isinstance(event, SurveyEvent)
    return (
        seq,
        event.event_id,
        event.user_id,
        verdict.ts_ms,
        verdict.day,
        event.survey,
        event.action,
        event.score,
        _day_or_none(event.signup_ts),
        event.platform,
        event.plan,
    )


def _day_or_none(ts: datetime | int | None) -> int | None:
    return None if ts is None else day_of(epoch_ms(ts))


_TABLES: dict[Kind, str] = {"clicks": "clicks", "surveys": "survey_events"}
_ROWS: dict[Kind, Callable[[int, Accepted], tuple[object, ...]]] = {
    "clicks": _click_row,
    "surveys": _survey_row,
}


def load_file(
    con: duckdb.DuckDBPyConnection,
    kind: Kind,
    path: Path,
    now_ms: int,
    policy: Policy,
    stats: LoadStats,
) -> None:
    """Validate every line of `path` as a message of topic `kind` and append the accepted events."""
    to_row = _ROWS[kind]
    table = _TABLES[kind]
    rows: list[tuple[object, ...]] = []
    for seq, value in enumerate(read_messages(path)):
        verdict = validate(kind, message_key(value), value, now_ms, policy)
        if isinstance(verdict, Accepted):
            stats.accepted[kind] += 1
            rows.append(to_row(seq, verdict))
            if len(rows) >= BATCH_ROWS:
                append_rows(con, table, rows)
                rows = []
        else:
            stats.rejected[kind, verdict.reason.value] += 1
    append_rows(con, table, rows)


def append_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Append `rows` (one value per column, in declared order) to `table` in bulk."""
    if not rows:
        return
    if hasattr(con, "appender"):  # DuckDB >= 2.0
        with con.appender(table) as appender:
            appender.append_rows(rows)
        return
    _append_by_unnest(con, table, rows)


def _append_by_unnest(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Older DuckDB: one INSERT of `unnest` over one typed list parameter per column."""
    types = con.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    selects = ", ".join(f"unnest(?::{data_type}[])" for (data_type,) in types)
    columns = [list(column) for column in zip(*rows, strict=True)]
    con.execute(f"INSERT INTO {table} SELECT {selects}", columns)  # our own table and column types


def load(
    con: duckdb.DuckDBPyConnection,
    clicks: Path,
    surveys: Path,
    now_ms: int,
    policy: Policy,
    passive_types: Iterable[str] = (),
    max_segment_values: int = DEFAULT_MAX_SEGMENT_VALUES,
    personal_pattern: str = "",
) -> LoadStats:
    """Create the input tables in `con` and fill them from the two input files, validated at `now_ms`."""
    create_tables(con, passive_types, max_segment_values, personal_pattern)
    stats = LoadStats()
    load_file(con, "clicks", clicks, now_ms, policy, stats)
    load_file(con, "surveys", surveys, now_ms, policy, stats)
    return stats
