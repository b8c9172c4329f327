"""The bench's final report: a table of rates, the ratios, the state and delay figures, the targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from bench import batchpath
from bench.stats import StageResult, Target, extrapolate, rate, ratio, time_split

#: Stage key -> label in the table, in display order.
LABELS = {
    "ceiling": "ceiling: aiokafka getmany + msgspec decode",
    "ceiling-plain": "ceiling without ConsumerRecords (plain records)",
    "bare": "bare Faust agent (iterate only)",
    "naive": "naive Faust DAU (windowed tables)",
    "quix": "peer: Quix Streams exact DAU (state, group_by)",
    "kpimon": "kpimon, 1 worker",
    "ceiling-changing": "state-changing mix: ceiling",
    "quix-changing": "state-changing mix: Quix Streams DAU",
    "kpimon-changing": "state-changing mix: kpimon, 1 worker",
    "kpimon2": "kpimon, 2 workers",
    "rss": "kpimon, many users (state/RSS)",
    "delay": "kpimon, delay stage (offered load)",
}

#: The candidates stage's variants -> label, in display order; "bare" (variant 1) is Faust's defaults.
CANDIDATES = {
    "bare": "1 Faust defaults (= bare)",
    "settings": "2 consumer/fetcher settings",
    "conductor": "2b conductor: cython_optimizations",
    "take": "3 stream.take(1000, within=1)",
    "channel": "4 bulk getmany, 1 channel event/batch",
}

MB = 1_000_000


def rate_of(results: Mapping[str, StageResult], stage: str) -> float | None:
    """The events/s of a stage, None when it did not run or measured nothing."""
    found = results.get(stage)
    return found.rate if found is not None else None


def cpu_rate_of(results: Mapping[str, StageResult], stage: str) -> float | None:
    """Events per CPU second of the stage's consumer or worker processes (robust to a busy machine)."""
    found = results.get(stage)
    if found is None:
        return None
    return rate(found.events, float(found.figures.get("cpu_seconds") or 0.0))


def peak_rss(result: StageResult | None) -> float | None:
    """The largest peak RSS of the stage's workers, in bytes."""
    if result is None or not result.figures.get("peak_rss_bytes"):
        return None
    return float(max(result.figures["peak_rss_bytes"]))


def state_bytes_per_user(result: StageResult | None) -> float | None:
    """Mean size of the latest user-state changelog value per user key, in bytes."""
    if result is None or not result.figures.get("state_users"):
        return None
    return float(result.figures["state_bytes"]) / float(result.figures["state_users"])


def held_max(result: StageResult | None) -> float | None:
    """The longest single wait of a stage's source readers for a flush or publication, in seconds."""
    if result is None or "reader_held_max_s" not in result.figures:
        return None
    return float(result.figures["reader_held_max_s"])


def longest_held(results: Mapping[str, StageResult]) -> float | None:
    """The longest wait for a flush or publication over the single-worker kpimon stages of both mixes."""
    waits = [held_max(results.get(stage)) for stage in ("kpimon", "kpimon-changing")]
    known = [w for w in waits if w is not None]
    return max(known) if known else None


def rss_estimate(result: StageResult) -> tuple[int, int, float] | None:
    """(users held, users of the data set, extrapolated peak RSS) of a capped run; None if complete."""
    figures = result.figures
    held, users = int(figures.get("state_users") or 0), int(figures.get("users") or 0)
    peak, base = peak_rss(result), figures.get("base_rss_bytes") or []
    if result.complete or not held or held >= users or peak is None or not base:
        return None
    value = extrapolate(float(max(base)), peak, held, users)
    return None if value is None else (held, users, value)


def ratios(results: Mapping[str, StageResult]) -> dict[str, float | None]:
    """kpimon over the other stages (and two workers over one)."""
    kpimon = rate_of(results, "kpimon")
    return {
        "kpimon/ceiling": ratio(kpimon, rate_of(results, "ceiling")),
        "kpimon/naive": ratio(kpimon, rate_of(results, "naive")),
        "kpimon/quix": ratio(kpimon, rate_of(results, "quix")),
        "kpimon/bare": ratio(kpimon, rate_of(results, "bare")),
        "bare/ceiling": ratio(rate_of(results, "bare"), rate_of(results, "ceiling")),
        "ceiling-plain/ceiling": ratio(rate_of(results, "ceiling-plain"), rate_of(results, "ceiling")),
        "kpimon2/kpimon": ratio(rate_of(results, "kpimon2"), kpimon),
        "changing: kpimon/ceiling": ratio(
            rate_of(results, "kpimon-changing"), rate_of(results, "ceiling-changing")
        ),
        "changing: kpimon/quix": ratio(
            rate_of(results, "kpimon-changing"), rate_of(results, "quix-changing")
        ),
    }


