"""`kpimon demo`: a local Kafka, a worker, 60 days of history, then live traffic and `kpimon top`.

The demo first backfills 60 days of simulated history through the real pipeline (simulate -> replay ->
worker, with a progress bar), so that every KPI has believable values from the start (stickiness, churn,
NPS and CSAT with their samples, the scenarios of the last days), then sends live traffic by the same
simulated users and shows `kpimon top` in the foreground, in this process (full screen on a terminal,
plain lines otherwise).

The demo keeps to itself: its own Kafka (port 19092, run dir $KPIMON_HOME/demo/kafka), app id
(`kpimon-demo`) and worker state ($KPIMON_HOME/demo/state), all started fresh at each run, so nothing of it
leaks into a later `kpimon kafka start` / `kpimon worker` on the default port. Everything it starts, it
stops on Ctrl-C (SIGINT) or SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import click
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kpimon.agents.config.settings import Settings, default_home
from kpimon.agents.devtools.localkafka import QUICK_START_JVM_OPTIONS, KafkaLauncherError, LocalKafka
from kpimon.agents.devtools.top import DIMENSIONS, TopConfig, run_top

KPIMON = str(Path(sys.executable).with_name("kpimon"))

#: The demo's own broker port, app id and days of history.
DEMO_KAFKA_PORT = 19092
DEMO_APP_ID = "kpimon-demo"
HISTORY_DAYS = 60
#: The history's days: 60 before today and today (cut at the time it is simulated); the live traffic
#: continues it with the same users (`kpimon simulate --population`).
BATCH_DAYS = HISTORY_DAYS + 1
#: The worker's lateness bound: the whole history, plus the simulator's late deliveries (up to 3 days).
LATENESS_DAYS = BATCH_DAYS + 3
#: The demo's broker: one partition for the consumer offsets instead of 50, whose creation on a fresh
#: broker kept the worker waiting about 10 s for its group coordinator on a loaded 2-core machine.
DEMO_BROKER_PROPERTIES = {"offsets.topic.num.partitions": "1"}
#: Seconds without lag after the whole history is processed before the backfill counts as published (a few
#: of the worker's 1 s flush intervals).
SETTLE_SECONDS = 4.0

#: Targets of the demo's worker (unless --targets-file), so the view has something to compare against.
DEMO_TARGETS = """\
# Written by `kpimon demo`; see deploy/targets.example.toml.
[targets.nps]
min = 30
window = "7d"

[targets.csat]
min = 0.8
window = "7d"

[targets.churn_rate]
max = 0.05
window = "30d"

[targets.stickiness]
min = 0.2
"""


class _Stop(Exception):
    """Raised by the signal handler to leave the main loop."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop()


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Own process group: Ctrl-C in the terminal reaches only the demo, which stops its children in order.
    return subprocess.Popen(
        args,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=dict(os.environ),
    )


