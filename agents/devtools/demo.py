"""`kpimon demo`: a local Kafka, a worker, live simulated traffic and `kpimon top`, with one command.

`kpimon top` runs in the foreground, in this process (full screen on a terminal, plain lines otherwise).

Everything the demo starts, it stops on Ctrl-C (SIGINT) or SIGTERM, and it leaves running only what was
already running before (a local Kafka started by `kpimon kafka start` is reused and left alone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from kpimon.agents.config.settings import Settings, default_home
from kpimon.agents.devtools.localkafka import DEFAULT_PORT, KafkaLauncherError, LocalKafka
from kpimon.agents.devtools.top import TopConfig, run_top

KPIMON = str(Path(sys.executable).with_name("kpimon"))

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


@click.command()
@click.option(
    "--kafka-port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="Port of the local Kafka (reused when one already runs there).",
)
@click.option("--web-port", type=int, default=6066, show_default=True, help="The worker's /metrics port.")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Simulated events per second.")
@click.option("--users", type=int, default=2000, show_default=True, help="Simulated users.")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    default=("nps-drop:android", "churn-wave:android"),
    show_default=True,
    help="Scenario that starts after --scenario-after seconds; repeat for several "
    "(see `kpimon simulate --help`).",
)
@click.option(
    "--scenario-after",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds of normal traffic before the scenarios start.",
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
    scenarios: tuple[str, ...],
    scenario_after: float,
    targets_file: Path | None,
    interval: float,
    plain: bool,
) -> None:
    """Run everything locally: Kafka on 127.0.0.1, a worker, live simulated traffic, and `kpimon top`.

    The simulator stamps events with the current time; after --scenario-after seconds the scenarios
    start (by default Android users' NPS drops and many of them go quiet). `kpimon top` runs in the
    foreground; Ctrl-C stops everything the demo started. Logs go to ~/.kpimon/demo/.
    """
    logs = default_home() / "demo"
    broker = LocalKafka(port=kafka_port)
    started_kafka = not broker.status()
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    previous = signal.signal(signal.SIGTERM, _raise_stop)

    def check_children() -> None:
        for name, proc in children:
            if proc.poll() is not None:
                raise click.ClickException(f"the {name} exited with {proc.returncode}; see {logs}/{name}.log")

    try:
        what = f"starting Kafka on 127.0.0.1:{kafka_port} ..." if started_kafka else "reusing the local Kafka"
        click.echo(what, err=True)
        bootstrap = broker.start()
        if targets_file is None:
            logs.mkdir(parents=True, exist_ok=True)
            targets_file = logs / "targets.toml"
            targets_file.write_text(DEMO_TARGETS)
        common = ["--broker", bootstrap]
        worker_args = [KPIMON, "worker", *common, "--web-port", str(web_port)]
        worker_args += ["--targets-file", str(targets_file)]
        children.append(("worker", _spawn(worker_args, logs / "worker.log")))
        simulator_args = [KPIMON, "simulate", "--live", "--rate", str(rate), "--users", str(users)]
        for scenario in scenarios:
            simulator_args += ["--scenario", scenario]
        simulator_args += ["--scenario-after", str(scenario_after), *common]
        children.append(("simulator", _spawn(simulator_args, logs / "simulator.log")))
        url = f"http://127.0.0.1:{web_port}/metrics"
        click.echo(f"kpimon demo is running. Metrics: {url}   (logs in {logs}; Ctrl-C stops everything)")
        click.echo(
            f"Per platform, in another terminal: kpimon top --broker {bootstrap} --metrics-url {url}"
            " --dimension platform"
        )
        settings = Settings.from_env(broker=bootstrap)
        config = TopConfig(
            broker=bootstrap,
            topic=settings.kpis,
            metrics_urls=(url,),
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
        if started_kafka:
            broker.stop()
        click.echo("stopped.", err=True)