def cpu_ratios(results: Mapping[str, StageResult]) -> dict[str, float | None]:
    """The same ratios per CPU second spent by each stage's processes."""
    kpimon = cpu_rate_of(results, "kpimon")
    return {
        "kpimon/ceiling": ratio(kpimon, cpu_rate_of(results, "ceiling")),
        "kpimon/naive": ratio(kpimon, cpu_rate_of(results, "naive")),
        "kpimon/quix": ratio(kpimon, cpu_rate_of(results, "quix")),
        "kpimon/bare": ratio(kpimon, cpu_rate_of(results, "bare")),
        "bare/ceiling": ratio(cpu_rate_of(results, "bare"), cpu_rate_of(results, "ceiling")),
        "ceiling-plain/ceiling": ratio(
            cpu_rate_of(results, "ceiling-plain"), cpu_rate_of(results, "ceiling")
        ),
        "changing: kpimon/ceiling": ratio(
            cpu_rate_of(results, "kpimon-changing"), cpu_rate_of(results, "ceiling-changing")
        ),
        "changing: kpimon/quix": ratio(
            cpu_rate_of(results, "kpimon-changing"), cpu_rate_of(results, "quix-changing")
        ),
    }


def candidate_key(variant: str) -> str:
    """The results key of a candidate variant (Faust's defaults are the bare stage's result)."""
    return "bare" if variant == "bare" else f"candidate-{variant}"


def candidates(results: Mapping[str, StageResult]) -> list[dict[str, Any]]:
    """One row per candidate variant that ran: its rates, both over bare Faust's, and where its wall
    time went (`bench.stats.TimeSplit`). Empty when no variant but bare ran."""
    if not any(candidate_key(v) in results for v in CANDIDATES if v != "bare"):
        return []
    bare_rate, bare_cpu_rate = rate_of(results, "bare"), cpu_rate_of(results, "bare")
    rows: list[dict[str, Any]] = []
    for variant, label in CANDIDATES.items():
        key = candidate_key(variant)
        found = results.get(key)
        if found is None:
            continue
        cpu_rate = cpu_rate_of(results, key)
        rows.append(
            {
                "variant": variant,
                "label": label,
                "events": found.events,
                "seconds": found.seconds,
                "rate": found.rate,
                "cpu_rate": cpu_rate,
                "rate_over_bare": ratio(found.rate, bare_rate),
                "cpu_rate_over_bare": ratio(cpu_rate, bare_cpu_rate),
                "complete": found.complete,
                **asdict(time_split(found.figures)),
            }
        )
    return rows


def percent(value: float | None) -> str:
    """A fraction as a whole percentage, '-' when unknown."""
    return "-" if value is None else f"{value * 100:.0f}%"


