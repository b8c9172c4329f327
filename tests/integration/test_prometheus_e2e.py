"""End to end with a real Prometheus: simulator -> Kafka -> worker -> Prometheus -> dashboards and alerts.

Nothing is mocked. `kpimon simulate` writes three weeks of traffic with two named scenarios over the last 7
days (exactly the 7d window): a true NPS drop on android (`nps-drop:android`, ~30 answers a week) and a drop
of the same size seen through only 5 answers on ios (`nps-noise:ios`: what chance does to a small segment).
`kpimon replay` sends it through the session's real Kafka, a real `kpimon worker` computes the KPIs,
and Debian's `prometheus` scrapes the worker every second and evaluates the project's generated recording
and alert rules every second. The rules are the committed ones rendered from a `MonitoringConfig` that
differs from the default only by configuration: short `for` durations and intervals
(`monitoring.accelerated`), the alert selector widened to the platform segments, a smaller minimum NPS
sample (three weeks of 2,500 users give about 20-35 NPS answers per platform and week), and a test targets
file whose NPS target separates the dropped segment from the healthy ones: derived from the reference (the
history ends at the wall clock and differs with the hour), just above the dropped segment's interval.

History: the week-over-week rules (`offset 7d`) need what Prometheus held a week ago, which a test that
lasts minutes cannot have scraped. It is backfilled, honestly: `kpimon reference` (the independent batch
computation that the stream equals exactly, see test_equality.py) computes the KPIs of the same files as
they stood at NOW - 7 days (`--now` then: later events are "in the future" and not counted), and those
values become the recorded `dimension_segment:*:max` series around NOW - 7 days, written into the tmp
storage with `promtool tsdb create-blocks-from openmetrics` before Prometheus starts. (The one liberty: an
event delivered late, after NOW - 7 days, but with an earlier event time, is counted in that history.)

Expected alerts are not hard-coded: they are derived from the reference's values by the alert's own
condition, so the test checks Prometheus' verdict, not the simulator's luck; the test also requires that
the dropped segment is among them and that a segment with enough answers stays healthy. The noisy segment
must swing as much as the dropped one (so its silence is not for lack of a change) and never be pending or
firing in Prometheus once the KPIs are final (during the replay the worker's current day walks through
the history: its transient values are no scenario). Every dashboard query runs against the same
Prometheus, and each interval band's three queries must return one series each, the KPI inside its bounds.

Shift-share: Prometheus' split of the all/all week-over-week change into each segment's rate and mix effect
(monitoring/shiftshare.py) equals the same math on the reference's KPIs, and the all/all alert's `drivers`
annotation names android for the platforms (that android carries at least 80 % of the change is measured on a
fixed history with nps-drop:android alone: tests/unit/test_shiftshare_scenario.py).

Alertmanager: a real `prometheus-alertmanager` with the generated config (on a fast clock) receives the
alerts and notifies a webhook receiver on loopback. The nps-drop and churn-wave (`churn-wave:pro`, churn
alerted on 7 days here) alerts must arrive at the product team's ticket receiver, grouped by alert and
segment, with their value, interval, target, runbook and dashboard links; then a second, idle scrape target
stops (a worker down): `KpimonWorkerDown` reaches the data platform team while the KPI alerts, still firing
in Prometheus, are inhibited and stop reaching anyone.

Retention and churn by NPS group (issue #17): a second replay, the same three weeks (same options, same
NOW) with `retention-drop:free` and `detractor-churn:all` added, goes first through its own worker into its
own Prometheus with the same rules (its tests form a class: both stop before the first replay starts).
There KpimonRetentionBelowTarget fires for the free cohort (D7 retention of the newest cohort measured on
a whole day, 29-34 new users, 0; target 20 %, minimum cohort 20) and KpimonDetractorsChurnMore fires (7d
churn by NPS group, as churn here, bases of at least 8); on the first replay, the history without those two
scenarios, both stay quiet with their guards met, unless the reference says that chance alone separates
detractors' from promoters' churn there (see the quiet test).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kpimon.agents.exporter.kpi_collector import COHORT, KPI_METRICS, gauge_day
from kpimon.reference.compare import parse_records
from kpimon.simulator.model import NPS_NOISE_ANSWERS
from kpimon.streams.catalogue import CATALOGUE
from kpimon.streams.output import KpiRecord, day_number
from monitoring.accelerated import accelerated
from monitoring.config import DEFAULT, AlertRouting, MonitoringConfig
from monitoring.dashboards import bands, panel_queries, variable_queries
from monitoring.promql import substitute_variables
from monitoring.rules import RecordingRule, kpi, recording_rules
from monitoring.shiftshare import WEIGHTS, Segment, decompose, mix_effect, overlap_effect, rate_effect, share
from tests.alertmanager import (
    AlertmanagerServer,
    Notification,
    WebhookReceiver,
    running_alertmanager,
    running_webhook,
)
from tests.alertmanager import write_config as write_alertmanager_config
from tests.helpers import KPIMON, free_port, poll
from tests.prometheus import (
    PrometheusServer,
    Series,
    backfill,
    check_config,
    finite,
    running_prometheus,
    write_setup,
)
from tests.workers import WorkerProcess, running_worker

# About 78,000 messages a replay, two replays: 2 to 3 minutes each on a loaded 2-core machine (the module
# took 5 min 31 s; 2 min 26 s with the first replay alone).
pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

# 2,500 users give the dropped segment about 20 NPS answers a week, well above the alert minimum of 10
# whatever the hour (with 1,500 it hovered around 10 and the prediction could exclude it).
USERS, DAYS, SEED = 2500, 21, 3
LATENESS_DAYS = 30
DROPPED = ("platform", "android")  # --scenario nps-drop:android
NOISY = ("platform", "ios")  # --scenario nps-noise:ios
WAVE = ("plan", "pro")  # --scenario churn-wave:pro (not free: most users, and most of android's answers)
SCENARIOS = ("nps-drop:android", "nps-noise:ios", "churn-wave:pro")
NPS_ALERTS = ("KpimonNpsBelowTarget", "KpimonNpsDroppedWeekOverWeek")
ALERTED_DIMENSIONS = ("all", "platform", "plan")
#: Churn is alerted on its 7d window here: 21 days of history have no 30d churn base (users active in
#: [d-59, d-30]); the 7d base is [d-13, d-7], which the 10-day churn wave empties into [d-6, d].
CHURN_WINDOW = "7d"
#: Alertmanager on a fast clock: a new group notifies after 1 s, a changed one after 2 s, an unchanged one
#: every 4 s (so that a notification held back by an inhibition is a notification missing).
ROUTING = AlertRouting(
    group_wait="1s",
    page_group_wait="1s",
    group_interval="2s",
    page_repeat="4s",
    ticket_repeat="4s",
    info_repeat="4s",
)
REPEAT_S = 4.0
MIN_RESPONSES = 10
#: Every alert's `for` and `keep_firing_for` (monitoring.accelerated), and Prometheus' evaluation interval.
FOR_S, EVALUATION_S = 3, 1
FOR = f"{FOR_S}s"
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
#: The validator accepts events up to 5 minutes ahead of its clock; the "week ago" reference runs its clock
#: that much earlier, so exactly the events up to NOW - 7 days count.
FUTURE_SLACK_MS = 300_000
#: Backfilled history covers NOW - 7d - 10 min .. NOW - 7d + 2 h, a sample a minute (`offset 7d` looks
#: back up to 5 minutes from its point). The module takes 5-6 minutes, but NOW is set before the retention
#: replay, and on a machine loaded 10-15 times over every phase stretches: past NOW + 35 min every
#: week-over-week series would vanish. 2 hours is 120 samples more per series, seconds of promtool.
BACKFILL_STEP_S, BACKFILL_BEFORE_S, BACKFILL_AFTER_S = 60, 600, 7200
TOLERANCE = 1e-9

#: The retention and detractor-churn alerts (issue #17) fire on a second replay, `retention_stack`: the
#: same three weeks (same options and NOW) with these two scenarios added, so that `stack` is the same
#: history without them, where both alerts must stay quiet.
RETENTION_SCENARIOS = ("retention-drop:free", "detractor-churn:all")
#: retention-drop:free: free is the one segment whose daily cohort is large at this size (29-34 of the
#: 47-50 new users of the cohort KpimonRetentionBelowTarget reads; each platform 12-19, each other plan 2-13).
RETENTION_DROPPED = ("plan", "free")
#: The alert's minimum cohort here: the default of 30 is for a real population, and free's cohort is 29-34.
RETENTION_MIN_COHORT = 20
#: The alert reads the newest cohort measured on a whole day (`day="previous"`). Measured with the reference
#: at 24 instants (2026-11-20 to 12-13, a different hour each): healthy, its 95 % upper bound is 0.27-0.55 for
#: the whole day's cohort and 0.40-0.68 for free's; with retention-drop:free, free keeps nobody (upper bound
#: 3.84 / (n + 3.84) = 0.10-0.11) and the whole day's cohort 0.07-0.16.
RETENTION_TARGET = 0.20
#: Three weeks of 2,500 users have 9-25 detractors and 29-54 promoters in a 7d churn base (30 simulated dates;
#: with detractor-churn 11-27 detractors): the default minimum of 30 is for the 30d base of a real
#: population. Churn by NPS group is alerted on 7 days, as churn.
NPS_GROUP_MIN_BASE = 8
RETENTION_ALERTS = ("KpimonRetentionBelowTarget", "KpimonDetractorsChurnMore")

#: deploy/targets.example.toml with an NPS target that the test data straddles (`scenario_nps_target`), and
#: the NPS and CSAT targets on both windows, so the satisfaction panels draw a target line whichever window
#: is chosen.
TARGETS_TOML = f"""\
[targets.nps]
min = {{nps_target}}

