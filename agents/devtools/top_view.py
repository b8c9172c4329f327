"""What `kpimon top` shows, as pure functions: KPI records and pipeline figures in, rich renderables or
plain text lines out. No I/O here, so every screen can be rendered in a test with
`rich.console.Console(record=True, width=80, height=24)`.

The view of one segment (all/all by default) has one row per headline KPI: its value on the current day
(the newest day with records in that segment), the sample behind a ratio, the target, a sparkline of the
last 14 days and a status: "▼ BREACH" when a `min` target is missed significantly (the alert rules' test:
enough sample and the whole interval below it), "▲ BREACH" when a `max` target is exceeded so,
"▽ not sig." / "△ not sig." when the value alone is on the wrong side (too few answers, or within the
interval), "✓ ok" when it meets the target, nothing when the value is undefined. The view of a whole
dimension has one column per segment. Plain lines carry the same headline values, a "!" after each
breaching value, a "~" after one off target but not significantly, and the pipeline figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kpimon.streams.catalogue import CATALOGUE
from kpimon.streams.output import KpiRecord, day_name, day_number
from kpimon.streams.targets import Target

#: Shown for a value that is undefined (no sample) or missing, never 0.
UNDEFINED = "–"
#: Days in a sparkline, ending at the current day.
SPARK_DAYS = 14
_BLOCKS = "▁▂▃▄▅▆▇█"

Kind = Literal["count", "ratio", "score"]
SeriesKey = tuple[str, str, str, str]  # kpi, window, dimension, segment


@dataclass(frozen=True)
class Headline:
    """One row of the view: a KPI in one window, with how its value reads."""

    label: str
    kpi: str
    window: str
    kind: Kind

    @property
    def name(self) -> str:
        """Label and window, e.g. `NPS 7d` (counts of active users carry their window in the label)."""
        return self.label if self.kpi in ("active_users", "retention_rate") else f"{self.label} {self.window}"

    def record_day(self, day: str) -> str:
        """The day of the record this row shows when the view's day is `day`: that day, except for
        retention, whose records carry the cohort day: the newest matured cohort of offset k is day - k."""
        if self.kpi != "retention_rate":
            return day
        return day_name(day_number(day) - int(self.window.removesuffix("d")))


#: Active users read as DAU, WAU and MAU, retention as D1, D7 and D30; every other headline is its title
#: and window.
_ACTIVE_USERS = {"1d": "DAU", "7d": "WAU", "30d": "MAU"}
_RETENTION = {"1d": "D1 retention", "7d": "D7 retention", "30d": "D30 retention"}
_NAMED = {"active_users": _ACTIVE_USERS, "retention_rate": _RETENTION}

#: The rows of the view: every KPI the catalogue titles, in each of its windows (streams/catalogue.py).
HEADLINES: tuple[Headline, ...] = tuple(
    Headline(_NAMED[kpi.name][window] if kpi.name in _NAMED else kpi.title, kpi.name, window, kpi.unit)
    for kpi in CATALOGUE
    if kpi.title is not None
    for window in kpi.windows
)


class KpiIndex:
    """The latest record per output key, indexed by series (kpi, window, dimension, segment) and day."""

    def __init__(self, records: Iterable[KpiRecord] = ()) -> None:
        self._by_key: dict[str, KpiRecord] = {}
        self._series: dict[SeriesKey, dict[str, KpiRecord]] = {}
        self._segments: dict[str, dict[str, int]] = {}
        for record in records:
            self.put(record)

    def __len__(self) -> int:
        return len(self._by_key)

    def put(self, record: KpiRecord) -> None:
        """Add a record; it supersedes the record of the same key."""
        self.discard(record.key)
        self._by_key[record.key] = record
        series = (record.kpi, record.window, record.dimension, record.segment)
        self._series.setdefault(series, {})[record.day] = record
        counts = self._segments.setdefault(record.dimension, {})
        counts[record.segment] = counts.get(record.segment, 0) + 1

    def discard(self, key: str) -> None:
        """Forget the record of a key (a tombstone); nothing when there is none."""
        old = self._by_key.pop(key, None)
        if old is None:
            return
        series = (old.kpi, old.window, old.dimension, old.segment)
        days = self._series[series]
        del days[old.day]
        if not days:
            del self._series[series]
        counts = self._segments[old.dimension]
        counts[old.segment] -= 1
        if not counts[old.segment]:
            del counts[old.segment]
            if not counts:
                del self._segments[old.dimension]

    def series(self, kpi: str, window: str, dimension: str, segment: str) -> Mapping[str, KpiRecord]:
        """Records of one series by ISO day (empty when there are none)."""
        return self._series.get((kpi, window, dimension, segment), {})

    def get(self, kpi: str, window: str, dimension: str, segment: str, day: str) -> KpiRecord | None:
        """The record of one key, or None."""
        return self.series(kpi, window, dimension, segment).get(day)

    def dimensions(self) -> list[str]:
        """Dimensions with records, `all` first."""
        return sorted(self._segments, key=lambda d: (d != "all", d))

    def segments(self, dimension: str) -> list[str]:
        """Segments of a dimension with records, sorted, with `unknown` and `other` last."""
        return sorted(self._segments.get(dimension, {}), key=lambda s: (s in ("unknown", "other"), s))

    def dimension_of(self, segment: str) -> str | None:
        """The first dimension (other than `all`) that has this segment, or None."""
        return next((d for d in self.dimensions() if d != "all" and segment in self._segments[d]), None)

    def current_day(self, dimension: str, segment: str | None = None) -> str | None:
        """The newest day of the headline series of a segment (of any segment of the dimension when None)."""
        segments = [segment] if segment is not None else self.segments(dimension)
        days = [
            max(days)
            for seg in segments
            for h in HEADLINES
            if (days := self.series(h.kpi, h.window, dimension, seg))
        ]
        return max(days) if days else None


# --- pipeline figures (from workers' /metrics) ---------------------------------------------------------


@dataclass(frozen=True)
class PipelineTotals:
    """The pipeline counters of one scrape of one worker's /metrics, summed over topics and partitions."""

    at: float  # monotonic seconds of the scrape
    events: Mapping[str, float] = field(default_factory=dict)  # by outcome
    dead_letters: float = 0.0
    lag: float | None = None  # None when the worker exports no lag series (yet)

    @property
    def processed(self) -> float:
        """Input messages processed, whatever the outcome."""
        return sum(self.events.values())