def _terminate(proc: subprocess.Popen[bytes], name: str, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        click.echo(f"{name} did not stop in {timeout:.0f}s; killing it", err=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def demo_paths(home: Path) -> dict[str, Path]:
    """The demo's own directories and files under $KPIMON_HOME/demo."""
    root = home / "demo"
    return {
        "root": root,
        "kafka": root / "kafka",
        "state": root / "state",
        "history": root / "history",
    }


def reset_demo(paths: dict[str, Path]) -> list[str]:
    """Delete the previous demo's Kafka data, worker state and history files; what was deleted, described."""
    deleted = []
    for name, what in (
        ("kafka", "Kafka data (topics, offsets)"),
        ("state", "worker state"),
        ("history", "simulated history files"),
    ):
        path = paths[name]
        if path.exists():
            shutil.rmtree(path)
            deleted.append(f"{what} in {path}")
    return deleted


def worker_progress(url: str) -> tuple[float, float | None]:
    """(input messages the worker processed, its consumer lag over all partitions; None when it has no lag
    series yet) from its /metrics; (0, None) while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (the demo's own loopback worker)
            text = response.read().decode()
    except OSError:
        return 0.0, None
    processed, lag, lags = 0.0, 0.0, 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kpimon_events_total":
                processed += sample.value
            elif sample.name == "kpimon_consumer_lag_messages":
                lag += sample.value
                lags += 1
    return processed, (lag if lags else None)


def line_count(*paths: Path) -> int:
    """Lines (messages) of the history files."""
    return sum(path.read_bytes().count(b"\n") for path in paths)


@click.command()
@click.option(
    "--kafka-port",
    type=int,
    default=DEMO_KAFKA_PORT,
    show_default=True,
    help="Port of the demo's own local Kafka (not the 9092 of `kpimon kafka start`).",
)
@click.option("--web-port", type=int, default=6066, show_default=True, help="The worker's /metrics port.")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Simulated live events per second.")
@click.option("--users", type=int, default=2000, show_default=True, help="Simulated users.")
@click.option(
    "--history/--no-history",
    "history",
    default=True,
    show_default=True,
    help=f"Backfill {HISTORY_DAYS} days of simulated history before going live.",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    # Two segments: a churn wave empties its segment, which then gives too few answers to show an NPS drop.
    default=("churn-wave:android", "nps-drop:ios"),
    show_default=True,
    help="Scenario of the history's last days and of the live traffic; repeat for several "
    "(see `kpimon simulate --help`).",
)
@click.option(
    "--scenario-after",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds of live traffic before the live scenarios start (the history has them already).",
)
@click.option(
    "--targets-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of KPI targets for the worker.  [default: NPS 7d >= 30, CSAT 7d >= 80 %, "
    "churn 30d <= 5 %, stickiness >= 20 %]",
)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes of the view."
)
@click.option(
    "--dimension",
    type=click.Choice(DIMENSIONS),
    default="all",
    show_default=True,
    help="Segment dimension of the view: `platform` shows the scenarios (every platform side by side).",
)
@click.option(
    "--plain",
    is_flag=True,
    help="Plain lines instead of the full-screen view (the default when stdout is not a terminal).",
    show_default=False,
)
def demo(
    kafka_port: int,
    web_port: int,
    rate: float,
    users: int,
    history: bool,
    scenarios: tuple[str, ...],
    scenario_after: float,
    targets_file: Path | None,
    interval: float,
    dimension: str,
    plain: bool,
) -> None:
    """Run everything locally: Kafka, a worker, 60 days of history, then live traffic and `kpimon top`.

    The history (by default with many Android users going quiet and iOS users' NPS dropping in the last
    days) goes through the real pipeline first, with a progress bar; then the same simulated users keep
    sending events: those active today, as the history left them. The demo has its own Kafka
    (--kafka-port, run dir ~/.kpimon/demo/kafka), app id and state, deleted and made anew at each run.
    Ctrl-C stops everything it started. Logs: ~/.kpimon/demo/.
    """
    started = time.monotonic()
    paths = demo_paths(default_home())
    logs = paths["root"]
    broker = LocalKafka(
        port=kafka_port,
        home=paths["kafka"],
        properties=DEMO_BROKER_PROPERTIES,
        jvm_options=QUICK_START_JVM_OPTIONS,
    )
    if broker.status():
        raise click.ClickException(
            f"a demo already runs (its Kafka on {broker.bootstrap}); stop it first, or give --kafka-port"
        )
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    err = Console(stderr=True)

    def check_children() -> None:
        for name, proc in children:
            if name != "history" and proc.poll() is not None:
                raise click.ClickException(f"the {name} exited with {proc.returncode}; see {logs}/{name}.log")

    try:
        for line in reset_demo(paths):
            click.echo(f"fresh demo: deleted the previous demo's {line}", err=True)
        logs.mkdir(parents=True, exist_ok=True)
        clicks, surveys = paths["history"] / "clicks.jsonl", paths["history"] / "surveys.jsonl"
        population = paths["history"] / "population.json"
        if history:
            # Written while Kafka starts: both take seconds. Thin: only the messages that can change a KPI,
            # the same KPIs from a quarter of the messages (161,000 -> 41,000 for 2,000 users).
            simulate = [KPIMON, "simulate", "--users", str(users), "--days", str(BATCH_DAYS), "--thin"]
            simulate += ["--out-dir", str(paths["history"]), "--population", str(population)]
            for scenario in scenarios:
                simulate += ["--scenario", scenario]
            children.append(("history", _spawn(simulate, logs / "history.log")))
        click.echo(f"starting the demo's Kafka on 127.0.0.1:{kafka_port} ...", err=True)
        bootstrap = broker.start()
        click.echo(f"the demo's Kafka is up ({time.monotonic() - started:.0f} s)", err=True)
        if targets_file is None:
            targets_file = logs / "targets.toml"
            targets_file.write_text(DEMO_TARGETS)
        common = ["--broker", bootstrap]
        worker_args = [KPIMON, "worker", *common, "--web-port", str(web_port), "--app-id", DEMO_APP_ID]
        worker_args += ["--data-dir", str(paths["state"]), "--max-lateness-days", str(LATENESS_DAYS)]
        worker_args += ["--targets-file", str(targets_file)]
        children.append(("worker", _spawn(worker_args, logs / "worker.log")))
        url = f"http://127.0.0.1:{web_port}/metrics"
        if history:
            _backfill(children[0][1], clicks, surveys, bootstrap, url, logs, err, check_children)
            click.echo(
                f"history processed ({time.monotonic() - started:.0f} s after the start); going live",
                err=True,
            )
        simulator_args = [KPIMON, "simulate", "--live", "--rate", str(rate), "--users", str(users)]
        if history:
            # The users as the history left them: who left stays gone, today's active users keep coming.
            simulator_args += ["--population", str(population)]
        for scenario in scenarios:
            simulator_args += ["--scenario", scenario]
        simulator_args += ["--scenario-after", str(scenario_after), *common]
        children.append(("simulator", _spawn(simulator_args, logs / "simulator.log")))
        click.echo(f"kpimon demo is running. Metrics: {url}   (logs in {logs}; Ctrl-C stops everything)")
        if dimension == "all":
            click.echo(
                f"Per platform, in another terminal: kpimon top --broker {bootstrap} --metrics-url {url}"
                " --dimension platform   (or run the demo with --dimension platform)"
            )
        settings = Settings.from_env(broker=bootstrap)
        config = TopConfig(
            broker=bootstrap,
            topic=settings.kpis,
            metrics_urls=(url,),
            dimension=dimension,
            segment="all" if dimension == "all" else None,
            interval=interval,
            plain=True if plain else None,
        )
        run_top(config, watch=check_children)  # returns on SIGTERM
        click.echo("stopping ...", err=True)
    except (KeyboardInterrupt, _Stop):
        click.echo("stopping ...", err=True)
    except KafkaLauncherError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        for name, proc in reversed(children):
            _terminate(proc, name)
        broker.stop()
        click.echo("stopped.", err=True)


def _backfill(
    simulate: subprocess.Popen[bytes],
    clicks: Path,
    surveys: Path,
    bootstrap: str,
    url: str,
    logs: Path,
    err: Console,
    check_children: Callable[[], None],
) -> None:
    """Replay the simulated history and show the worker's progress until it has processed all of it."""
    if simulate.wait() != 0:
        raise click.ClickException(f"simulating the history failed; see {logs}/history.log")
    total = line_count(clicks, surveys)
    replay = [KPIMON, "replay", "--clicks", str(clicks), "--surveys", str(surveys), "--broker", bootstrap]
    replay += ["--max-lateness-days", str(LATENESS_DAYS), "--quiet"]
    sender = _spawn(replay, logs / "replay.log")
    started = time.monotonic()
    with Progress(
        TextColumn(f"[bold]backfill: {HISTORY_DAYS} days of history through the pipeline"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("backfill", total=total)
        settled: float | None = None
        # Done when every message is processed and the partials are aggregated too: no lag anywhere (the
        # partials topic included) for SETTLE_SECONDS, since the last counters reach kpimon-partials only
        # at the worker's next flush; only then are the last days' KPIs published.
        while settled is None or time.monotonic() - settled < SETTLE_SECONDS:
            check_children()
            if sender.poll() not in (None, 0):
                raise click.ClickException(f"replaying the history failed; see {logs}/replay.log")
            done, lag = worker_progress(url)
            progress.update(task, completed=min(done, total))
            if done < total or lag != 0:
                settled = None
            elif settled is None:
                settled = time.monotonic()
            time.sleep(0.5)
    click.echo(f"backfill: {total:,} messages processed in {time.monotonic() - started:.0f} s", err=True)