[targets.csat]
min = 0.8

[targets.churn_rate]
max = {{churn_target}}
window = "{CHURN_WINDOW}"

[targets.stickiness]
min = 0.2

[targets.retention_rate]
min = {RETENTION_TARGET}
window = "7d"
"""

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


def monitoring_config(
    worker_port: int, idle_worker_port: int, alertmanager: str, webhook_url: str
) -> MonitoringConfig:
    """The project's monitoring, for this test: the worker and an idle second one (see `IdleWorker`),
    platform and plan alerts, small samples, churn on 7 days, short `for`, Alertmanager on a fast clock."""
    alert_selector = f'dimension=~"{"|".join(ALERTED_DIMENSIONS)}"'
    config = replace(
        DEFAULT,
        worker_targets=(f"127.0.0.1:{worker_port}", f"127.0.0.1:{idle_worker_port}"),
        kpi_alert_selector=alert_selector,
        satisfaction=replace(DEFAULT.satisfaction, min_responses=MIN_RESPONSES),
        churn=replace(DEFAULT.churn, window=CHURN_WINDOW),
        retention=replace(
            DEFAULT.retention,
            min_cohort_users=RETENTION_MIN_COHORT,
            nps_churn_window=CHURN_WINDOW,
            nps_churn_min_base_users=NPS_GROUP_MIN_BASE,
        ),
        alertmanager_targets=(alertmanager,),
        alert_webhook_url=webhook_url,
        routing=ROUTING,
    )
    return accelerated(config, for_duration=FOR, scrape_interval="1s", evaluation_interval=f"{EVALUATION_S}s")


def kpimon(*args: str, timeout: float = 300) -> None:
    """Run a `kpimon` command; fail with its stderr."""
    result = subprocess.run([KPIMON, *args], capture_output=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]


def recorded_kpis(records: list[KpiRecord]) -> dict[SeriesKey, float]:
    """The `dimension_segment:<gauge>:max` series (name, labels) -> value that `records` imply.

    As the worker exports them (exporter/kpi_collector.py): the newest day of the records is `current`, the
    day before `previous` (for retention: of the day its cohort matured, with the cohort size from the
    rate's denominator); undefined values are no series. The recording rule only drops job and instance.
    """
    current = max(day_number(r.day) for r in records)
    out: dict[SeriesKey, float] = {}
    for record in records:
        spec = KPI_METRICS.get(record.kpi)
        day = gauge_day(record, current)
        if spec is None or day is None:
            continue
        labels = {
            "window": record.window,
            "day": day,
            "dimension": record.dimension,
            "segment": record.segment,
        }
        if record.value is not None:
            out[(kpi(spec.metric), frozenset({**dict(spec.extra_labels), **labels}.items()))] = float(
                record.value
            )
        if record.kpi == "retention_rate" and record.denominator is not None:
            out[(kpi(COHORT.metric), frozenset(labels.items()))] = float(record.denominator)
    return out


def recorded_intervals(records: list[KpiRecord]) -> dict[SeriesKey, float]:
    """The `dimension_segment:kpimon_kpi_ci_{low,high}:max{kpi,...}` series that `records` imply."""
    current = max(day_number(r.day) for r in records)
    out: dict[SeriesKey, float] = {}
    for record in records:
        day = gauge_day(record, current)
        if record.kpi not in KPI_METRICS or day is None or record.ci_low is None or record.ci_high is None:
            continue
        labels = frozenset(
            {
                "kpi": record.kpi,
                "window": record.window,
                "day": day,
                "dimension": record.dimension,
                "segment": record.segment,
            }.items()
        )
        out[(kpi("kpimon_kpi_ci_low"), labels)] = float(record.ci_low)
        out[(kpi("kpimon_kpi_ci_high"), labels)] = float(record.ci_high)
    return out


def current_intervals(
    records: list[KpiRecord], name: str, window: str
) -> dict[tuple[str, str], tuple[float, float]]:
    """(dimension, segment) -> (ci_low, ci_high) of KPI `name` in `window` on the newest day of `records`."""
    current = max(day_number(r.day) for r in records)
    return {
        (r.dimension, r.segment): (float(r.ci_low), float(r.ci_high))
        for r in records
        if r.kpi == name
        and r.window == window
        and day_number(r.day) == current
        and r.ci_low is not None
        and r.ci_high is not None
    }


def current_values(records: list[KpiRecord], name: str, window: str) -> dict[tuple[str, str], float | None]:
    """(dimension, segment) -> value of KPI `name` in `window` on the newest day of `records`."""
    current = max(day_number(r.day) for r in records)
    return {
        (r.dimension, r.segment): (None if r.value is None else float(r.value))
        for r in records
        if r.kpi == name and r.window == window and day_number(r.day) == current
    }


class IdleWorker:
    """A second scrape target that serves an empty /metrics: a worker that owns no partition.

    Stopping it is the simulated pipeline outage: `up` of that worker falls to 0 and `KpimonWorkerDown`
    fires, while the real worker keeps exporting its KPIs and Prometheus keeps their alerts firing, so the
    only thing that can keep the KPI alerts from people is Alertmanager's inhibition.
    """

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the port (connections are refused from now on)."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(10)


@dataclass
class Stack:
    """The running pipeline and what the reference says about its input."""

    prometheus: PrometheusServer
    worker: WorkerProcess
    config: MonitoringConfig
    messages: int
    now: list[KpiRecord]  # the reference at NOW: what the stream must end with
    week_ago: list[KpiRecord]  # the reference at NOW - 7 days: the backfilled history
    alertmanager: AlertmanagerServer
    webhook: WebhookReceiver
    idle_worker: IdleWorker
    churn_target: float
    nps_target: float
    settled_at: float  # time.time() once Prometheus held the final KPIs (the replay's transients over)


def _simulate(sim: Path, now_ms: int, scenarios: tuple[str, ...]) -> int:
    """Simulate the test's three weeks up to `now_ms` with `scenarios` into `sim`; the message count."""
    kpimon(
        "simulate",
        *("--users", str(USERS), "--days", str(DAYS), "--seed", str(SEED), "--now", str(now_ms)),
        *("--no-signup-fraction", "0", "--out-dir", str(sim)),
        *(arg for scenario in scenarios for arg in ("--scenario", scenario)),
    )
    return sum((sim / name).read_bytes().count(b"\n") for name in ("clicks.jsonl", "surveys.jsonl"))


def _replay_and_settle(
    prometheus: PrometheusServer,
    worker: WorkerProcess,
    config: MonitoringConfig,
    sim: Path,
    bootstrap: str,
    prefix: str,
    messages: int,
    reference_now: list[KpiRecord],
) -> float:
    """Replay `sim` through the worker; the time when Prometheus holds the reference's final KPIs."""
    kpimon(
        "replay",
        *("--clicks", str(sim / "clicks.jsonl"), "--surveys", str(sim / "surveys.jsonl")),
        *("--broker", bootstrap, "--topic-prefix", prefix, "--quiet"),
    )

    def processed() -> float:
        assert worker.proc.poll() is None, f"worker exited:\n{worker.log_tail()}"
        found = prometheus.values(f'sum(kpimon_events_total{{job="{config.job}"}})')
        return next(iter(found.values()), 0.0)

    # Counted by the worker, scraped by Prometheus: every message once.
    try:
        poll(processed, lambda n: n >= messages, timeout=300, interval=2, message=f"{messages} processed")
    except AssertionError as exc:
        logs = f"worker:\n{worker.log_tail()}\nprometheus:\n{prometheus.log_tail()}"
        raise AssertionError(f"{exc}\n{logs}") from None
    assert processed() == messages
    # While the replay runs, the worker's "current" day walks through the history, and its 7d values are
    # compared with the backfilled NOW - 7 days: transient alerts of no meaning. From here on the KPIs
    # are the final ones (as the reference has them, once scraped and recorded).
    expected = recorded_kpis(reference_now)
    poll(
        lambda: differences(expected, prometheus_kpis(prometheus)),
        lambda diff: not diff,
        timeout=120,
        message="recorded KPI series equal to the reference",
    )
    return time.time()


def _reference(sim: Path, now_ms: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            KPIMON,
            "reference",
            "--clicks",
            str(sim / "clicks.jsonl"),
            "--surveys",
            str(sim / "surveys.jsonl"),
            "--now",
            str(now_ms),
            "--max-lateness-days",
            str(LATENESS_DAYS),
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes], out: Path) -> list[KpiRecord]:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return parse_records(out.read_bytes())


def churn_records(records: list[KpiRecord]) -> dict[tuple[str, str], KpiRecord]:
    """(dimension, segment) -> the 7d churn record of the newest day."""
    current = max(day_number(r.day) for r in records)
    return {
        (r.dimension, r.segment): r
        for r in records
        if r.kpi == "churn_rate" and r.window == CHURN_WINDOW and day_number(r.day) == current
    }


def wave_churn_target(records: list[KpiRecord]) -> float:
    """A churn target just below the wave segment's 95 % lower bound (so it alerts): the scenario must
    have made the wave segment's churn the highest of the other plans, by more than chance. (`unknown`, events
    sent without a plan, is left out: it holds users of every plan, some caught by the wave.)"""
    churn = churn_records(records)
    wave = churn[WAVE]
    others = [churn[(WAVE[0], plan)] for plan in ("free", "team")]
    assert wave.ci_low is not None and others, churn
    highest = max(r.ci_high or 0.0 for r in others)
    assert wave.ci_low > highest, f"churn-wave:{WAVE[1]} is not above the other plans: {wave} {others}"
    return round(wave.ci_low - 0.01, 4)