def parse_metrics(text: str, at: float) -> PipelineTotals:
    """The pipeline totals of a Prometheus text exposition (`kpimon_events_total`, dead letters, lag)."""
    events: dict[str, float] = {}
    dead = 0.0
    lag: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kpimon_events_total":
                outcome = sample.labels.get("outcome", "")
                events[outcome] = events.get(outcome, 0.0) + sample.value
            elif sample.name == "kpimon_dead_letters_total":
                dead += sample.value
            elif sample.name == "kpimon_consumer_lag_messages":
                lag = (lag or 0.0) + sample.value
    return PipelineTotals(at=at, events=events, dead_letters=dead, lag=lag)


@dataclass(frozen=True)
class PipelineFigures:
    """What the view shows about the pipeline, summed over the workers that answered."""

    urls: int = 0
    reachable: int = 0
    events_per_second: float | None = None
    accepted: float | None = None
    rejected: float | None = None
    duplicate: float | None = None
    dead_letters: float | None = None
    lag: float | None = None


def pipeline_figures(
    scrapes: Sequence[tuple[PipelineTotals | None, PipelineTotals | None]],
) -> PipelineFigures:
    """Figures from (previous, current) scrapes per worker URL; current None means it did not answer.

    events/s is the growth of the processed counter between a worker's two scrapes, summed over workers;
    unknown before a worker's second scrape and skipped when its counter went back (a restart).
    """
    current = [cur for _, cur in scrapes if cur is not None]
    if not current:
        return PipelineFigures(urls=len(scrapes))
    rates = [
        (cur.processed - prev.processed) / (cur.at - prev.at)
        for prev, cur in scrapes
        if prev is not None and cur is not None and cur.at > prev.at and cur.processed >= prev.processed
    ]
    lags = [c.lag for c in current if c.lag is not None]
    return PipelineFigures(
        urls=len(scrapes),
        reachable=len(current),
        events_per_second=sum(rates) if rates else None,
        accepted=sum(c.events.get("accepted", 0.0) for c in current),
        rejected=sum(c.events.get("rejected", 0.0) for c in current),
        duplicate=sum(c.events.get("duplicate", 0.0) for c in current),
        dead_letters=sum(c.dead_letters for c in current),
        lag=sum(lags) if lags else None,
    )


