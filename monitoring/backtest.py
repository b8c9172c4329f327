"""Back-test the generated alert rules on a simulated history: episodes without cause, detection times.

The rules evaluated are the files `make generate` writes (deploy/prometheus/rules/ by default), read as
they are; nothing here restates an expression. The steps:

1. **Traffic**: `kpimon simulate`'s batch model (`batch_traffic`), every message in send order.
2. **The worker, without Kafka**: each message is validated and applied by the worker's own source engine
   (`SourceEngine`: per-user state, counters; the KPI math of streams/) at an arrival clock, the newest
   on-time event time seen so far (late, duplicate and broken messages arrive between on-time events, in
   the simulator's send order). One partition, one worker: the global counters.
3. **The exporter's series**: every `kpi_step` seconds the records of the current day (`group_records`,
   what the aggregator publishes) become gauges as the exporter exposes them (`record_samples`, with
   `job`/`instance`), targets included; every `scrape_step` seconds the pipeline counters
   (`kpimon_events_total`, and `kpimon_dead_letters_total` summed over reasons).
4. **Prometheus**: one OpenMetrics file of the whole history, `promtool tsdb create-blocks-from
   openmetrics` into large blocks, a real Prometheus over them; the recording rules the alerts read are
   recorded level by level (a rule waits for the records it reads) by `query_range` and written back as
   blocks, at `kpi_step` for the KPI group; the per-minute pipeline records are written into the pipeline
   alerts that read them as plain instant vectors (`RuleFiles.inlined`: the same values, months faster).
5. **Alerts**: each alert expression by `query_range` at the step its inputs change at (KPI alerts:
   `kpi_step`; pipeline alerts: the evaluation interval), and `for:` and `keep_firing_for` applied as
   Prometheus applies them at its evaluation interval: a KPI condition seen at a step holds until the next
   step (the gauges hold their values between snapshots), an alert opens once it held for `for`, an episode
   lasts while it holds (and `keep_firing_for` after).
6. **The budget** (`budget_config`, `measure`): page and ticket episodes per 30 days in the days without a
   true change, and how soon each true change (`CHANGES`) opens its alerts.

What it does not model: worker outages, restarts, Kafka outages and consumer lag (a healthy worker:
`KpimonSnapshotStale`, `KpimonKafkaUnreachable`, `KpimonWorkerDown` and `KpimonConsumerLagGrowing` cannot
fire here: they are reported as not modelled, `NOT_MODELLED`), and intraday changes finer than
`kpi_step`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from kpimon.agents.exporter.kpi_collector import family_labels, gauge_day, record_samples
from kpimon.agents.pipeline.engine import PendingRuns, SourceEngine
from kpimon.reference.load import message_key
from kpimon.simulator.model import DAY_MS, BatchConfig, Scenario, batch_traffic
from kpimon.simulator.render import render
from kpimon.streams.records import group_records
from kpimon.streams.targets import Targets, load_targets
from kpimon.streams.userstate import UserState
from kpimon.streams.validation import Accepted, Policy, validate
from monitoring.config import DEFAULT, MonitoringConfig
from monitoring.render import GENERATED, to_yaml
from monitoring.rules import prometheus_rule_files

RULES_DIR = Path("deploy/prometheus/rules")
TARGETS_FILE = Path("deploy/targets.example.toml")
DAY_S = 86_400
#: Prometheus' evaluation interval of the generated config (monitoring/config.py): `for:` counts in these.
EVAL_S = 60
#: query_range returns at most 11,000 points per series.
_MAX_POINTS = 10_000
#: Days per TSDB block written by promtool (at most: blocks are aligned to multiples of it).
BLOCK_DAYS = 365
EOF = "# EOF\n"
JOB, INSTANCE = "kpimon", "backtest:6066"
#: The alerts of what is not modelled (worker outages, restarts, Kafka outages, consumer lag): a healthy
#: worker's series (`up` 1, Kafka reachable, a snapshot every few seconds, no lag) cannot make them fire, so
#: their series are not exported and they are reported as not modelled, not as quiet.
NOT_MODELLED = frozenset(
    {"KpimonSnapshotStale", "KpimonKafkaUnreachable", "KpimonWorkerDown", "KpimonConsumerLagGrowing"}
)
#: The `reason` label of the dead-letter counters, summed over reasons.
DEAD_LETTER_REASON = "all"
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": DAY_S, "w": 7 * DAY_S}


def seconds(duration: str) -> int:
    """A Prometheus duration ("90s", "1h30m") in seconds."""
    parts = _DURATION.findall(duration)
    if "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


# ---------------------------------------------------------------------------------------------------------
# The rule files


@dataclass(frozen=True)
class AlertRule:
    """One alert of the rule file, as written there."""

    name: str
    group: str
    expr: str
    for_s: int
    severity: str
    #: `keep_firing_for` in seconds (0: none).
    keep_s: int = 0


@dataclass(frozen=True)
class RuleFiles:
    """The recording rule groups (group name -> rule entries) and the alerts of a rules directory."""

    recording: dict[str, list[dict[str, str]]]
    alerts: list[AlertRule]

    @classmethod
    def load(cls, directory: Path) -> RuleFiles:
        """Every group of every *.yaml in `directory` (the generated kpimon-recording / kpimon-alerts)."""
        recording: dict[str, list[dict[str, str]]] = {}
        alerts: list[AlertRule] = []
        for path in sorted(directory.glob("*.yaml")):
            for group in yaml.safe_load(path.read_text())["groups"]:
                for rule in group["rules"]:
                    if "record" in rule:
                        recording.setdefault(group["name"], []).append(rule)
                    else:
                        alerts.append(
                            AlertRule(
                                rule["alert"],
                                group["name"],
                                rule["expr"],
                                seconds(rule.get("for", "0s")),
                                rule["labels"]["severity"],
                                seconds(rule.get("keep_firing_for", "0s")),
                            )
                        )
        return cls(recording, alerts)

    def levels(self, group: str) -> list[list[dict[str, str]]]:
        """The group's recording rules in dependency levels: a rule comes after the records it reads.

        `promtool tsdb create-blocks-from rules` evaluates against what the server already holds, so a
        rule reading another rule's record must be backfilled in a later run.
        """
        rules = self.recording.get(group, [])
        records = {rule["record"] for rule in rules}
        level: dict[str, int] = {}
        remaining = list(rules)
        while remaining:
            progressed = []
            for rule in remaining:
                reads = set(_NAME.findall(rule["expr"])) & records - {rule["record"]}
                if all(name in level for name in reads):
                    level[rule["record"]] = 1 + max((level[name] for name in reads), default=-1)
                    progressed.append(rule)
            if not progressed:
                raise ValueError(f"recording rules of {group} read each other in a cycle")
            remaining = [rule for rule in remaining if rule not in progressed]
        out: list[list[dict[str, str]]] = [[] for _ in range(1 + max(level.values(), default=-1))]
        for rule in rules:
            out[level[rule["record"]]].append(rule)
        return out

    def modelled(self) -> list[AlertRule]:
        """The alerts the back-test evaluates: all but those of outages it does not model."""
        return [alert for alert in self.alerts if alert.name not in NOT_MODELLED]

    def inlined(self, groups: set[str]) -> RuleFiles:
        """These rules with the records of the recording `groups` written into the alerts that read them.

        For alerts evaluated at the step of those records (the pipeline's, every minute) a record read as a
        plain instant vector (no matchers, range or offset) is exactly its expression at the same times, so
        nothing need be recorded: months of per-minute records are the slowest part of a back-test
        otherwise. A record read otherwise stays a record (backfilled).
        """
        by_record = {rule["record"]: rule["expr"] for g in groups for rule in self.recording.get(g, [])}

        def inline(expr: str) -> str | None:
            for name in set(_NAME.findall(expr)) & set(by_record):
                reference = re.compile(rf"(?<![\w:]){re.escape(name)}(?![\w:])")
                for match in reference.finditer(expr):
                    after = expr[match.end() :].lstrip()
                    if after.startswith(("{", "[", "offset", "@")):
                        return None
                inner = inline(by_record[name])
                if inner is None:
                    return None
                expr = reference.sub(f"({inner})".replace("\\", r"\\"), expr)
            return expr

        alerts = [
            replace(alert, expr=inline(alert.expr) or alert.expr)
            if alert.group.endswith("pipeline")
            else alert
            for alert in self.alerts
        ]
        return RuleFiles(self.recording, alerts)

    def needed_records(self) -> set[str]:
        """The recorded series the modelled alerts read, directly or through other records."""
        by_record = {rule["record"]: rule["expr"] for rules in self.recording.values() for rule in rules}
        needed: set[str] = set()
        todo = [name for alert in self.modelled() for name in _NAME.findall(alert.expr)]
        while todo:
            name = todo.pop()
            if name in by_record and name not in needed:
                needed.add(name)
                todo.extend(_NAME.findall(by_record[name]))
        return needed

    def raw_metrics(self) -> set[str]:
        """The exported metric names the modelled alerts read, directly or through recording rules."""
        by_record = {rule["record"]: rule["expr"] for rules in self.recording.values() for rule in rules}
        seen: set[str] = set()
        todo = [name for alert in self.modelled() for name in _NAME.findall(alert.expr)]
        raw: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in by_record:
                todo.extend(_NAME.findall(by_record[name]))
            elif name.startswith("kpimon_") or name == "up":
                raw.add(name.removesuffix("_total"))
        return raw


# ---------------------------------------------------------------------------------------------------------
# The worker's series, without Kafka


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(pairs))


@dataclass
class DayFile:
    """The samples of one day, by family and series, written as OpenMetrics once the day is over."""

    #: family -> (TYPE, {label text: [(timestamp s, value)]}); a value as a float or as text ("NaN", "+Inf")
    families: dict[str, tuple[str, dict[str, list[tuple[int, float | str]]]]] = field(default_factory=dict)

    def add(self, family: str, kind: str, sample: str, labels: str, stamp: int, value: float | str) -> None:
        series = self.families.setdefault(family, (kind, {}))[1]
        series.setdefault(f"{sample}{{{labels}}}", []).append((stamp, value))

    def write(self, path: Path) -> int:
        """Write the file; the number of samples."""
        with path.open("w", encoding="utf-8") as out:
            count = self.append_to(out)
            out.write(EOF)
        return count

    def append_to(self, out: TextIO) -> int:
        """Append the samples to an OpenMetrics stream (without its `# EOF`); the number of samples.

        Days appended one after the other make one file of the whole history: a family's TYPE line then
        repeats once a day, which promtool's parser takes, and one import makes a few large blocks instead
        of twelve 2-hour blocks a day (130 promtool runs and 1,500 blocks for 130 days: 5 times slower).
        """
        count = 0
        for family in sorted(self.families):
            kind, series = self.families[family]
            out.write(f"# TYPE {family} {kind}\n")
            for name, samples in sorted(series.items()):
                out.writelines(
                    f"{name} {value if isinstance(value, str) else repr(value)} {stamp}\n"
                    for stamp, value in samples
                )
                count += len(samples)
        return count


@dataclass
class Replay:
    """What the in-process worker saw, and the OpenMetrics files of its series."""

    files: list[Path]
    first_s: int
    end_s: int
    messages: int
    outcomes: Counter[str]
    samples: int
    #: (dimension, segment) pairs with records on some day.
    segments: set[tuple[str, str]]


def replay(
    config: BatchConfig,
    out_dir: Path,
    *,
    targets: Targets,
    metrics: set[str],
    kpi_step: int,
    scrape_step: int,
    previous_day: bool = False,
    max_lateness_days: int = 7,
) -> Replay:
    """Run the simulation through the worker's source engine; one OpenMetrics file (history.om) in `out_dir`.

    Only the families in `metrics` (exported names, counters without `_total`) are written, and the
    series of the previous day (`day="previous"`) only with `previous_day` (when some alert reads them).
    """
    if DAY_S % kpi_step or DAY_S % scrape_step:
        raise ValueError("kpi_step and scrape_step must divide a day")
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = SourceEngine(max_lateness_days)
    policy = Policy(max_lateness_days=max_lateness_days)
    users: dict[bytes, UserState] = {}
    # The batch path: counter runs collected, applied once before each snapshot.
    pending: PendingRuns = Counter()
    counters = engine.counters(0)
    events: Counter[tuple[str, str]] = Counter({(t, o): 0 for t in ("clicks", "surveys") for o in _OUTCOMES})
    dead: Counter[str] = Counter()
    base = (("instance", INSTANCE), ("job", JOB))
    first_s = config.first_day * DAY_S
    next_kpi = next_scrape = first_s
    day_file, day_of_file = DayFile(), config.first_day
    files: list[Path] = []
    samples = 0
    segments: set[tuple[str, str]] = set()
    clock_ms = first_s * 1000

    history = out_dir / "history.om"
    stream = history.open("w", encoding="utf-8")
    files.append(history)

    def flush_day(day: int) -> None:
        nonlocal day_file, samples
        samples += day_file.append_to(stream)
        day_file = DayFile()

    label_text: dict[tuple[str, tuple[str, ...]], str] = {}

    def labels_of(metric: str, names: tuple[str, ...], values: tuple[str, ...]) -> str:
        text = label_text.get((metric, values))
        if text is None:
            text = label_text[metric, values] = _labels((*base, *zip(names, values, strict=True)))
        return text

    # The pipeline counters, scraped every minute: the bulk of the samples, so their label texts are made
    # once. Dead letters are summed over their reasons (one series per topic, `reason="all"`): the rules
    # the alerts read sum them by topic anyway, and 15 series a minute become 2.
    counter_labels = {key: labels_of("kpimon_events", ("topic", "outcome"), key) for key in sorted(events)}
    dead_labels = {
        topic: labels_of("kpimon_dead_letters", ("topic", "reason"), (topic, DEAD_LETTER_REASON))
        for topic in ("clicks", "surveys")
    }
    export_dead = "kpimon_dead_letters" in metrics

    def scrape(stamp: int) -> None:
        for key, labels in counter_labels.items():
            day_file.add("kpimon_events", "counter", "kpimon_events_total", labels, stamp, events[key])
        if export_dead:
            for topic, labels in dead_labels.items():
                day_file.add(
                    "kpimon_dead_letters", "counter", "kpimon_dead_letters_total", labels, stamp, dead[topic]
                )

    def snapshot(stamp: int) -> None:
        engine.apply_pending(0, pending)
        current = counters.current_day
        if current is None:
            return
        # As a flush does: the days up to the current one become the groups that exist, and days no
        # event can change any more fold into the oldest kept (short prefix sums).
        for _ in counters.take_dirty(current):
            pass
        counters.drop_before(engine.oldest_accepted_day(stamp * 1000))
        shown = (current, current - 1) if previous_day else (current,)
        for (dimension, segment), days in counters.days.items():
            for day in shown:
                if day in days:
                    group_samples(dimension, segment, day, current, stamp)

    def group_samples(dimension: str, segment: str, day: int, current: int, stamp: int) -> None:
        counts = counters.counts((dimension, segment, day))
        for record in group_records(dimension, segment, day, counts, None, targets):
            label = gauge_day(record, current)
            if label is None or (label == "previous" and not previous_day):
                continue
            segments.add((record.dimension, record.segment))
            for metric, values, value in record_samples(record, label):
                if metric not in metrics:
                    continue
                names = family_names.get(metric)
                if names is None:
                    names = family_names[metric] = family_labels(metric)
                day_file.add(metric, "gauge", metric, labels_of(metric, names, values), stamp, value)

    family_names: dict[str, tuple[str, ...]] = {}
    messages = 0
    for out in batch_traffic(config):
        draft = out.draft
        if out.role == "event":  # on time: delivered at its event time, the clock of the send order
            clock_ms = max(clock_ms, draft.ts_ms)
        while min(next_kpi, next_scrape) * 1000 <= clock_ms:
            stamp = min(next_kpi, next_scrape)
            if stamp // DAY_S != day_of_file:
                flush_day(day_of_file)
                day_of_file = stamp // DAY_S
            if stamp == next_scrape:
                scrape(stamp)
                next_scrape += scrape_step
            if stamp == next_kpi:
                snapshot(stamp)
                next_kpi += kpi_step
        messages += 1
        topic = draft.topic
        value = render(draft)
        key = message_key(value)
        verdict = validate(topic, key, value, clock_ms, policy)
        if isinstance(verdict, Accepted) and key is not None:
            outcome = engine.on_event(users, key, 0, verdict, clock_ms, pending)
            events[topic, "accepted" if outcome == "accepted" else "duplicate"] += 1
        elif isinstance(verdict, Accepted):
            events[topic, "accepted"] += 1  # unkeyed: rekeyed by the worker, the same KPIs
        else:
            events[topic, "rejected"] += 1
            dead[topic] += 1
    flush_day(day_of_file)
    stream.write(EOF)
    stream.close()
    outcomes = Counter({f"{t}/{o}": n for (t, o), n in events.items()})
    return Replay(files, first_s, next_kpi - kpi_step, messages, outcomes, samples, segments)


_OUTCOMES = ("accepted", "rejected", "duplicate")


# ---------------------------------------------------------------------------------------------------------
# Prometheus over the blocks


def binary(name: str) -> str:
    """`prometheus` or `promtool` from PATH (Debian's prometheus package: `make system-deps`)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Prometheus (Debian: `make system-deps`)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(command: list[str], timeout: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {(result.stdout + result.stderr)[-2000:]}")


class Prometheus:
    """A Prometheus server over a data directory on a free loopback port (no scraping, no rules)."""

    def __init__(self, data_dir: Path, work: Path) -> None:
        self.data_dir = data_dir
        self.config = work / "prometheus.yml"
        self.config.write_text("global:\n  evaluation_interval: 1m\n")
        self.log = work / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        """Start and wait until it answers queries."""
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.data_dir}",
                    # The history lies in the past; nothing may be deleted for age.
                    "--storage.tsdb.retention.time=100y",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--query.max-samples=200000000",
                    # A query of months at a 1-minute step on a loaded machine takes minutes (the default
                    # 2-minute limit answered 503).
                    "--query.timeout=30m",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("prometheus did not become ready in 120 s")

    def stop(self) -> None:
        """Stop the server (its own process group only)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def query_range(self, expr: str, start: int, end: int, step: int) -> dict[str, list[tuple[int, str]]]:
        """Series (label text, `name="value"` sorted) -> [(timestamp, value text)] of `expr` over
        [start, end] by `step`, in chunks below the server's 11,000 points per series."""
        out: dict[str, list[tuple[int, str]]] = {}
        chunk = step * _MAX_POINTS
        at = start
        while at <= end:
            last = min(end, at + chunk - step)
            query = urllib.parse.urlencode(
                {"query": expr, "start": at, "end": last, "step": step, "timeout": "600s"}
            )
            url = f"{self.url}/api/v1/query_range?{query}"
            with urllib.request.urlopen(url, timeout=900) as response:  # noqa: S310 (loopback)
                body: dict[str, Any] = json.load(response)
            for series in body["data"]["result"]:
                labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
                name = _labels(tuple((k, _escape(v)) for k, v in labels.items()))
                out.setdefault(name, []).extend((int(float(t)), v) for t, v in series["values"])
            at = last + step
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def backfill_rules(
    prometheus: Prometheus, rules: RuleFiles, work: Path, start: int, end: int, steps: dict[str, int]
) -> int:
    """Record every recording rule over [start, end] at its group's step, level by level; the samples.

    Each rule's expression is evaluated by the server (`query_range`: the instant queries its rule
    evaluations would have run, at the same times) and its series are written back as blocks under the
    rule's name (`promtool tsdb create-blocks-from openmetrics`), then the server restarts to read them
    before the next level, whose rules read these records. (`promtool tsdb create-blocks-from rules` does
    the same, a 2-hour block at a time: slower by far over months.)
    """
    # Only what the alerts read: records read by annotations alone (shift-share) change no episode.
    needed = rules.needed_records()
    levels: list[list[tuple[str, dict[str, str]]]] = []
    for group in steps:
        for n, group_level in enumerate(rules.levels(group)):
            while len(levels) <= n:
                levels.append([])
            levels[n].extend((group, rule) for rule in group_level if rule["record"] in needed)
    samples = 0
    for n, level in enumerate(levels):
        days: dict[int, DayFile] = {}
        for group, rule in level:
            step = steps[group]
            for labels, values in prometheus.query_range(rule["expr"], start, end, step).items():
                for stamp, value in values:
                    day = days.get(stamp // DAY_S)
                    if day is None:
                        day = days[stamp // DAY_S] = DayFile()
                    day.add(rule["record"], "gauge", rule["record"], labels, stamp, value)
        path = work / f"rules-{n}.om"
        with path.open("w", encoding="utf-8") as out:
            for _, day_file in sorted(days.items()):
                samples += day_file.append_to(out)
            out.write(EOF)
        prometheus.stop()
        import_blocks([path], prometheus.data_dir)
        prometheus.start()
    return samples


def import_blocks(paths: Sequence[Path], data_dir: Path) -> None:
    """`promtool tsdb create-blocks-from openmetrics` for each file, into `data_dir`."""
    for path in paths:
        command = [binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", "--quiet"]
        # Large blocks: the default is 2 hours, hundreds of blocks for Prometheus to open and merge at each
        # query; and promtool parses the whole file once per block (it holds the file in memory either way).
        command.append(f"--max-block-duration={BLOCK_DAYS * 24}h")
        _run([*command, str(path), str(data_dir)], timeout=1800)


# ---------------------------------------------------------------------------------------------------------
# Episodes


@dataclass(frozen=True)
class Episode:
    """An alert firing on one series from `start` to `end` (Unix seconds)."""

    alert: str
    severity: str
    series: str
    start: int
    end: int


def episodes(alert: AlertRule, series: dict[str, list[int]], step: int) -> list[Episode]:
    """The firing episodes of `alert` from the timestamps where its expression held, seen every `step`.

    A value seen at t holds until t + step (the inputs hold between samples); Prometheus, evaluating every
    `EVAL_S`, sees a run of consecutive steps t_a .. t_b hold from t_a to its last evaluation before
    t_b + step, and opens the alert once it held `for`: at t_a + for, if t_b + step - EVAL_S >= t_a + for.
    With `keep_firing_for`, a firing alert whose condition stops holding keeps firing until that long after
    the first evaluation without it; a run that starts before then continues the same episode (however
    short: the alert is firing, no `for` counts).
    """
    out: list[Episode] = []
    for name, stamps in series.items():
        stamps = sorted(set(stamps))
        firing: Episode | None = None
        i = 0
        while i < len(stamps):
            j = i
            while j + 1 < len(stamps) and stamps[j + 1] - stamps[j] == step:
                j += 1
            first, last = stamps[i], stamps[j] + step - EVAL_S
            if firing is not None and first - firing.end < alert.keep_s:
                # firing.end is the first evaluation without the condition (the last one with it + EVAL_S).
                firing = replace(firing, end=last + EVAL_S)
            else:
                if firing is not None:
                    out.append(replace(firing, end=firing.end + alert.keep_s))
                firing = None
                if last - first >= alert.for_s:
                    firing = Episode(alert.name, alert.severity, name, first + alert.for_s, last + EVAL_S)
            i = j + 1
        if firing is not None:
            out.append(replace(firing, end=firing.end + alert.keep_s))
    return out


# ---------------------------------------------------------------------------------------------------------
# The whole back-test


@dataclass
class Result:
    """Episodes of every alert over a replayed history."""

    replay: Replay
    episodes: list[Episode]
    alerts: list[AlertRule]
    timings: dict[str, float]

    @property
    def days(self) -> float:
        """Days evaluated."""
        return (self.replay.end_s - self.replay.first_s) / DAY_S

    def count(self, severity: str, group_prefix: str = "", after_s: int = 0) -> int:
        """Episodes of the alerts of `severity` (and groups starting with `group_prefix`)."""
        groups = {a.name: a.group for a in self.alerts}
        return sum(
            1
            for e in self.episodes
            if e.severity == severity and groups[e.alert].startswith(group_prefix) and e.start >= after_s
        )

    def per_30_days(self, count: int) -> float:
        """A count as a rate per 30 days of evaluated history."""
        return count * 30 / self.days

    def first_opened(self, alert: str, after_s: int, series_contains: str = "") -> int | None:
        """When `alert` first opened at or after `after_s` (on a series whose labels contain the text)."""
        starts = [
            e.start
            for e in self.episodes
            if e.alert == alert and e.start >= after_s and series_contains in e.series
        ]
        return min(starts, default=None)


def run(
    config: BatchConfig,
    work: Path,
    *,
    rules_dir: Path = RULES_DIR,
    targets_file: Path = TARGETS_FILE,
    kpi_step: int = 3600,
    scrape_step: int = EVAL_S,
    log: Any = None,
) -> Result:
    """Simulate, replay, load into Prometheus, backfill the recording rules, evaluate every alert."""
    say = log or (lambda text: None)
    timings: dict[str, float] = {}
    started = time.monotonic()
    # The pipeline's rules read counters scraped every minute; the others, KPI gauges.
    loaded = RuleFiles.load(rules_dir)
    steps = {group: EVAL_S if "pipeline" in group else kpi_step for group in loaded.recording}
    rules = loaded.inlined({group for group, step in steps.items() if step == EVAL_S})
    history = replay(
        config,
        work / "openmetrics",
        targets=load_targets(targets_file),
        metrics=rules.raw_metrics(),
        kpi_step=kpi_step,
        scrape_step=scrape_step,
        previous_day=any('day="previous"' in alert.expr for alert in rules.alerts),
    )
    timings["replay"] = time.monotonic() - started
    say(
        f"replayed {history.messages:,} messages into {history.samples:,} samples ({timings['replay']:.0f} s)"
    )
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    import_blocks(history.files, data)
    timings["blocks"] = time.monotonic() - started
    say(f"promtool: {history.samples:,} samples into blocks ({timings['blocks']:.0f} s)")
    prometheus = Prometheus(data, work)
    prometheus.start()
    try:
        started = time.monotonic()
        backfill_rules(prometheus, rules, work, history.first_s, history.end_s, steps)
        timings["recording rules"] = time.monotonic() - started
        say(f"recording rules backfilled ({timings['recording rules']:.0f} s)")
        started = time.monotonic()
        found: list[Episode] = []
        for alert in rules.modelled():
            step = EVAL_S if alert.group.endswith("pipeline") else kpi_step
            series = prometheus.query_range(alert.expr, history.first_s, history.end_s, step)
            stamps = {name: [stamp for stamp, _ in values] for name, values in series.items()}
            found.extend(episodes(alert, stamps, step))
        timings["alerts"] = time.monotonic() - started
        say(f"{len(rules.modelled())} alerts evaluated ({timings['alerts']:.0f} s)")
    finally:
        prometheus.stop()
    return Result(history, found, loaded.alerts, timings)


def summary(result: Result, change_s: int | None = None) -> str:
    """A table of episodes per alert, and their rate per 30 days."""
    by_alert = Counter(e.alert for e in result.episodes)
    lines = [
        f"{result.days:.0f} days, {len(result.replay.segments)} segments (dimension/segment pairs),"
        f" {result.replay.messages:,} messages",
        f"{'alert':42} {'severity':9} {'episodes':>8} {'per 30 d':>8}",
    ]
    for alert in result.alerts:
        if alert.name in NOT_MODELLED:
            lines.append(f"{alert.name:42} {alert.severity:9} {'not modelled':>17}")
            continue
        n = by_alert.get(alert.name, 0)
        lines.append(f"{alert.name:42} {alert.severity:9} {n:8d} {result.per_30_days(n):8.2f}")
    if change_s is not None:
        lines.append(f"change at {datetime.fromtimestamp(change_s, UTC):%Y-%m-%d %H:%M} UTC")
        for name in sorted(by_alert):
            opened = result.first_opened(name, change_s)
            if opened is not None:
                lines.append(f"  {name} opened {(opened - change_s) / 3600:.1f} h after the change")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The false-page budget (issue #18): days with no true change, then true changes


#: Days with no true change at the start of the budget's history (the issue: 90).
NO_CHANGE_DAYS = 90
#: Days of true changes after them: the churn wave needs 30 days to reach a 30-day churn rate.
CHANGE_DAYS = 40
#: Page-severity episodes per 30 days without a true change, at most (the issue's budget).
PAGE_BUDGET = 1.0
#: Ticket-level KPI episodes (`warning`, engagement and satisfaction) per 30 days without a true change, at
#: most: one a fortnight, what a product team reads and acts on without learning to ignore it.
TICKET_BUDGET = 2.0
#: The rule groups of the KPI alerts (what product people get).
KPI_GROUPS = ("kpimon-engagement", "kpimon-satisfaction")
_HOUR = 3600


@dataclass(frozen=True)
class Change:
    """A true change of the budget's history and the alerts that must see it, each within its bound.

    `bounds`: alert -> seconds from the change's start (00:00 UTC of its first day) within which it must
    open on the whole population (`dimension="all"`); None: reported, not required.
    """

    scenario: str
    bounds: dict[str, int | None]


#: The changes, after the quiet days, on the whole population (a 10 % plan for the churn wave). Why these
#: bounds (docs/alerts.md, "The false-page budget"): one day of an NPS drop moves the 7-day NPS by a seventh
#: of it, within its interval, so NPS needs one to two days; DAU is the partial day against the 4-week median
#: (the median's 100-user guard passes once the morning's traffic is in); a user counts as churned after 30
#: days without activity (the 30d window), so no churn alert can open before 30 days, and the 30-day churn of
#: all users stays within the interval of its 5 % target when 10 % of them leave (ChurnAboveTarget: not
#: required).
CHANGES = (
    Change(
        f"nps-drop:all@{CHANGE_DAYS}",
        {"KpimonNpsBelowTarget": 48 * _HOUR, "KpimonNpsDroppedWeekOverWeek": 72 * _HOUR},
    ),
    Change(f"dau-drop:all@{CHANGE_DAYS - 10}", {"KpimonDauDroppedWeekOverWeek": 24 * _HOUR}),
    Change(
        f"churn-wave:plan=team@{CHANGE_DAYS}",
        {"KpimonChurnRoseWeekOverWeek": 36 * DAY_S, "KpimonChurnAboveTarget": None},
    ),
)


def budget_config(
    *, users: int, seed: int, end_day: int, no_change_days: int = NO_CHANGE_DAYS, plan_tiers: int = 2
) -> BatchConfig:
    """The budget's history: `no_change_days` days with no true change, then `CHANGES` over `CHANGE_DAYS`.

    Two price tiers per plan (`plan_tiers`) give 22 segments (dimension/segment pairs) instead of 19.
    """
    config = BatchConfig(
        users=users,
        days=no_change_days + CHANGE_DAYS,
        end_day=end_day,
        now_ms=(end_day + 1) * DAY_MS,
        seed=seed,
        scenarios=tuple(Scenario.parse(change.scenario) for change in CHANGES),
        plan_tiers=plan_tiers,
    )
    config.check()
    return config


def change_start(scenario: str, end_day: int) -> int:
    """The Unix time a scenario of the history starts (00:00 UTC of its first day)."""
    first, _ = Scenario.parse(scenario).period(end_day, 0, None)
    return first * DAY_S


@dataclass
class Budget:
    """The budget's figures of one back-test: episodes without a true change, detection times."""

    no_change_days: int
    #: Page-severity (`critical`) episodes opened in the days without a true change.
    pages: list[Episode]
    #: Ticket-level KPI episodes (`warning`, `KPI_GROUPS`) opened in those days.
    tickets: list[Episode]
    #: scenario -> alert -> seconds from the change's start to the alert's first opening on all/all, or None.
    detection: dict[str, dict[str, int | None]]

    def rate(self, episodes: list[Episode]) -> float:
        """Episodes per 30 days of the days without a true change."""
        return len(episodes) * 30 / self.no_change_days

    def misses(self) -> list[str]:
        """What is not met: the page budget, and each required alert not opening within its bound."""
        out = []
        if self.rate(self.pages) > PAGE_BUDGET:
            out.append(f"{self.rate(self.pages):.2f} pages per 30 days (budget {PAGE_BUDGET:g})")
        for change in CHANGES:
            for alert, bound in change.bounds.items():
                opened = self.detection[change.scenario][alert]
                if bound is not None and (opened is None or opened > bound):
                    shown = "never" if opened is None else f"after {opened / _HOUR:.1f} h"
                    out.append(f"{change.scenario}: {alert} opened {shown} (bound {bound / _HOUR:g} h)")
        return out


def measure(result: Result, end_day: int, no_change_days: int = NO_CHANGE_DAYS) -> Budget:
    """The budget's figures of a back-test of `budget_config`'s history."""
    quiet_end = result.replay.first_s + no_change_days * DAY_S
    groups = {alert.name: alert.group for alert in result.alerts}
    before = [e for e in result.episodes if e.start < quiet_end]
    detection: dict[str, dict[str, int | None]] = {}
    for change in CHANGES:
        start = change_start(change.scenario, end_day)
        opened = {alert: result.first_opened(alert, start, 'dimension="all"') for alert in change.bounds}
        detection[change.scenario] = {a: None if t is None else t - start for a, t in opened.items()}
    return Budget(
        no_change_days,
        [e for e in before if e.severity == "critical"],
        [e for e in before if e.severity == "warning" and groups[e.alert] in KPI_GROUPS],
        detection,
    )


def budget_report(budget: Budget) -> str:
    """The budget's figures as the test and `make alert-budget` print them."""
    pages, tickets = Counter(e.alert for e in budget.pages), Counter(e.alert for e in budget.tickets)
    lines = [
        f"no true change, {budget.no_change_days} days:",
        f"  pages (critical): {len(budget.pages)} episodes, {budget.rate(budget.pages):.2f} per 30 days"
        f" (budget {PAGE_BUDGET:g}) {dict(pages)}",
        f"  KPI tickets (warning): {len(budget.tickets)} episodes, {budget.rate(budget.tickets):.2f} per 30"
        f" days (budget {TICKET_BUDGET:g}) {dict(tickets)}",
        "true changes, first opening on all/all after the change's start:",
    ]
    for change in CHANGES:
        for alert, bound in change.bounds.items():
            opened = budget.detection[change.scenario][alert]
            shown = "never" if opened is None else f"{opened / _HOUR:.1f} h"
            limit = "not required" if bound is None else f"bound {bound / _HOUR:g} h"
            lines.append(f"  {change.scenario:28} {alert:30} {shown:>8} ({limit})")
    misses = budget.misses()
    lines.append("budget met, every change in time" if not misses else "NOT MET: " + "; ".join(misses))
    return "\n".join(lines)


def write_rules(config: MonitoringConfig, directory: Path) -> None:
    """The rule files the generator writes for `config` (what `make generate` writes for DEFAULT)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, document in prometheus_rule_files(config).items():
        (directory / name).write_text(to_yaml(document, GENERATED))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m monitoring.backtest`: back-test the generated alert rules on a simulated history.

    Without `--scenario`, the budget's history (`budget_config`): `--days` days with no true change, then the
    true changes (`CHANGES`); it prints the budget's figures and exits 1 when the budget or a detection bound
    is not met. With `--scenario`, `--days` days with those scenarios, and the episodes only.
    """
    parser = argparse.ArgumentParser(prog="python -m monitoring.backtest", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument(
        "--days",
        type=int,
        default=NO_CHANGE_DAYS,
        help=f"days with no true change (then {CHANGE_DAYS} days of true changes); with --scenario, all days",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--end-day", default="2026-11-29", help="last simulated day, YYYY-MM-DD")
    parser.add_argument("--scenario", action="append", default=[], help="as `kpimon simulate --scenario`")
    parser.add_argument("--plan-tiers", type=int, default=2, help="as `kpimon simulate --plan-tiers`")
    parser.add_argument("--kpi-step", type=int, default=3600, help="seconds between KPI snapshots")
    parser.add_argument("--rules-dir", type=Path, default=RULES_DIR, help="the rule files to evaluate")
    parser.add_argument(
        "--kpi-alert-selector",
        help="evaluate rules generated (monitoring/generate.py) with this kpi_alert_selector instead, e.g."
        " 'dimension=~\".+\"' for every segment",
    )
    parser.add_argument("--targets", type=Path, default=TARGETS_FILE)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (blocks, files)")
    parser.add_argument("--json", type=Path, help="write every episode here as JSON")
    args = parser.parse_args(argv)
    end_day = (date.fromisoformat(args.end_day) - date(1970, 1, 1)).days
    if args.scenario:
        config = BatchConfig(
            users=args.users,
            days=args.days,
            end_day=end_day,
            now_ms=(end_day + 1) * DAY_MS,
            seed=args.seed,
            scenarios=tuple(Scenario.parse(s) for s in args.scenario),
            plan_tiers=args.plan_tiers,
        )
        config.check()
    else:
        config = budget_config(
            users=args.users,
            seed=args.seed,
            end_day=end_day,
            no_change_days=args.days,
            plan_tiers=args.plan_tiers,
        )
    with tempfile.TemporaryDirectory(prefix="kpimon-backtest-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        rules_dir = args.rules_dir
        if args.kpi_alert_selector is not None:
            rules_dir = work / "rules"
            write_rules(replace(DEFAULT, kpi_alert_selector=args.kpi_alert_selector), rules_dir)
        result = run(
            config,
            work,
            rules_dir=rules_dir,
            targets_file=args.targets,
            kpi_step=args.kpi_step,
            log=lambda text: print(text, file=sys.stderr),
        )
    print(summary(result))
    if args.json:
        args.json.write_text(json.dumps([e.__dict__ for e in result.episodes], indent=1))
    if args.scenario:
        return 0
    budget = measure(result, end_day, args.days)
    print(budget_report(budget))
    return 1 if budget.misses() else 0


if __name__ == "__main__":
    sys.exit(main())