def scenario_nps_target(records: list[KpiRecord]) -> float:
    """An NPS target 5 points above both the dropped segment's 95 % upper bound (so that its below-target
    alert fires) and the noisy segment's value (below target on a handful of answers, where only the minimum
    sample keeps the alerts quiet); in whole points, so that the annotations print it exactly.

    From the reference, as the churn target: the history ends at the wall clock and the simulator draws each
    day by its date, so one fixed target did not hold at every hour (android's upper bound ranged from -70
    to -12 over 46 instants of two weeks; with a fixed -20 the alert rightly stayed quiet at one of them).
    Whether healthy segments stay above it is the tests' own question.
    """
    upper = current_intervals(records, "nps", "7d")[DROPPED][1]
    noisy = current_values(records, "nps", "7d")[NOISY]
    assert noisy is not None, "nps-noise:ios left no 7d NPS for ios"
    return float(math.floor(max(upper, noisy)) + 5)


def _backfill_history(storage: Path, week_ago: list[KpiRecord], now_ms: int, work: Path) -> None:
    """The recorded KPI series as Prometheus would have held them around NOW - 7 days."""
    centre = (now_ms - WEEK_MS) / 1000
    steps = range(-BACKFILL_BEFORE_S, BACKFILL_AFTER_S + 1, BACKFILL_STEP_S)
    history = {**recorded_kpis(week_ago), **recorded_intervals(week_ago)}
    series = [Series(name, dict(labels), value) for (name, labels), value in history.items()]
    backfill(storage, series, [centre + s for s in steps], work)


@pytest.fixture(scope="module")
def now_ms() -> int:
    """NOW of the module's simulated histories (both end at the same instant): the wall clock.

    The histories differ with NOW (the simulator draws each day by its date), so the module prints it, and
    `KPIMON_E2E_NOW_MS` reruns an instant of the last BACKFILL_AFTER_S seconds (the backfilled week ago must
    hold the wall clock's `offset 7d`).
    """
    wall = time.time_ns() // 1_000_000
    chosen = os.environ.get("KPIMON_E2E_NOW_MS")
    now = wall if chosen is None else int(chosen)
    if not wall - BACKFILL_AFTER_S * 1000 + 600_000 <= now <= wall:
        pytest.fail(f"KPIMON_E2E_NOW_MS={chosen} is not within the last {BACKFILL_AFTER_S - 600} s")
    print(f"NOW of the e2e histories: KPIMON_E2E_NOW_MS={now}")
    return now


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, now_ms: int) -> Iterator[Stack]:
    """Simulate, backfill, start Prometheus and a worker, replay the files, wait until all is processed."""
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    sim = tmp / "sim"
    messages = _simulate(sim, now_ms, SCENARIOS)
    # The two references run side by side.
    runs = [
        (_reference(sim, now_ms, tmp / "reference-now.jsonl"), tmp / "reference-now.jsonl"),
        (_reference(sim, now_ms - WEEK_MS - FUTURE_SLACK_MS, tmp / "week-ago.jsonl"), tmp / "week-ago.jsonl"),
    ]
    try:
        reference_now, reference_week_ago = (_finish(proc, out) for proc, out in runs)
    finally:
        for proc, _ in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    churn_target = wave_churn_target(reference_now)
    nps_target = scenario_nps_target(reference_now)
    targets = tmp / "targets.toml"
    targets.write_text(TARGETS_TOML.format(churn_target=churn_target, nps_target=nps_target))
    worker_port = free_port()
    prefix = f"t-{uuid.uuid4().hex[:8]}-"
    extra = ["--max-lateness-days", str(LATENESS_DAYS), "--targets-file", str(targets)]
    with ExitStack() as stack:
        webhook = stack.enter_context(running_webhook())
        idle_worker = IdleWorker()
        stack.callback(idle_worker.stop)
        # Alertmanager's config does not depend on the addresses that follow from it.
        draft = monitoring_config(worker_port, idle_worker.port, "127.0.0.1:1", webhook.url)
        am_file = write_alertmanager_config(tmp / "alertmanager", draft)
        alertmanager = stack.enter_context(running_alertmanager(am_file, tmp / "alertmanager" / "data"))
        config = monitoring_config(worker_port, idle_worker.port, alertmanager.address, webhook.url)
        config_file = write_setup(tmp / "prometheus", config)
        check_config(config_file)
        storage = tmp / "prometheus" / "data"
        _backfill_history(storage, reference_week_ago, now_ms, tmp)
        prometheus = stack.enter_context(running_prometheus(config_file, storage))
        worker = stack.enter_context(
            running_worker(kafka_bootstrap, prefix, worker_port, tmp / "worker", extra)
        )
        poll(
            lambda: prometheus.values(f'up{{job="{config.job}"}}'),
            lambda up: list(up.values()) == [1.0, 1.0],
            timeout=30,
            message="Prometheus scrapes the worker and the idle one",
        )
        settled_at = _replay_and_settle(
            prometheus, worker, config, sim, kafka_bootstrap, prefix, messages, reference_now
        )
        yield Stack(
            prometheus,
            worker,
            config,
            messages,
            reference_now,
            reference_week_ago,
            alertmanager,
            webhook,
            idle_worker,
            churn_target,
            nps_target,
            settled_at,
        )


# --- retention and detractor churn (issue #17): the same history with and without their scenarios ----------


@dataclass
class RetentionHistory:
    """`stack`'s three weeks (same options, same NOW) with RETENTION_SCENARIOS added, and its reference."""

    sim: Path
    messages: int
    now: list[KpiRecord]  # the reference at NOW


@dataclass
class RetentionStack:
    """That history replayed through its own worker into its own Prometheus (the same rules and targets;
    the alerts are read from Prometheus, so no Alertmanager)."""

    prometheus: PrometheusServer
    now: list[KpiRecord]
    settled_at: float