# --- formatting ----------------------------------------------------------------------------------------


def format_value(value: float | int | None, kind: Kind, *, grouping: bool = True) -> str:
    """A KPI value as read: counts as integers, ratios as percentages, NPS signed; undefined as "–"."""
    if value is None:
        return UNDEFINED
    if kind == "count":
        return f"{value:,.0f}" if grouping else f"{value:.0f}"
    if kind == "ratio":
        return f"{value * 100:.1f}%"
    return f"{value:+.1f}"


def format_target(record: KpiRecord | None, kind: Kind) -> str:
    """`≥ 30` for a min target, `≤ 5.0%` for a max target, "" without one."""
    if record is None or record.target is None:
        return ""
    sign = "≥" if record.target_direction == "min" else "≤"
    target = f"{record.target:g}" if kind == "score" else format_value(record.target, kind)
    return f"{sign} {target}"


Status = Literal["breach", "off_target", "ok"]


def target_status(record: KpiRecord | None) -> Status | None:
    """`breach` (a significant miss), `off_target` (a miss that is not significant), `ok`, or None (no
    target, or no value): as published, or judged by the same rule when a record carries only its target."""
    if record is None or record.target is None or record.value is None:
        return None
    direction = record.target_direction if record.target_direction == "max" else "min"
    target = Target(record.kpi, record.window, record.target, direction)
    off, breach = record.off_target, record.breach
    if breach is None:
        has_interval = record.ci_low is not None or record.ci_high is not None
        off, breach = target.judge(
            record.value, record.denominator, (record.ci_low, record.ci_high) if has_interval else None
        )
    elif off is None:  # a record of a worker from before `off_target`
        off = target.breached(record.value)
    if breach:
        return "breach"
    return "off_target" if off else "ok"


def breached(record: KpiRecord | None) -> bool | None:
    """Whether the record misses its target significantly; None without a target or a value."""
    status = target_status(record)
    return None if status is None else status == "breach"


def breach_mark(record: KpiRecord | None) -> str:
    """`▼ BREACH` / `▲ BREACH` for a significant miss of a min / max target, `▽ not sig.` /
    `△ not sig.` for a miss that is not significant, "" otherwise."""
    status = target_status(record)
    assert status is None or record is not None
    above = record is not None and record.target_direction == "max"
    if status == "breach":
        return "▲ BREACH" if above else "▼ BREACH"
    if status == "off_target":
        return "△ not sig." if above else "▽ not sig."
    return ""


