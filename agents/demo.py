"""`kpimon demo`: a local Kafka, a worker and live simulated traffic, with one command.

Everything the demo starts, it stops on Ctrl-C (SIGINT) or SIGTERM, and it leaves running only what was
already running before (a local Kafka started by `kpimon kafka start` is reused and left alone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click
from prometheus_client.parser import text_string_to_metric_families

from agents.localkafka import DEFAULT_PORT, KafkaLauncherError, LocalKafka
from agents.settings import default_home

KPIMON = str(Path(sys.executable).with_name("kpimon"))


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


def _metric_totals(url: str) -> dict[str, float]:
    """Sums of the pipeline counters on a worker's /metrics (empty when it does not answer yet)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL we built)
            text = response.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kpimon_events_total":
                key = sample.labels["outcome"]
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


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
    default="nps-drop:android",
    show_default=True,
    help="Scenario that starts after --scenario-after seconds (see `kpimon simulate --help`).",
)
@click.option(
    "--scenario-after",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds of normal traffic before the scenario starts.",
)
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between status lines.")
def demo(
    kafka_port: int,
    web_port: int,
    rate: float,
    users: int,
    scenario: str,
    scenario_after: float,
    interval: float,
) -> None:
    """Run everything locally: Kafka on 127.0.0.1, a worker, and live simulated traffic.

    Prints the /metrics URL, then a status line every few seconds. Ctrl-C stops what the demo started.
    Logs go to ~/.kpimon/demo/.
    """
    logs = default_home() / "demo"
    broker = LocalKafka(port=kafka_port)
    started_kafka = not broker.status()
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        what = f"starting Kafka on 127.0.0.1:{kafka_port} ..." if started_kafka else "reusing the local Kafka"
        click.echo(what, err=True)
        bootstrap = broker.start()
        common = ["--broker", bootstrap]
        worker_args = [KPIMON, "worker", *common, "--web-port", str(web_port)]
        children.append(("worker", _spawn(worker_args, logs / "worker.log")))
        simulator_args = [KPIMON, "simulate", "--live", "--rate", str(rate), "--users", str(users)]
        simulator_args += ["--scenario", scenario, "--scenario-after", str(scenario_after), *common]
        children.append(("simulator", _spawn(simulator_args, logs / "simulator.log")))
        url = f"http://127.0.0.1:{web_port}/metrics"
        click.echo(f"kpimon demo is running. Metrics: {url}   (logs in {logs}; Ctrl-C stops everything)")
        while True:
            for name, proc in children:
                if proc.poll() is not None:
                    raise click.ClickException(
                        f"the {name} exited with {proc.returncode}; see {logs}/{name}.log"
                    )
            totals = _metric_totals(url)
            if totals:
                click.echo(
                    f"{time.strftime('%H:%M:%S')}  accepted {totals.get('accepted', 0):.0f}  "
                    f"rejected {totals.get('rejected', 0):.0f}  duplicate {totals.get('duplicate', 0):.0f}"
                )
            time.sleep(interval)
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