@pytest.fixture(scope="module")
def retention_history(now_ms: int, tmp_path_factory: pytest.TempPathFactory) -> RetentionHistory:
    """Simulate the history with the two scenarios and compute its reference (seconds, no Kafka)."""
    tmp = tmp_path_factory.mktemp("prometheus-e2e-retention")
    messages = _simulate(tmp / "sim", now_ms, SCENARIOS + RETENTION_SCENARIOS)
    proc = _reference(tmp / "sim", now_ms, tmp / "reference-now.jsonl")
    try:
        return RetentionHistory(tmp / "sim", messages, _finish(proc, tmp / "reference-now.jsonl"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="class")
def retention_stack(
    retention_history: RetentionHistory, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RetentionStack]:
    """Replay `retention_history` through a worker into a Prometheus; both stopped after the class's tests.

    Class scope, and the class comes before every test of `stack`: the two replays never overlap (a replay
    loads the machine enough to make another worker miss a 1 s scrape). No backfill: neither alert looks a
    week back. The churn target is no concern here (1.0: never above it).
    """
    tmp = tmp_path_factory.mktemp("prometheus-e2e-retention-stack")
    targets = tmp / "targets.toml"
    nps_target = scenario_nps_target(retention_history.now)
    targets.write_text(TARGETS_TOML.format(churn_target=1.0, nps_target=nps_target))
    worker_port = free_port()
    prefix = f"t-{uuid.uuid4().hex[:8]}-"
    extra = ["--max-lateness-days", str(LATENESS_DAYS), "--targets-file", str(targets)]
    unused = "127.0.0.1:1"
    config = replace(
        monitoring_config(worker_port, worker_port, unused, f"http://{unused}"),
        worker_targets=(f"127.0.0.1:{worker_port}",),
        alertmanager_targets=(),
    )
    config_file = write_setup(tmp / "prometheus", config)
    check_config(config_file)
    history = retention_history
    with (
        running_prometheus(config_file, tmp / "prometheus" / "data") as prometheus,
        running_worker(kafka_bootstrap, prefix, worker_port, tmp / "worker", extra) as worker,
    ):
        poll(
            lambda: prometheus.values(f'up{{job="{config.job}"}}'),
            lambda up: list(up.values()) == [1.0],
            timeout=30,
            message="Prometheus scrapes the second worker",
        )
        settled_at = _replay_and_settle(
            prometheus, worker, config, history.sim, kafka_bootstrap, prefix, history.messages, history.now
        )
        yield RetentionStack(prometheus, history.now, settled_at)


def newest_cohorts(records: list[KpiRecord]) -> dict[tuple[str, str], KpiRecord]:
    """(dimension, segment) -> the D7 retention record of the newest cohort measured on a whole day
    (`day="previous"`), the one KpimonRetentionBelowTarget reads."""
    current = max(day_number(r.day) for r in records)
    return {
        (r.dimension, r.segment): r
        for r in records
        if r.kpi == "retention_rate"
        and r.window == DEFAULT.retention.window
        and gauge_day(r, current) == "previous"
    }


def retention_verdict(records: list[KpiRecord]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """KpimonRetentionBelowTarget's own condition on the reference: (segments it must alert, unsure ones).

    The alerted dimensions, a cohort of at least the minimum, the whole 95 % interval below the target.
    """
    minimum = RETENTION_MIN_COHORT
    below: set[tuple[str, str]] = set()
    unsure: set[tuple[str, str]] = set()
    for key, record in newest_cohorts(records).items():
        if key[0] not in ALERTED_DIMENSIONS or (record.denominator or 0) < minimum or record.ci_high is None:
            continue
        if abs(record.ci_high - RETENTION_TARGET) < 1e-6:
            unsure.add(key)
        elif record.ci_high < RETENTION_TARGET:
            below.add(key)
    return below, unsure


def nps_group_bases(records: list[KpiRecord]) -> dict[str, float]:
    """NPS group -> users in its churn base (window CHURN_WINDOW, newest day)."""
    bases = current_values(records, "churn_base", CHURN_WINDOW)
    return {
        segment: value or 0.0 for (dimension, segment), value in bases.items() if dimension == "nps_group"
    }


def detractor_gap(records: list[KpiRecord]) -> float:
    """Detractors' churn lower bound minus promoters' upper bound (CHURN_WINDOW, newest day): > 0 is the
    alert's condition on the intervals (non-overlapping, detractors above)."""
    churn = churn_records(records)
    detractors, promoters = churn[("nps_group", "detractor")], churn[("nps_group", "promoter")]
    assert detractors.ci_low is not None and promoters.ci_high is not None, (detractors, promoters)
    return detractors.ci_low - promoters.ci_high


def detractors_churn_more(records: list[KpiRecord]) -> bool:
    """KpimonDetractorsChurnMore's own condition on the reference: intervals apart, both bases enough."""
    bases = nps_group_bases(records)
    enough = all(bases.get(group, 0) >= NPS_GROUP_MIN_BASE for group in ("detractor", "promoter"))
    return enough and detractor_gap(records) > 0


def percent_interval(text: str) -> tuple[float, float]:
    """The bounds of a humanizePercentage `interval` annotation ("low% to high%", a bound may be 1e-15%)."""
    low, high = text.split(" to ")
    assert low.endswith("%") and high.endswith("%"), text
    return float(low[:-1]) / 100, float(high[:-1]) / 100


def fired_after(alert: dict[str, Any], settled_at: float) -> float:
    """Seconds from the KPIs settling to the alert becoming active (negative: during the replay)."""
    active = datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")).timestamp()
    return active - settled_at


class TestWithTheirScenarios:
    """KpimonRetentionBelowTarget and KpimonDetractorsChurnMore on the history with their scenarios."""

    def test_retention_below_target_fires_for_the_dropped_cohorts(
        self, retention_stack: RetentionStack
    ) -> None:
        """retention-drop:free: the newest complete free cohort keeps (almost) nobody a week on, its whole
        interval below the target, on a cohort above the minimum: KpimonRetentionBelowTarget fires for it,
        and for exactly the segments the alert's condition on the reference names (the whole day's cohort
        too, mostly free users; without the scenario both stay quiet: the test after this class)."""
        rs = retention_stack
        cohorts = newest_cohorts(rs.now)
        below, unsure = retention_verdict(rs.now)
        dropped = cohorts[RETENTION_DROPPED]
        assert RETENTION_DROPPED in below, (
            f"retention-drop:free did not put its cohort below target: {dropped}"
        )

        def settled(found: dict[tuple[str, str], dict[str, Any]]) -> bool:
            state = found.get(RETENTION_DROPPED, {}).get("state")
            return set(found) - unsure == below - unsure and state == "firing"

        found = poll(
            lambda: alerting(rs, "KpimonRetentionBelowTarget"),
            settled,
            timeout=90,
            message=f"KpimonRetentionBelowTarget for {sorted(below)}",
        )
        alert = found[RETENTION_DROPPED]
        assert dropped.value is not None and dropped.ci_low is not None and dropped.ci_high is not None
        assert alert["labels"]["severity"] == "warning" and alert["labels"]["team"] == "product-analytics"
        annotations = alert["annotations"]
        assert annotations["runbook_url"] == "docs/runbooks/KpimonRetentionBelowTarget.md"
        assert float(annotations["value"][:-1]) / 100 == pytest.approx(dropped.value, abs=1e-6)
        assert float(annotations["target"][:-1]) / 100 == pytest.approx(RETENTION_TARGET, rel=1e-3)
        low, high = percent_interval(annotations["interval"])
        assert low == pytest.approx(dropped.ci_low, abs=1e-6)
        assert high == pytest.approx(dropped.ci_high, rel=1e-3)
        assert high < RETENTION_TARGET  # the whole interval below the target: why it fired
        assert annotations["description"] == (
            "7d retention of plan=free (the newest cohort measured on a whole day) is"
            f" {annotations['value']}, below its target of {annotations['target']}."
        )
        print(
            f"\nKpimonRetentionBelowTarget firing for {sorted(found)}: plan=free cohort {dropped.day}"
            f" of {dropped.denominator:.0f} users, D7 {dropped.value:.3f}"
            f" [{dropped.ci_low:.3f}, {dropped.ci_high:.3f}]"
            f" < {RETENTION_TARGET}; active {fired_after(alert, rs.settled_at):+.1f} s after the KPIs settled"
        )

    def test_detractors_churn_more_fires_on_the_detractor_churn(
        self, retention_stack: RetentionStack
    ) -> None:
        """detractor-churn:all: detractors who answered in the last 14 days leave, so the 7d churn of the base
        users whose latest answer was a detractor's lies wholly above the promoters': the info alert fires."""
        rs = retention_stack
        bases = nps_group_bases(rs.now)
        gap = detractor_gap(rs.now)
        assert detractors_churn_more(rs.now), (
            f"detractor-churn:all did not separate the groups: {gap=} {bases=}"
        )
        key = ("nps_group", "detractor")
        found = poll(
            lambda: alerting(rs, "KpimonDetractorsChurnMore"),
            lambda found: found.get(key, {}).get("state") == "firing",
            timeout=90,
            message="KpimonDetractorsChurnMore firing",
        )
        assert set(found) == {key}
        alert = found[key]
        record = churn_records(rs.now)[key]
        assert record.value is not None and record.ci_low is not None and record.ci_high is not None
        assert alert["labels"]["severity"] == "info" and alert["labels"]["team"] == "product-analytics"
        annotations = alert["annotations"]
        assert annotations["runbook_url"] == "docs/runbooks/KpimonDetractorsChurnMore.md"
        assert float(annotations["value"][:-1]) / 100 == pytest.approx(record.value, rel=1e-3)
        low, high = percent_interval(annotations["interval"])
        assert low == pytest.approx(record.ci_low, rel=1e-3) and high == pytest.approx(
            record.ci_high, rel=1e-3
        )
        assert "target" not in annotations
        print(
            f"\nKpimonDetractorsChurnMore firing: {CHURN_WINDOW} churn of detractors {record.value:.3f}"
            f" [{record.ci_low:.3f}, {record.ci_high:.3f}] on a base of {bases['detractor']:.0f}, promoters'"
            f" upper bound {record.ci_low - gap:.3f} on {bases['promoter']:.0f}; active"
            f" {fired_after(alert, rs.settled_at):+.1f} s after the KPIs settled"
        )


def test_retention_and_detractor_alerts_stay_quiet_without_their_scenarios(
    stack: Stack, retention_history: RetentionHistory
) -> None:
    """`stack` is the same history without retention-drop and detractor-churn: there the guards hold (the
    free and whole-day cohorts above the minimum, both NPS groups' bases too), so the alerts are silent by
    their conditions, not for lack of data: neither is pending or firing once the KPIs are final.

    Detractors churn more than promoters in every simulated history (the simulator's always-on effects:
    churn hazard x2 against x0.7, and promoters are the more engaged users): 7d churn about 0.4 against
    0.15-0.3 here. At this size the intervals seldom come apart by chance (measured with the reference at
    14:00 UTC on 30 dates back from 2026-12-02: the gap between detractors' lower and promoters' upper
    bound ranged -0.50 to -0.08 on 29, +0.003 on 2026-12-02 itself). On such a date the alert's condition
    holds on the reference and the alert must fire: the test then checks that instead, and says so.
    """
    cohorts = newest_cohorts(stack.now)
    minimum = RETENTION_MIN_COHORT
    for key in (("all", "all"), RETENTION_DROPPED):
        assert (cohorts[key].denominator or 0) >= minimum, cohorts[key]
    bases = nps_group_bases(stack.now)
    assert min(bases["detractor"], bases["promoter"]) >= NPS_GROUP_MIN_BASE, bases
    # By the alerts' own conditions on the reference: nothing below target; the same cohort with the
    # scenario (the other replay) is.
    below, unsure = retention_verdict(stack.now)
    assert below == unsure == set(), {key: cohorts[key] for key in below | unsure}
    assert RETENTION_DROPPED in retention_verdict(retention_history.now)[0]
    baseline_effect = detractors_churn_more(stack.now)
    gap, gap_with_scenario = detractor_gap(stack.now), detractor_gap(retention_history.now)
    assert gap_with_scenario > gap + 0.2, (gap, gap_with_scenario)

    # Prometheus agrees: not one pending or firing evaluation since the KPIs settled (+ 3 evaluations for a
    # transient of the replay to end).
    time.sleep(max(0.0, stack.settled_at + 10 - time.time()))
    since = math.floor(time.time() - stack.settled_at - 3)
    assert since >= 7
    names = "|".join(RETENTION_ALERTS)
    if not baseline_effect:
        assert stack.prometheus.query(f'count_over_time(ALERTS{{alertname=~"{names}"}}[{since}s])') == []
        assert not any(alerting(stack, name) for name in RETENTION_ALERTS)
        print(
            f"\nquiet without the scenarios for {since} s:"
            f" detractor gap {gap:+.3f} ({gap_with_scenario:+.3f} with them)"
        )
        return
    print(f"\nthe history without detractor-churn separates the groups by itself ({gap=:+.3f}): it must fire")
    assert (
        stack.prometheus.query(f'count_over_time(ALERTS{{alertname="KpimonRetentionBelowTarget"}}[{since}s])')
        == []
    )
    poll(
        lambda: alerting(stack, "KpimonDetractorsChurnMore").get(("nps_group", "detractor"), {}).get("state"),
        lambda state: state == "firing",
        timeout=90,
        message="KpimonDetractorsChurnMore firing on the always-on effect",
    )


# --- the KPI values ------------------------------------------------------------------------------------


def prometheus_kpis(prometheus: PrometheusServer) -> dict[SeriesKey, float]:
    """Every recorded KPI series in Prometheus now."""
    out: dict[SeriesKey, float] = {}
    for metric in {spec.metric for spec in KPI_METRICS.values()}:
        for labels, value in prometheus.values(kpi(metric)).items():
            out[(kpi(metric), labels)] = value
    return out


def differences(expected: dict[SeriesKey, float], actual: dict[SeriesKey, float]) -> list[str]:
    """Missing, extra and different series, described."""
    out = [f"missing {k}" for k in expected.keys() - actual.keys()]
    out += [f"extra {k}" for k in actual.keys() - expected.keys()]
    out += [
        f"{k}: {actual[k]} != {v}"
        for k, v in expected.items()
        if k in actual and abs(actual[k] - v) > TOLERANCE
    ]
    return sorted(out)


def test_prometheus_holds_exactly_the_reference_kpis(stack: Stack) -> None:
    """Through worker, scrape and recording rules, every KPI series equals the batch reference."""
    expected = recorded_kpis(stack.now)
    assert len(expected) > 300
    found = poll(
        lambda: differences(expected, prometheus_kpis(stack.prometheus)),
        lambda diff: not diff,
        timeout=120,
        message="recorded KPI series equal to the reference",
    )
    assert found == []


# --- dashboards -------------------------------------------------------------------------------------------

#: Grafana variable choices the panels are run with: the defaults, and one segment with the 30d window.
VARIABLE_CHOICES = {
    "all": {"$dimension": "all", "$segment": "all", "$window": "7d"},
    "android-30d": {"$dimension": "platform", "$segment": "android", "$window": "30d"},
}


#: 21 days of history: nobody can be in a 30d churn base (users active in [d-59, d-30]), so churn's 30d
#: interval is undefined (no series) in this test's data, and no cohort has matured for D30 retention (no
#: value, no interval); every other series exists.
UNDEFINED_SERIES = {("churn_rate", "30d"), ("retention_rate", "30d")}
#: The KPI of a gauge whose queries carry no `kpi` label (a KPI's own line, e.g. churn's or retention's).
GAUGE_KPI = {kpi(entry.metric): entry.name for entry in CATALOGUE if not entry.labels}


def reference_series(expr: str, series: dict[SeriesKey, float]) -> dict[SeriesKey, float]:
    """The series of `series` that a plain selector `name{label="v", label=~"re", ...}` selects."""
    match = re.fullmatch(r"([\w:]+)\{(.*)\}", expr)
    assert match, expr
    matchers = re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', match[2])

    def selects(labels: frozenset[tuple[str, str]]) -> bool:
        values = dict(labels)
        return all(
            re.fullmatch(v, values.get(k, "")) if op == "=~" else values.get(k, "") == v
            for k, op, v in matchers
        )

    return {key: v for key, v in series.items() if key[0] == match[1] and selects(key[1])}


def undefined_interval(expr: str, intervals: dict[SeriesKey, float]) -> bool:
    """An interval query that the reference says has no series (see UNDEFINED_SERIES)."""
    return "kpimon_kpi_ci_" in expr and not reference_series(expr, intervals)


def undefined_query(expr: str, series: dict[SeriesKey, float]) -> bool:
    """A plain KPI or interval selector that the reference says has no series (see UNDEFINED_SERIES)."""
    plain = re.fullmatch(r"dimension_segment:kpimon_\w+:max\{[^{}]*\}", expr)
    return bool(plain) and not reference_series(expr, series)


def undefined_kind(expr: str) -> tuple[str, str]:
    """(KPI, window) of an undefined selector: its `kpi` label, else the KPI of its gauge."""
    name = re.findall(r'kpi="(\w+)"', expr) or [GAUGE_KPI.get(expr.split("{")[0], expr)]
    return name[0], re.findall(r'window="(\w+)"', expr)[0]


@pytest.mark.parametrize("choice", sorted(VARIABLE_CHOICES))
def test_every_dashboard_panel_query_returns_data(stack: Stack, choice: str) -> None:
    """Every panel query returns data, except interval queries the reference says are undefined."""
    queries = {
        f"{q.dashboard} / {q.panel}: {q.expr}": substitute_variables(q.expr, VARIABLE_CHOICES[choice])
        for q in panel_queries(stack.config)
    }
    assert len(queries) > 40
    reference = {**recorded_kpis(stack.now), **recorded_intervals(stack.now)}
    undefined = {where for where, expr in queries.items() if undefined_query(expr, reference)}
    kinds = {undefined_kind(queries[w]) for w in undefined}
    assert kinds <= UNDEFINED_SERIES, undefined

    def empty() -> list[str]:
        return [where for where, expr in queries.items() if not stack.prometheus.query(expr)]

    missing = poll(
        empty,
        lambda missing: set(missing) == undefined,
        timeout=90,
        interval=2,
        message="data in every panel",
    )
    assert set(missing) == undefined


@pytest.mark.parametrize("choice", sorted(VARIABLE_CHOICES))
def test_every_interval_band_is_one_series_per_name_with_the_reference_bounds(
    stack: Stack, choice: str
) -> None:
    """In a panel repeated per segment, each band query returns exactly one series (so the fixed legend
    that `fillBelowTo` names is one series), the bounds are the reference's and the KPI lies within them."""
    intervals = recorded_intervals(stack.now)
    drawn = [
        band
        for band in bands(stack.config)
        if not undefined_interval(
            substitute_variables(band.targets[band.high], VARIABLE_CHOICES[choice]), intervals
        )
    ]
    assert len(drawn) >= 5

    def check() -> list[str]:
        problems: list[str] = []
        for band in drawn:
            line = band.high.removesuffix(" 95 % high")
            exprs = {
                name: substitute_variables(band.targets[name], VARIABLE_CHOICES[choice])
                for name in (band.low, line, band.high)
            }
            found = {name: list(stack.prometheus.values(expr).values()) for name, expr in exprs.items()}
            if any(len(values) != 1 for values in found.values()):
                problems.append(f"{band.panel['title']}: {found}")
                continue
            low, value, high = found[band.low][0], found[line][0], found[band.high][0]
            expected = [
                next(iter(reference_series(exprs[name], intervals).values()))
                for name in (band.low, band.high)
            ]
            if abs(low - expected[0]) > TOLERANCE or abs(high - expected[1]) > TOLERANCE:
                problems.append(f"{band.panel['title']}: bounds {low, high} != reference {expected}")
            if not low - TOLERANCE <= value <= high + TOLERANCE:
                problems.append(f"{band.panel['title']}: {value} outside its interval {low, high}")
        return problems

    assert poll(check, lambda problems: not problems, timeout=60, interval=2, message="bands") == []


def test_every_dashboard_variable_lists_values(stack: Stack) -> None:
    """The variables' `label_values(selector, label)` find series (Grafana asks the same API)."""
    variables = variable_queries(stack.config)
    assert variables
    for variable in variables:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable.expr)
        assert match, variable
        selector, label = substitute_variables(match[1]), match[2]

        def values_of(selector: str = selector, label: str = label) -> list[str]:
            return stack.prometheus.label_values(label, selector)

        values = poll(values_of, bool, timeout=30, message=f"values of {variable}")
        if label == "dimension":  # satisfaction also by the respondents' engagement level
            assert set(values) - {"engagement"} == {"all", "platform", "plan", "stage"}
        if label == "segment":
            assert "all" in values
        if label == "topic":
            assert len(values) == 2


# --- recording rules ------------------------------------------------------------------------------------


def test_every_rule_is_healthy_and_every_recording_rule_has_a_value(stack: Stack) -> None:
    records = [
        r.record for g in recording_rules(stack.config) for r in g.rules if isinstance(r, RecordingRule)
    ]

    def unhealthy() -> list[str]:
        return [
            f"{rule['name']}: {rule['health']} {rule.get('lastError', '')}"
            for rule in stack.prometheus.rules()
            if rule["health"] != "ok"
        ]

    poll(unhealthy, lambda bad: not bad, timeout=30, message="every rule evaluated without error")
    loaded = {rule["name"] for rule in stack.prometheus.rules() if rule["type"] == "recording"}
    assert loaded == set(records)

    def without_value() -> list[str]:
        return [name for name in records if not stack.prometheus.query(name)]

    assert poll(without_value, lambda missing: not missing, timeout=60, message="a value per rule") == []


def test_week_over_week_rules_read_the_backfilled_week(stack: Stack) -> None:
    """`offset 7d` finds the history; delta7d is today's stream value minus that week-old value."""
    nps = kpi("kpimon_nps_score")
    old = stack.prometheus.values(f"{nps} offset 7d")
    assert old == {labels: v for (name, labels), v in recorded_kpis(stack.week_ago).items() if name == nps}
    now = {labels: v for (name, labels), v in recorded_kpis(stack.now).items() if name == nps}
    expected = {labels: now[labels] - old[labels] for labels in now.keys() & old.keys()}
    assert expected

    def delta() -> dict[frozenset[tuple[str, str]], float]:
        return stack.prometheus.values("dimension_segment:kpimon_nps_score:delta7d")

    found = poll(
        delta,
        lambda d: d.keys() == expected.keys() and all(abs(d[k] - v) < TOLERANCE for k, v in expected.items()),
        timeout=60,
        message="delta7d = now - a week ago",
    )
    assert all(finite(v) for v in found.values())


# --- the NPS alerts ---------------------------------------------------------------------------------------


#: The day an alert reads when not the current one: retention, the newest cohort measured on a whole day.
ALERT_DAY = {"KpimonRetentionBelowTarget": "previous"}


def alerting(stack: Stack | RetentionStack, name: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(dimension, segment) -> the pending or firing alert `name` of the 7d window, on the day it reads."""
    day = ALERT_DAY.get(name, "current")
    return {
        (a["labels"]["dimension"], a["labels"]["segment"]): a
        for a in stack.prometheus.alerts()
        if a["labels"]["alertname"] == name
        and a["labels"].get("window") == "7d"
        and a["labels"].get("day") == day
    }


def alert_candidates(stack: Stack) -> dict[tuple[str, str], float]:
    """Segments the alert selector covers with at least MIN_RESPONSES NPS answers: -> 7d NPS now."""
    nps = current_values(stack.now, "nps", "7d")
    answers = current_values(stack.now, "nps_responses", "7d")
    return {
        key: value
        for key, value in nps.items()
        if value is not None and key[0] in ALERTED_DIMENSIONS and (answers.get(key) or 0) >= MIN_RESPONSES
    }


def wait_for_alerts(
    stack: Stack, name: str, expected: set[tuple[str, str]], unsure: set[tuple[str, str]]
) -> None:
    """Poll until the segments alerting `name` are `expected` (give or take `unsure`), DROPPED firing."""

    def settled(found: dict[tuple[str, str], dict[str, Any]]) -> bool:
        return set(found) - unsure == expected - unsure and found.get(DROPPED, {}).get("state") == "firing"

    found = poll(lambda: alerting(stack, name), settled, timeout=90, message=f"{name} for {sorted(expected)}")
    alert = found[DROPPED]
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"] == f"docs/runbooks/{name}.md"
    assert "platform=android" in alert["annotations"]["description"]


def test_nps_below_target_fires_for_the_dropped_segment_not_for_a_healthy_one(stack: Stack) -> None:
    """Below target means the whole 95 % interval below it: ci_high < target."""
    candidates = alert_candidates(stack)
    high = {key: ci[1] for key, ci in current_intervals(stack.now, "nps", "7d").items() if key in candidates}
    target = stack.nps_target
    below = {key for key, value in high.items() if value < target}
    healthy = set(candidates) - below
    unsure = {key for key, value in high.items() if abs(value - target) < 1e-6}
    assert DROPPED in below, f"the scenario did not put android's NPS interval below target: {high}"
    assert healthy - unsure, f"no healthy segment to tell apart: {candidates}"

    wait_for_alerts(stack, "KpimonNpsBelowTarget", below, unsure)
    alert = alerting(stack, "KpimonNpsBelowTarget")[DROPPED]
    assert alert["annotations"]["description"] == (
        f"7d NPS of platform=android is {candidates[DROPPED]:.1f}, below its target of {target:.1f}."
    )
    assert not (set(alerting(stack, "KpimonNpsBelowTarget")) & (healthy - unsure))


def test_nps_week_over_week_fires_for_the_dropped_segment(stack: Stack) -> None:
    """Against the backfilled week: android fell by far more than 10 points and than the two intervals allow
    (sqrt(hw_now² + hw_week_ago²)); other segments by noise."""
    limit = DEFAULT.satisfaction.nps_max_drop_week_over_week
    week_ago = current_values(stack.week_ago, "nps", "7d")
    ci_now = current_intervals(stack.now, "nps", "7d")
    ci_then = current_intervals(stack.week_ago, "nps", "7d")
    change = {
        key: value - old
        for key, value in alert_candidates(stack).items()
        if (old := week_ago.get(key)) is not None and key in ci_now and key in ci_then
    }
    allowed = {
        key: math.hypot((ci_now[key][1] - ci_now[key][0]) / 2, (ci_then[key][1] - ci_then[key][0]) / 2)
        for key in change
    }
    dropped = {key for key, delta in change.items() if delta < -limit and delta < -allowed[key]}
    unsure = {
        key for key, delta in change.items() if abs(delta + limit) < 1e-6 or abs(delta + allowed[key]) < 1e-6
    }
    assert DROPPED in dropped, f"android's NPS did not fall week over week: {change}"
    assert change[DROPPED] < -3 * limit

    wait_for_alerts(stack, "KpimonNpsDroppedWeekOverWeek", dropped, unsure)


# --- shift-share: which segments drove the all/all change -----------------------------------------------


def split_input(series: dict[SeriesKey, float], metric: str, window: str) -> dict[str, dict[str, Segment]]:
    """dimension -> segment -> (weight, value) of `metric` on the current day, from recorded series: the
    weight is the denominator's gauge (monitoring.shiftshare.WEIGHTS), a segment without a value has None."""
    spec = WEIGHTS[metric]
    out: dict[str, dict[str, Segment]] = {}

    def current(name: str, own: dict[str, str]) -> dict[tuple[str, str], float]:
        found: dict[tuple[str, str], float] = {}
        for (series_name, labels), value in series.items():
            lab = dict(labels)
            same_day = series_name == kpi(name) and lab["window"] == window and lab["day"] == "current"
            if same_day and lab["dimension"] != "all" and all(lab.get(k) == v for k, v in own.items()):
                found[(lab["dimension"], lab["segment"])] = value
        return found

    values = current(metric, {})
    if spec is None:
        weights = {key: 1.0 for key in values}
    else:
        matchers = dict(re.findall(r'(\w+)="(\w+)"', spec[1]))
        weights = current(spec[0], matchers)
    for (dimension, segment), n in weights.items():
        out.setdefault(dimension, {})[segment] = Segment(n, values.get((dimension, segment)))
    return out


#: The week-over-week alerts' KPIs and windows in this test (churn on CHURN_WINDOW, DAU on 1d).
SPLIT_WINDOWS = {
    "kpimon_nps_score": ("7d", "30d"),
    "kpimon_csat_ratio": ("7d", "30d"),
    "kpimon_churn_ratio": (CHURN_WINDOW,),
    "kpimon_active_users": ("1d",),
}


def labelled(found: dict[frozenset[tuple[str, str]], float], window: str) -> dict[tuple[str, str], float]:
    """(dimension, segment) -> value of the current-day series of `window`."""
    return {
        (dict(k)["dimension"], dict(k).get("segment", "")): v
        for k, v in found.items()
        if dict(k)["window"] == window and dict(k)["day"] == "current"
    }


def test_shift_share_rules_split_the_change_like_the_reference(stack: Stack) -> None:
    """Prometheus' rate and mix effects equal the split of the reference's KPIs (now against a week ago,
    monitoring.shiftshare.decompose); per dimension, the parts plus the overlap are the all/all change."""
    now, week_ago = recorded_kpis(stack.now), recorded_kpis(stack.week_ago)
    expected: dict[str, dict[tuple[str, str, str], float]] = {}
    for metric, windows in SPLIT_WINDOWS.items():
        for window in windows:
            before, after = split_input(week_ago, metric, window), split_input(now, metric, window)
            for dimension in before.keys() | after.keys():
                split = decompose(
                    before.get(dimension, {}), after.get(dimension, {}), count=WEIGHTS[metric] is None
                )
                for segment, effect in split.items():
                    key = (window, dimension, segment)
                    expected.setdefault(rate_effect(metric), {})[key] = effect.rate
                    expected.setdefault(mix_effect(metric), {})[key] = effect.mix
    assert len(expected) == 2 * len(SPLIT_WINDOWS)

    def differences() -> list[str]:
        out: list[str] = []
        for record, values in expected.items():
            found = {
                (dict(k)["window"], dict(k)["dimension"], dict(k)["segment"]): v
                for k, v in stack.prometheus.values(f'{record}{{day="current"}}').items()
            }
            found = {k: v for k, v in found.items() if k[0] in SPLIT_WINDOWS[record.split(":")[1]]}
            if found.keys() != values.keys():
                out.append(f"{record}: {sorted(found.keys() ^ values.keys())}")
            out += [
                f"{record} {k}: {found[k]} != {v}"
                for k, v in values.items()
                if abs(found.get(k, v) - v) > 1e-6
            ]
        return out

    assert poll(differences, lambda d: not d, timeout=60, message="split equal to the reference's") == []
    whole = frozenset({"day": "current", "dimension": "all", "segment": "all"}.items())

    def unexplained() -> list[str]:
        """Per KPI, window and dimension: parts + overlap != the all/all change (or a series missing)."""
        out: list[str] = []
        for metric, windows in SPLIT_WINDOWS.items():
            for window in windows:
                key = (kpi(metric), whole | {("window", window)})
                if key not in now or key not in week_ago:  # no all/all change to split
                    continue
                change = now[key] - week_ago[key]
                parts = labelled(
                    stack.prometheus.values(
                        f"sum by (window, day, dimension) ({rate_effect(metric)} + {mix_effect(metric)})"
                    ),
                    window,
                )
                overlap = labelled(stack.prometheus.values(overlap_effect(metric)), window)
                if not parts or parts.keys() != overlap.keys():
                    out.append(f"{metric} {window}: parts {parts}, overlap {overlap}")
                    continue
                for dim, value in parts.items():
                    if abs(value + overlap[dim] - change) > 1e-6:
                        out.append(f"{metric} {window} {dim}: {value} + {overlap[dim]} != {change}")
                    # Every answer is in exactly one segment: nothing for the overlap.
                    if metric in ("kpimon_nps_score", "kpimon_csat_ratio") and abs(overlap[dim]) > 1e-9:
                        out.append(f"{metric} {window} {dim}: overlap {overlap[dim]}")
        return out

    # Polled: a KPI series can miss a scrape (docs/metrics.md), and the overlap needs the all/all one.
    assert poll(unexplained, lambda u: not u, timeout=60, message="parts + overlap = the change") == []


def nps_shares(stack: Stack) -> dict[tuple[str, str], float]:
    """(dimension, segment) -> share of the 7d all/all NPS change, from Prometheus."""
    return labelled(stack.prometheus.values(share("kpimon_nps_score")), "7d")


def reference_nps_shares(stack: Stack) -> dict[tuple[str, str], float]:
    """(dimension, segment) -> share of the 7d all/all NPS change, by `decompose` on the reference's KPIs."""
    now, week_ago = recorded_kpis(stack.now), recorded_kpis(stack.week_ago)
    whole = frozenset({"window": "7d", "day": "current", "dimension": "all", "segment": "all"}.items())
    change = now[(kpi("kpimon_nps_score"), whole)] - week_ago[(kpi("kpimon_nps_score"), whole)]
    before, after = (split_input(r, "kpimon_nps_score", "7d") for r in (week_ago, now))
    return {
        (dimension, segment): effect.total / change
        for dimension in before.keys() | after.keys()
        for segment, effect in decompose(before.get(dimension, {}), after.get(dimension, {})).items()
    }


def test_the_nps_drop_alert_names_android_as_its_driver(stack: Stack) -> None:
    """nps-drop:android: Prometheus' shares of the all/all NPS change are the reference's, android's is the
    largest of the platforms, and the firing all/all alert's `drivers` names each dimension's segment with
    the largest share, largest first, android for platform with its share; so does the notification that
    reaches the product team.

    How much android carries is not asserted here: this history ends at the wall clock (a different one each
    day) and holds nps-noise:ios, a second NPS drop in the same week and dimension, which took 9-37 % of
    the change (android 60-88 % at 18 instants of December 2026, first of the dimensions' top segments at 3
    of 8; plan=free, which holds most of android's answers, often carries more). That android carries at
    least 80 % (the issue) is the scenario's property, measured on a fixed history with nps-drop:android
    alone by tests/unit/test_shiftshare_scenario.py, with the split (`decompose`) that Prometheus' is held
    to here.

    Polled until Prometheus' shares are the reference's: a rule evaluation that ran while a KPI series
    missed a scrape (docs/metrics.md) splits an incomplete population, for that evaluation only."""
    expected = reference_nps_shares(stack)
    print(f"shares of the 7d all/all NPS change (nps-drop:android, nps-noise:ios; reference): {expected}")
    platforms = {k: v for k, v in expected.items() if k[0] == "platform"}
    assert max(platforms, key=lambda k: platforms[k]) == DROPPED, expected
    shares = poll(
        lambda: nps_shares(stack),
        lambda s: s.keys() == expected.keys() and all(abs(s[k] - v) < 1e-6 for k, v in expected.items()),
        timeout=60,
        message=f"Prometheus' shares of the change equal to the reference's {expected}",
    )
    android = shares[DROPPED]
    print(f"android's share of the 7d all/all NPS change (Prometheus): {android:.4f}")

    whole = ("all", "all")
    name = "KpimonNpsDroppedWeekOverWeek"
    named = f"platform=android {android * 100:.4g}% of the change (rate "
    alert = poll(
        lambda: alerting(stack, name).get(whole, {}),
        lambda a: a.get("state") == "firing" and named in a["annotations"].get("drivers", ""),
        timeout=90,
        message=f"{name} firing for all/all, its drivers naming {named!r}",
    )
    drivers = alert["annotations"]["drivers"]
    print(f"drivers: {drivers}")
    # One segment per dimension (its largest share), largest share first.
    named_shares = [
        (m[1], m[2], float(m[3]) / 100)
        for m in re.finditer(r"(\w+)=(\w+) (-?[\d.]+)% of the change", drivers)
    ]
    assert sorted(d for d, _, _ in named_shares) == ["engagement", "plan", "platform", "stage"], drivers
    assert [v for _, _, v in named_shares] == sorted((v for _, _, v in named_shares), reverse=True)
    for dimension, segment, value in named_shares:
        top = max((v, seg) for (dim, seg), v in shares.items() if dim == dimension)
        assert (segment, value) == (top[1], pytest.approx(top[0], rel=1e-3)), drivers
    received = poll(
        lambda: [a for _, a in arrived(stack, name, whole) if named in a["annotations"].get("drivers", "")],
        bool,
        timeout=120,
        message=f"a notification of {name} for all/all naming android",
    )
    assert received[0]["annotations"]["summary"] == "NPS down against the same day last week"


# --- noise: the same swing on a handful of answers ---------------------------------------------------


def nps_alerts_series(dimension: str, segment: str) -> str:
    """Prometheus' ALERTS series (pending or firing) of the NPS alerts of one segment, 7d window."""
    names = "|".join(NPS_ALERTS)
    return f'ALERTS{{alertname=~"{names}", dimension="{dimension}", segment="{segment}", window="7d"}}'


def last_evaluation(prometheus: PrometheusServer, alert: str) -> float:
    """When the rule group holding `alert` last started an evaluation (wall clock, Unix seconds)."""
    for group in prometheus.api("rules")["groups"]:
        if any(rule.get("name") == alert for rule in group["rules"]):
            started = group["lastEvaluation"].replace("Z", "+00:00")
            return datetime.fromisoformat(started).timestamp()
    raise AssertionError(f"no rule group holds {alert}")


def test_a_swing_as_large_on_a_handful_of_answers_never_alerts(stack: Stack) -> None:
    """nps-noise:ios: ios' 7d NPS falls as much as android's, on only NPS_NOISE_ANSWERS answers, so the
    NPS alerts leave it alone (minimum sample), while android, with the same drop on enough answers, fires.
    Checked on Prometheus' own evaluation: its recorded delta, its alerts and the ALERTS series over the
    module's whole run (never pending, never firing)."""
    limit = DEFAULT.satisfaction.nps_max_drop_week_over_week
    now, week_ago = current_values(stack.now, "nps", "7d"), current_values(stack.week_ago, "nps", "7d")
    answers = current_values(stack.now, "nps_responses", "7d")
    change: dict[tuple[str, str], float] = {}
    for key in (DROPPED, NOISY):
        value, old = now.get(key), week_ago.get(key)
        assert value is not None and old is not None, (key, value, old)
        change[key] = value - old
    # Not quiet for lack of a change: ios swings well past the alert's limit, by a part of android's swing
    # (five answers move NPS in steps of 20: 0.41-1.54 of android's swing over 45 instants of 5 days; at
    # least a quarter, because the history differs with the hour) ...
    assert change[NOISY] < -3 * limit and abs(change[NOISY]) >= 0.25 * abs(change[DROPPED]), change
    assert (now[NOISY] or math.nan) < stack.nps_target, now[NOISY]  # and below target
    # ... on a handful of answers, android on enough.
    assert answers[NOISY] == NPS_NOISE_ANSWERS < MIN_RESPONSES <= (answers[DROPPED] or 0), answers

    # Prometheus sees the same swing for both segments (its recorded week-over-week change).
    def deltas() -> dict[tuple[str, str], float]:
        found = stack.prometheus.values(
            'dimension_segment:kpimon_nps_score:delta7d{window="7d", day="current"}'
        )
        return {(dict(k)["dimension"], dict(k)["segment"]): v for k, v in found.items()}

    seen = poll(deltas, lambda d: NOISY in d and DROPPED in d, timeout=60, message="delta7d of both")
    assert abs(seen[NOISY] - change[NOISY]) < TOLERANCE and abs(seen[DROPPED] - change[DROPPED]) < TOLERANCE

    # android fires both NPS alerts; only then is ios' silence evidence (the rules have run meanwhile).
    for name in NPS_ALERTS:
        poll(
            lambda name=name: alerting(stack, name).get(DROPPED, {}).get("state"),
            lambda state: state == "firing",
            timeout=90,
            message=f"{name} firing for {DROPPED}",
        )
    firing = stack.prometheus.values(nps_alerts_series(*DROPPED))
    assert {dict(k)["alertname"] for k in firing} == set(NPS_ALERTS)
    assert {dict(k)["alertstate"] for k in firing} == {"firing"}
    # ios: never pending or firing once Prometheus judged the final KPIs. During the replay the worker's
    # current day walks through the history and an alert may fire on those transient values; it then keeps
    # firing `keep_firing_for` (FOR_S here) after the first evaluation that no longer sees its condition.
    # When that is, is read from Prometheus, not assumed (a loaded machine delays and skips evaluations): an
    # evaluation of the NPS alerts' group that started more than an interval after the KPIs settled has a
    # timestamp after the final records' (an evaluation's timestamp is at most an interval before its
    # start), so it reads the final KPIs; from its start + FOR_S + an interval on, every ALERTS sample is
    # the verdict on them.
    final = poll(
        lambda: last_evaluation(stack.prometheus, NPS_ALERTS[0]),
        lambda started: started > stack.settled_at + EVALUATION_S,
        timeout=60,
        message="an evaluation of the NPS alerts on the final KPIs",
    )
    quiet_from = final + FOR_S + EVALUATION_S
    time.sleep(max(0.0, quiet_from + 7 * EVALUATION_S - time.time()))  # at least 7 evaluations to look at
    since = math.floor(time.time() - quiet_from)
    assert since >= 7 * EVALUATION_S
    assert stack.prometheus.query(f"count_over_time({nps_alerts_series(*NOISY)}[{since}s])") == []
    assert not any(NOISY in alerting(stack, name) for name in NPS_ALERTS)


# --- Alertmanager: what reaches people ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
GROUP_BY = ("alertname", "dimension", "segment")


def arrived(stack: Stack, name: str, key: tuple[str, str]) -> list[tuple[Notification, dict[str, Any]]]:
    """(notification, alert) of each firing alert `name` of segment `key` the webhook received once the
    KPIs were final (3 s after they settled, for the last transient evaluation to be re-sent): one sent
    during the replay may carry a transient value (a churn of 100 % on a day the replay walked through)."""
    return [
        (n, a)
        for n, a in stack.webhook.firing(name, since=stack.settled_at + 3)
        if (a["labels"].get("dimension"), a["labels"].get("segment")) == key
    ]


def wait_for_notification(
    stack: Stack,
    name: str,
    key: tuple[str, str],
    accept: Callable[[dict[str, Any]], bool] = lambda alert: True,
) -> tuple[Notification, dict[str, Any]]:
    """The first notification of a firing alert `name` for segment `key` that `accept`s the alert (polled).

    `accept` can wait for the settled values: an alert that fired while the replay's current day walked
    through the history is notified with those transient values until Prometheus re-sends it (1 min)."""
    found = poll(
        lambda: [(n, a) for n, a in arrived(stack, name, key) if accept(a)],
        bool,
        timeout=120,
        interval=1,
        message=f"a notification of {name} for {key}; received: "
        + str([(n.receiver, n.group_labels) for n in stack.webhook.notifications()][-10:]),
    )
    return found[0]


def check_notification(stack: Stack, notification: Notification, alert: dict[str, Any], team: str) -> None:
    """Routed to the team's ticket receiver (warning), grouped by alert and segment, every annotation a
    person needs: summary, description, value, runbook (a file of this repository) and dashboard links."""
    labels = alert["labels"]
    assert labels["severity"] == "warning" and labels["team"] == team
    assert notification.receiver == f"{team}-ticket"
    assert notification.payload["receiver"] == f"{team}-ticket"
    # Grouped by alert and segment: the group is that alert on that segment, and only it.
    assert notification.group_labels == {k: labels[k] for k in GROUP_BY}
    for other in notification.alerts:
        assert {k: other["labels"][k] for k in GROUP_BY} == notification.group_labels
    annotations = alert["annotations"]
    name = labels["alertname"]
    assert annotations["runbook_url"] == f"docs/runbooks/{name}.md"
    assert (ROOT / annotations["runbook_url"]).is_file()
    dashboard = "kpimon-satisfaction" if name.startswith(("KpimonNps", "KpimonCsat")) else "kpimon-engagement"
    assert annotations["dashboard_url"] == (
        f"{stack.config.grafana_url}/d/{dashboard}"
        f"?var-dimension={labels['dimension']}&var-segment={labels['segment']}"
    )
    assert annotations["summary"] and annotations["value"] in annotations["description"]


def interval_of(text: str, percent: bool) -> tuple[float, float]:
    """The bounds of an `interval` annotation, "low to high" (as fractions when `percent`)."""
    match = re.fullmatch(r"(-?[\d.]+)(%?) to (-?[\d.]+)(%?)", text)
    assert match, text
    scale = 0.01 if percent else 1.0
    assert bool(match[2]) == bool(match[4]) == percent, text
    return float(match[1]) * scale, float(match[3]) * scale


def test_the_nps_drop_reaches_the_product_team_with_what_it_needs(stack: Stack) -> None:
    """nps-drop:android: both NPS alerts arrive at the product team's ticket receiver, one group each,
    with the KPI value, its interval and the target (all equal to the reference's), and the links; ios
    (the noise scenario) never arrives."""
    nps = current_values(stack.now, "nps", "7d")[DROPPED]
    low, high = current_intervals(stack.now, "nps", "7d")[DROPPED]
    assert nps is not None
    notification, alert = wait_for_notification(
        stack, "KpimonNpsBelowTarget", DROPPED, lambda a: a["annotations"]["value"] == f"{nps:.1f}"
    )
    check_notification(stack, notification, alert, "product-analytics")
    annotations = alert["annotations"]
    assert annotations["value"] == f"{nps:.1f}"
    assert annotations["target"] == f"{stack.nps_target:.1f}"
    assert annotations["interval"] == f"{low:.1f} to {high:.1f}"
    assert annotations["summary"] == "NPS below target"
    assert annotations["description"] == (
        f"7d NPS of platform=android is {nps:.1f}, below its target of {stack.nps_target:.1f}."
    )

    old = current_values(stack.week_ago, "nps", "7d")[DROPPED]
    assert old is not None
    notification, alert = wait_for_notification(
        stack,
        "KpimonNpsDroppedWeekOverWeek",
        DROPPED,
        lambda a: a["annotations"]["value"] == f"{nps - old:.1f}",
    )
    check_notification(stack, notification, alert, "product-analytics")
    assert alert["annotations"]["value"] == f"{nps - old:.1f}"
    assert alert["annotations"]["interval"] == f"{low:.1f} to {high:.1f}"
    assert "target" not in alert["annotations"]
    # The noise scenario's NPS alerts never reach anyone (ios' other KPIs may alert: stickiness, churn).
    assert not [
        a
        for n in stack.webhook.notifications()
        for a in n.alerts
        if a["labels"].get("segment") == NOISY[1] and a["labels"]["alertname"] in NPS_ALERTS
    ]


def test_the_churn_wave_reaches_the_product_team_with_what_it_needs(stack: Stack) -> None:
    """churn-wave:pro: KpimonChurnAboveTarget arrives for plan=pro with the churn rate, its interval
    and the target as percentages (Prometheus' humanizePercentage: 4 significant digits)."""
    record = churn_records(stack.now)[WAVE]
    assert record.value is not None and record.ci_low is not None and record.ci_high is not None
    value = record.value

    def settled(alert: dict[str, Any]) -> bool:
        shown = alert["annotations"]["value"].removesuffix("%")
        return abs(float(shown) / 100 - value) <= 1e-3 * value

    notification, alert = wait_for_notification(stack, "KpimonChurnAboveTarget", WAVE, settled)
    check_notification(stack, notification, alert, "product-analytics")
    annotations = alert["annotations"]
    assert annotations["value"].endswith("%")
    assert float(annotations["value"][:-1]) / 100 == pytest.approx(record.value, rel=1e-3)
    assert float(annotations["target"][:-1]) / 100 == pytest.approx(stack.churn_target, rel=1e-3)
    low, high = interval_of(annotations["interval"], percent=True)
    assert (low, high) == (pytest.approx(record.ci_low, rel=1e-3), pytest.approx(record.ci_high, rel=1e-3))
    assert low > stack.churn_target  # the whole interval above the target: why it fired
    assert annotations["description"] == (
        f"{CHURN_WINDOW} churn rate of plan=pro is {annotations['value']}, above its target of"
        f" {annotations['target']}."
    )


def suppressed_by(stack: Stack, name: str, key: tuple[str, str]) -> list[str]:
    """Alertmanager's inhibitedBy of alert `name` of segment `key` (empty: not inhibited)."""
    for alert in stack.alertmanager.alerts():
        labels = alert["labels"]
        if (labels.get("alertname"), labels.get("dimension"), labels.get("segment")) == (name, *key):
            inhibited: list[str] = alert["status"]["inhibitedBy"]
            return inhibited
    raise AssertionError(f"Alertmanager does not hold {name} for {key}")


def test_kpi_alerts_do_not_reach_anyone_during_a_pipeline_outage(stack: Stack) -> None:
    """The idle worker stops (the simulated outage): KpimonWorkerDown reaches the data platform team,
    and the KPI alerts, still firing in Prometheus, stop reaching the product team until it is over.

    Runs last in the module: it ends the idle worker. Before the outage the KPI alerts' groups are
    notified again every REPEAT_S seconds (checked), so their absence afterwards is the inhibition.
    """
    kpi_alerts = [("KpimonNpsBelowTarget", DROPPED), ("KpimonChurnAboveTarget", WAVE)]
    for name, key in kpi_alerts:
        poll(
            lambda name=name, key=key: len(arrived(stack, name, key)),
            lambda count: count >= 2,
            timeout=60,
            message=f"{name} for {key} notified repeatedly before the outage",
        )
        assert suppressed_by(stack, name, key) == []

    stack.idle_worker.stop()
    idle = f"127.0.0.1:{stack.idle_worker.port}"
    # Of the idle worker: on a loaded machine a scrape of the real worker can time out too (up = 0 for a
    # moment, long enough for the accelerated `for`).
    (down_notification, down), *_ = poll(
        lambda: [
            (n, a) for n, a in stack.webhook.firing("KpimonWorkerDown") if a["labels"]["instance"] == idle
        ],
        bool,
        timeout=60,
        message="KpimonWorkerDown notified",
    )
    assert down_notification.receiver == "data-platform-ticket"
    assert down["labels"]["instance"] == idle
    assert down["annotations"]["runbook_url"] == "docs/runbooks/KpimonWorkerDown.md"
    assert down["annotations"]["dashboard_url"] == f"{stack.config.grafana_url}/d/kpimon-pipeline"
    outage_start = down_notification.received

    # Three repeat intervals with the KPI alerts firing in Prometheus and held back in Alertmanager.
    time.sleep(3 * REPEAT_S + 1)
    firing = {
        (a["labels"]["alertname"], a["labels"].get("dimension"), a["labels"].get("segment"))
        for a in stack.prometheus.alerts()
        if a["state"] == "firing"
    }
    for name, key in kpi_alerts:
        assert (name, *key) in firing, f"{name} for {key} no longer firing in Prometheus: {firing}"
        assert suppressed_by(stack, name, key), f"{name} for {key} not inhibited"
    leaked = [
        (n.receiver, a["labels"]["alertname"], a["labels"].get("segment"))
        for n in stack.webhook.notifications(since=outage_start + 0.5)
        for a in n.alerts
        if n.receiver.startswith("product-analytics")
    ]
    assert leaked == [], f"KPI alerts reached people during the outage: {leaked}"
    # The pipeline team keeps being told.
    assert len(stack.webhook.firing("KpimonWorkerDown")) >= 2