def sparkline(values: Sequence[float | int | None]) -> str:
    """One block character per value, scaled between the smallest and largest; a space where undefined."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif high == low:
            out.append(_BLOCKS[3])
        else:
            out.append(_BLOCKS[round((v - low) / (high - low) * (len(_BLOCKS) - 1))])
    return "".join(out)


def recent_days(day: str, count: int = SPARK_DAYS) -> list[str]:
    """The `count` ISO days ending at `day`, oldest first."""
    last = day_number(day)
    return [day_name(d) for d in range(last - count + 1, last + 1)]


def trend(index: KpiIndex, headline: Headline, dimension: str, segment: str, day: str) -> str:
    """The sparkline of a headline KPI over the last 14 days ending at `day`."""
    series = index.series(headline.kpi, headline.window, dimension, segment)
    values = [series[d].value if d in series else None for d in recent_days(headline.record_day(day))]
    return sparkline(values)


def _sample(record: KpiRecord | None, kind: Kind) -> str:
    if record is None or kind == "count" or record.denominator is None:
        return ""
    return f"{record.denominator:,.0f}"


def _fmt_count(value: float | None, grouping: bool) -> str:
    if value is None:
        return UNDEFINED
    return f"{value:,.0f}" if grouping else f"{value:.0f}"


# --- the rich view -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewInfo:
    """Where the view reads from and how that goes, for its title and footer lines."""

    source: str = "kpimon-kpis"  # e.g. "kpimon-kpis @ 127.0.0.1:9092"
    state: str = "live"  # "live", "loading", or what is wrong
    clock: str = ""  # wall-clock time of the refresh, e.g. "12:00:03"
    metrics: Sequence[str] = ()  # the /metrics URLs read for the pipeline figures


def _title(info: ViewInfo, dimension: str, segment: str | None, day: str | None) -> Table:
    where = f"{dimension}/{segment}" if segment is not None else f"{dimension}/*"
    left = Text.assemble(("kpimon top", "bold"), "  ", (where, "cyan"), f"  day {day or UNDEFINED}")
    state_style = "green" if info.state == "live" else "yellow"
    right = Text.assemble((f"● {info.state}", state_style), f"  {info.clock}" if info.clock else "")
    grid = Table.grid(expand=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_column(justify="right", no_wrap=True, overflow="ellipsis")
    grid.add_row(left, right)
    return grid


def _pipeline(figures: PipelineFigures, info: ViewInfo) -> Text:
    text = Text.assemble(("Pipeline ", "bold"))
    if figures.urls == 0:
        return text.append("no --metrics-url given", style="dim")
    if figures.reachable == 0:
        return text.append(f"metrics unreachable: {', '.join(info.metrics)}", style="yellow")
    rate = UNDEFINED if figures.events_per_second is None else f"{figures.events_per_second:,.1f}"
    dead_style = "red" if figures.dead_letters else ""
    lag_style = "yellow" if figures.lag else ""
    text.append(f"{rate} events/s")
    text.append(f" · accepted {_fmt_count(figures.accepted, True)}")
    text.append(f" · dup {_fmt_count(figures.duplicate, True)}")
    text.append(" · dead letters ")
    text.append(_fmt_count(figures.dead_letters, True), style=dead_style)
    text.append(" · lag ")
    text.append(_fmt_count(figures.lag, True), style=lag_style)
    if figures.reachable < figures.urls:
        text.append(f" ({figures.reachable}/{figures.urls} workers)", style="yellow")
    return text


def _short_url(url: str) -> str:
    """`127.0.0.1:6066` for `http://127.0.0.1:6066/metrics`."""
    rest = url.split("://", 1)[-1]
    return rest.removesuffix("/metrics")


def _footer(index: KpiIndex, info: ViewInfo, width: int) -> Text:
    """Source, metrics hosts, record count and how to quit; the less important parts go when narrow."""
    metrics = f"metrics {', '.join(_short_url(u) for u in info.metrics)}" if info.metrics else ""
    records = f"{len(index):,} records"
    candidates = (
        [info.source, metrics, records, "Ctrl-C quits"],
        [info.source, metrics, "Ctrl-C quits"],
        [info.source, "Ctrl-C quits"],
    )
    for parts in candidates:
        line = " · ".join(p for p in parts if p)
        if len(line) <= width:
            break
    return Text(line, style="dim", no_wrap=True, overflow="ellipsis")


def _segment_table(index: KpiIndex, dimension: str, segment: str, day: str | None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), expand=False)
    table.add_column("KPI", no_wrap=True, min_width=15)
    table.add_column("value", justify="right", no_wrap=True, min_width=8)
    table.add_column("n", justify="right", no_wrap=True, min_width=6)
    table.add_column("target", justify="right", no_wrap=True, min_width=8)
    table.add_column(f"last {SPARK_DAYS} days", no_wrap=True, width=SPARK_DAYS)
    table.add_column("status", no_wrap=True, min_width=8)
    for h in HEADLINES:
        record = (
            index.get(h.kpi, h.window, dimension, segment, h.record_day(day)) if day is not None else None
        )
        value = record.value if record is not None else None
        mark, status_of = breach_mark(record), target_status(record)
        value_style = {"breach": "bold red", "off_target": "yellow"}.get(status_of or "", "")
        if status_of == "breach":
            status = Text(mark, style="bold white on red")
        elif status_of == "off_target":
            status = Text(mark, style="yellow")
        else:
            status = Text("✓ ok" if status_of == "ok" else "", style="green")
        spark = trend(index, h, dimension, segment, day) if day is not None else ""
        table.add_row(
            h.name,
            Text(format_value(value, h.kind), style=value_style),
            _sample(record, h.kind),
            format_target(record, h.kind),
            Text(spark, style="cyan"),
            status,
        )
    return table


def _dimension_table(index: KpiIndex, dimension: str, day: str | None, width: int) -> tuple[Table, int]:
    segments = index.segments(dimension)
    room = max(1, (width - 18) // 11)
    shown, hidden = segments[:room], len(segments) - min(room, len(segments))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), expand=False)
    table.add_column("KPI", no_wrap=True, min_width=15)
    for seg in shown:
        table.add_column(seg, justify="right", no_wrap=True, min_width=9, overflow="ellipsis", max_width=10)
    for h in HEADLINES:
        cells: list[Text | str] = [h.name]
        for seg in shown:
            record = (
                index.get(h.kpi, h.window, dimension, seg, h.record_day(day)) if day is not None else None
            )
            value = format_value(record.value if record is not None else None, h.kind)
            status_of = target_status(record)
            if status_of in ("breach", "off_target"):
                assert record is not None
                above = record.target_direction == "max"
                if status_of == "breach":
                    cells.append(Text(f"{value}{'▲' if above else '▼'}", style="bold red"))
                else:
                    cells.append(Text(f"{value}{'△' if above else '▽'}", style="yellow"))
            else:
                cells.append(f"{value} ")
        table.add_row(*cells)
    return table, hidden


def render_view(
    index: KpiIndex,
    figures: PipelineFigures,
    info: ViewInfo,
    *,
    dimension: str = "all",
    segment: str | None = "all",
    width: int = 80,
) -> RenderableType:
    """The whole screen: title, the KPI table of one segment (or of every segment of a dimension when
    `segment` is None), the pipeline line and a footer. At most 21 lines, so it fits 80x24."""
    day = index.current_day(dimension, segment)
    parts: list[RenderableType] = [_title(info, dimension, segment, day)]
    if segment is not None:
        parts.append(_segment_table(index, dimension, segment, day))
    else:
        table, hidden = _dimension_table(index, dimension, day, width)
        parts.append(table)
        if hidden:
            parts.append(Text(f"+{hidden} more segments: use --segment", style="dim"))
    if day is None:
        parts.append(Text(f"no records for {dimension}/{segment or '*'} yet", style="yellow"))
    parts.append(Text(""))
    parts.append(_pipeline(figures, info))
    parts.append(_footer(index, info, width))
    return Group(*parts)


# --- plain lines ---------------------------------------------------------------------------------------

#: Explains the plain lines once, before the first.
PLAIN_LEGEND = (
    "kpimon top: one line per refresh: segment, day, headline KPIs ('!' = breaches its target, "
    "'~' = off target, not significant, "
    f"'{UNDEFINED}' = undefined), then the pipeline"
)


def plain_line(
    index: KpiIndex,
    figures: PipelineFigures,
    *,
    dimension: str = "all",
    segment: str = "all",
    clock: str | None = None,
    state: str = "live",
) -> str:
    """One line: time, segment, day, each headline KPI (a "!" after a breaching value), pipeline figures."""
    clock = clock if clock is not None else time.strftime("%H:%M:%S")
    day = index.current_day(dimension, segment)
    parts = [clock, f"{dimension}/{segment}", f"day {day or UNDEFINED}"]
    if state != "live":
        parts.append(f"[{state}]")
    for h in HEADLINES:
        record = (
            index.get(h.kpi, h.window, dimension, segment, h.record_day(day)) if day is not None else None
        )
        value = format_value(record.value if record is not None else None, h.kind, grouping=False)
        mark = {"breach": "!", "off_target": "~"}.get(target_status(record) or "", "")
        parts.append(f"{h.name} {value}{mark}")
    line = "  ".join(parts)
    if figures.urls == 0:
        return line
    if figures.reachable == 0:
        return f"{line}  |  metrics unreachable"
    rate = UNDEFINED if figures.events_per_second is None else f"{figures.events_per_second:.1f}"
    pipeline = [
        f"events/s {rate}",
        f"accepted {_fmt_count(figures.accepted, False)}",
        f"rejected {_fmt_count(figures.rejected, False)}",
        f"duplicate {_fmt_count(figures.duplicate, False)}",
        f"dead letters {_fmt_count(figures.dead_letters, False)}",
        f"lag {_fmt_count(figures.lag, False)}",
    ]
    return f"{line}  |  {'  '.join(pipeline)}"