def render_candidates(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The candidates table and the idle-time line of Faust's defaults (variant 5)."""
    out = ["candidates (issue #7): Faust's per-event cost with one lever changed at a time, vs bare Faust"]
    table_rows = [
        [
            "variant",
            "messages",
            "seconds",
            "events/s",
            "events/CPU-s",
            "x bare",
            "x bare/CPU-s",
            "CPU-s/wall-s",
            "loop cpu/wait/asleep",
            "complete",
        ]
    ]
    for row in rows:
        split = "/".join(percent(row[k]) for k in ("loop_busy", "loop_waiting", "loop_asleep"))
        table_rows.append(
            [
                row["label"],
                number(row["events"]),
                number(row["seconds"], 1),
                number(row["rate"]),
                number(row["cpu_rate"]),
                number(row["rate_over_bare"], 2),
                number(row["cpu_rate_over_bare"], 2),
                number(row["process_busy"], 2),
                split if row["loop_busy"] is not None else "-",
                "yes" if row["complete"] else "NO",
            ]
        )
    out.append(table(table_rows))
    defaults = next((row for row in rows if row["variant"] == "bare"), None)
    if defaults is not None and defaults["process_busy"] is not None:
        line = (
            f"5 where the idle time goes, Faust defaults: {defaults['process_busy']:.2f} CPU-s per wall-s "
            f"(all threads, i.e. {percent(max(0.0, 1 - defaults['process_busy']))} of one core unused)"
        )
        if defaults["loop_busy"] is not None:
            line += (
                f"; its event loop thread on a CPU {percent(defaults['loop_busy'])} of the wall time, "
                f"runnable but waiting for a CPU {percent(defaults['loop_waiting'])} (other load), "
                f"asleep {percent(defaults['loop_asleep'])} (idle in epoll: waiting for the consumer "
                "thread's fetches, the broker or a timer)"
            )
        out.append(line)
    return out


def targets(results: Mapping[str, StageResult]) -> list[Target]:
    """Issue #7's targets, each with the measured value (None when its stage did not run)."""
    both, cpu = ratios(results), cpu_ratios(results)
    delay = results.get("delay")
    p99 = delay.figures.get("p99_s") if delay is not None else None
    rss_result = results.get("rss")
    rss = peak_rss(rss_result)
    users = rss_result.figures.get("users", 0) if rss_result is not None else 0
    partial = rss_result is not None and not rss_result.complete
    return [
        Target("kpimon events/s per worker process", rate_of(results, "kpimon"), 120_000, unit="/s"),
        # The lower of the wall-clock and the per-CPU-second ratio: on a shared machine the ceiling and
        # kpimon stages run minutes apart under different load, which moves the wall-clock ratio either way.
        Target(
            "kpimon/ceiling (the lower of wall and per CPU second)",
            lower(both["kpimon/ceiling"], cpu["kpimon/ceiling"]),
            0.35,
        ),
        Target(
            "state-changing mix: kpimon events/s per worker process",
            rate_of(results, "kpimon-changing"),
            60_000,
            unit="/s",
        ),
        Target("kpimon/naive", both["kpimon/naive"], 10),
        Target("kpimon/quix (whole KPI set over the peer's DAU alone)", both["kpimon/quix"], 2),
        Target(
            f"peak RSS, {users:,} users (MB)" if users else "peak RSS, many users (MB)",
            rss / MB if rss is not None else None,
            400,
            at_least=False,
            partial=partial,
        ),
        Target("p99 end-to-end delay (s)", p99, 2.0, at_least=False),
        Target("two workers over one worker (events/s; faster: > 1)", both["kpimon2/kpimon"], 1.0),
        Target(
            "batch path: compiled core / Python engine, the slower mix (identical results)",
            batch_ratio(results.get("batch")),
            batchpath.TARGET_RATIO,
        ),
        Target(
            "longest wait of the input for flush/publish, both mixes (s)",
            longest_held(results),
            0.1,
            at_least=False,
        ),
    ]


def lower(a: float | None, b: float | None) -> float | None:
    """The lower of two figures, either when the other is unknown."""
    known = [v for v in (a, b) if v is not None]
    return min(known) if known else None


def batch_ratio(batch: StageResult | None) -> float | None:
    """The compiled core's ratio to the Python engine on the batch path, the lower of the mixes; 0 when a
    mix's digests differ (speed without identical results does not count); None when not measured."""
    if batch is None:
        return None
    figures = list(batch.figures.values())
    if not figures or any(f.get("ratio") is None for f in figures):
        return None
    if not all(f["digests_equal"] for f in figures):
        return 0.0
    return float(min(f["ratio"] for f in figures))


def number(value: float | None, digits: int = 0) -> str:
    """A figure for the table: thousands separators, '-' when unknown."""
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    return f"{value:,.{digits}f}"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned text columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_batch(batch: StageResult | None) -> list[str]:
    """The batch stage's lines: per traffic mix, messages per CPU second of the batch path alone."""
    if batch is None:
        return []
    out = ["batch path alone (no Kafka; CPU seconds of BatchProcessor.process, fastest of the passes):"]
    out.extend(f"  {line}" for line in batchpath.describe(batch.figures))
    return out


def render(results: Mapping[str, StageResult], meta: Mapping[str, Any]) -> str:
    """The whole report as text."""
    out = [f"kpimon benchmark - {meta.get('when', '')} - {meta.get('machine', '')}"]
    for name, data in meta.get("data_sets", {}).items():
        out.append(
            f"data {name}: {data['events']:,} messages ({data['clicks']:,} clicks, {data['surveys']:,} "
            f"surveys), {data['users']:,} users, {data['days']} days, {data['partitions']} partitions, "
            f"{data['mean_value_bytes']:.0f} B/message, filled in {data['fill_seconds']:.1f} s"
        )
    out.append("")
    rows = [["stage", "messages", "seconds", "events/s", "events/CPU-s", "complete", "note"]]
    for stage, label in LABELS.items():
        found = results.get(stage)
        if found is None:
            continue
        shown = found.figures.get("offered_rate") if stage == "delay" else found.rate
        rate_text = number(shown)
        rows.append(
            [
                label,
                number(found.events),
                number(found.seconds, 1),
                rate_text,
                number(cpu_rate_of(results, stage)),
                "yes" if found.complete else "NO",
                found.note,
            ]
        )
    out.append(table(rows))
    out.append("")
    out.append("ratios: " + ", ".join(f"{k} = {number(v, 3)}" for k, v in ratios(results).items()))
    out.append(
        "ratios per CPU second (each stage's own processes; less sensitive to other load): "
        + ", ".join(f"{k} = {number(v, 3)}" for k, v in cpu_ratios(results).items())
    )
    candidate_rows = candidates(results)
    if candidate_rows:
        out.append("")
        out.extend(render_candidates(candidate_rows))
        out.append("")
    for stage in ("kpimon", "kpimon-changing", "kpimon2", "rss"):
        found = results.get(stage)
        if found is None:
            continue
        rss_list = found.figures.get("peak_rss_bytes") or []
        rss_text = ", ".join(f"{r / MB:,.0f} MB" for r in rss_list) or "-"
        line = f"{LABELS[stage]}: peak RSS (VmHWM) {rss_text}; store {found.figures.get('store')}"
        per_user = state_bytes_per_user(found)
        if per_user is not None:
            line += (
                f"; state {per_user:,.1f} bytes/user ({found.figures['state_users']:,} users in "
                f"{found.figures['changelog']})"
            )
        if found.figures.get("store_note"):
            line += f"; {found.figures['store_note']}"
        out.append(line)
        if "reader_held_max_s" in found.figures:
            longest, total = found.figures["reader_held_max_s"], found.figures["reader_held_total_s"]
            line = (
                f"  input held for flushes and publishing: longest wait {longest:.3f} s, "
                f"all waits {total:.1f} s of {found.seconds:.1f} s"
            )
            if "reader_held_over_100ms" in found.figures:
                line += (
                    f" ({found.figures['reader_held_waits']:,.0f} waits, "
                    f"{found.figures['reader_held_over_100ms']:,.0f} over 0.1 s)"
                )
            out.append(line)
        estimate = rss_estimate(found)
        if estimate is not None:
            held, users, value = estimate
            out.append(
                f"  capped while holding {held:,} of {users:,} users: linear extrapolation of the peak RSS "
                f"above the RSS at the first message to {users:,} users = {value / MB:,.0f} MB (an estimate)"
            )
    out.extend(render_batch(results.get("batch")))
    delay = results.get("delay")
    if delay is not None:
        fig = delay.figures
        out.append(
            f"delay at {number(fig.get('offered_rate'))} events/s offered for {delay.seconds:.0f} s: "
            f"p50 {number(fig.get('p50_s'), 3)} s, p99 {number(fig.get('p99_s'), 3)} s, "
            f"max {number(fig.get('max_s'), 3)} s ({delay.events:,} events, {fig.get('markers', 0):,} "
            f"markers, {fig.get('never_visible', 0)} never visible, /metrics scraped every "
            f"{fig.get('scrape_interval_s')} s, "
            f"flush interval {fig.get('flush_interval_s')} s)"
        )
    out.append("")
    rows = [["target", "threshold", "measured", "verdict"]]
    for target in targets(results):
        sign = ">=" if target.at_least else "<="
        digits = 0 if target.threshold >= 100 else 3
        rows.append(
            [
                target.name,
                f"{sign} {number(target.threshold, digits)}",
                number(target.value, digits),
                target.verdict,
            ]
        )
    out.append(table(rows))
    return "\n".join(out)


def to_json(results: Mapping[str, StageResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the report shows, as plain data for `--json`."""
    return {
        "meta": dict(meta),
        "stages": {name: result.to_json() for name, result in results.items()},
        "ratios": ratios(results),
        "cpu_ratios": cpu_ratios(results),
        "candidates": candidates(results),
        "targets": [
            {
                "name": t.name,
                "threshold": t.threshold,
                "at_least": t.at_least,
                "value": t.value,
                "verdict": t.verdict,
            }
            for t in targets(results)
        ],
    }
