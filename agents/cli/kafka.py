"""`kpimon kafka start|stop|status|tools`: a local Apache Kafka (a broker or a cluster) for development."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import click

from kpimon.agents.devtools.localkafka import (
    DEFAULT_PORT,
    KafkaLauncherError,
    LocalCluster,
    LocalKafka,
    recorded_cluster_size,
)

_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


class _ClickEchoHandler(logging.Handler):
    """Progress lines on stderr, looked up at each write (so click's test runner captures them too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:
            self.handleError(record)


def _show_progress() -> None:
    # Only the launcher's own logger: the rest of kpimon configures logging its own way.
    logger = logging.getLogger("kpimon.agents.devtools.localkafka")
    if not any(isinstance(h, _ClickEchoHandler) for h in logger.handlers):
        handler = _ClickEchoHandler()
        handler.setFormatter(logging.Formatter("kafka: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


#: Kafka's own topics in a data dir: not what a user thinks of as theirs, but deleted all the same.
_INTERNAL = re.compile(r"^(__consumer_offsets|__cluster_metadata|__transaction_state)$")


def data_summary(data_dir: Path) -> tuple[list[str], int]:
    """(the topics with data in a broker's data dir, sorted; the bytes it holds)."""
    if not data_dir.is_dir():
        return [], 0
    topics = set()
    for entry in data_dir.iterdir():
        match = re.match(r"^(.+)-(\d+)$", entry.name)
        if entry.is_dir() and match and not _INTERNAL.match(match[1]):
            topics.add(match[1])
    size = sum(path.stat().st_size for path in data_dir.rglob("*") if path.is_file())
    return sorted(topics), size


def describe_deletion(data_dir: Path) -> str:
    """What `start --fresh` deletes, in one line."""
    topics, size = data_summary(data_dir)
    if not data_dir.exists():
        return f"fresh: nothing to delete ({data_dir} does not exist)"
    shown = ", ".join(topics[:8]) + (f" and {len(topics) - 8} more" if len(topics) > 8 else "")
    what = f"{len(topics)} topic{'' if len(topics) == 1 else 's'} ({shown})" if topics else "no topics"
    return (
        f"fresh: deleting {data_dir}: {what}, every consumer group and committed offset, "
        f"{size / 1e6:.1f} MB. Workers' local state (--data-dir) is not touched: with --store rocksdb, "
        "delete it too."
    )


def _default_run_dir(port: int, run_dir: Path | None) -> Path:
    return run_dir if run_dir is not None else LocalKafka.default_run_dir(port)


def _broker(
    port: int, run_dir: Path | None, cache_dir: Path | None = None, brokers: int | None = None
) -> LocalKafka | LocalCluster:
    """The single broker or the cluster of a run dir: `brokers` nodes, else as many as it holds (1 if new)."""
    size = brokers or recorded_cluster_size(_default_run_dir(port, run_dir)) or 1
    try:
        if size == 1 and recorded_cluster_size(_default_run_dir(port, run_dir)) is None:
            return LocalKafka(port=port, home=run_dir, cache_dir=cache_dir)
        return LocalCluster(size=size, port=port, home=run_dir, cache_dir=cache_dir)
    except KafkaLauncherError as err:
        raise click.ClickException(str(err)) from None


def _data_dirs(broker: LocalKafka | LocalCluster) -> list[Path]:
    """What `--fresh` deletes: a broker's data dir, or a cluster's layout and every node's run dir."""
    if isinstance(broker, LocalKafka):
        return [broker.data_dir]
    recorded = recorded_cluster_size(broker.run_dir) or 0
    return [broker.run_dir / f"node-{n}" for n in range(1, max(recorded, broker.size) + 1)]


def _running(broker: LocalKafka | LocalCluster) -> bool:
    if isinstance(broker, LocalKafka):
        return broker.status()
    return any(pid is not None for _, pid in broker.status())


_port_option = click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    help="Client (PLAINTEXT) port of the broker on 127.0.0.1; each port is a separate broker.",
)
_run_dir_option = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default=False,
    help="Where this broker keeps its data, server.properties, kafka.log and pid file "
    "[default: $KPIMON_HOME/kafka/run-PORT; KPIMON_HOME defaults to ~/.kpimon].",
)


@click.group(context_settings=_CONTEXT)
def kafka() -> None:
    """Run a local Apache Kafka (KRaft) on 127.0.0.1 for development and tests: one broker, or a cluster.

    Needs Java 17+ and, once per machine, Maven: the Kafka jars pinned in agents/devtools/kafka/pom.xml are
    downloaded into $KPIMON_HOME/cache the first time. The broker runs in the background; its log is
    kafka.log in the run dir. `start --brokers 3` runs a three-node cluster instead (each node a broker and
    a controller), to try replication and broker failures; stop and status then act on every node.
    """


@kafka.command()
@_port_option
@_run_dir_option
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default=False,
    help="Where the Kafka jars are cached, shared by all brokers [default: $KPIMON_HOME/cache].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=90.0,
    help="Seconds to wait for the broker to answer (the first jar download is not counted).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Start empty: delete this broker's data first (every topic, consumer group and offset), saying "
    "what is deleted. The broker must be stopped.",
)
@click.option(
    "--brokers",
    type=click.IntRange(1, 9),
    default=None,
    show_default=False,
    help="Run a cluster of this many nodes (each a broker and a KRaft controller; 3 tolerates the loss of "
    "one): node 1 on --port, the others on free ports, kept for later starts; the printed bootstrap lists "
    "every node. kpimon creates its topics with 3 replicas and min.insync.replicas 2 on 3 or more "
    "[default: 1, or as many as the run dir's cluster has].",
)
def start(
    port: int,
    run_dir: Path | None,
    cache_dir: Path | None,
    timeout: float,
    fresh: bool,
    brokers: int | None,
) -> None:
    """Start the broker (or cluster) in the background and print its bootstrap address.

    Progress goes to stderr; the last line on stdout is the bootstrap address alone (a comma-separated
    list for a cluster), so scripts can use `BROKER=$(kpimon kafka start | tail -n1)`. If the broker
    already runs, its address is printed. A broker keeps its topics across restarts; --fresh starts from
    nothing (and switches between a single broker and a cluster).
    """
    _show_progress()
    where = _default_run_dir(port, run_dir)
    if fresh:
        old = _broker(port, run_dir, cache_dir)
        if _running(old):
            raise click.ClickException(
                f"the broker on {old.bootstrap} runs; stop it first: kpimon kafka stop --port {port}"
            )
        for data_dir in _data_dirs(old):
            click.echo(describe_deletion(data_dir), err=True)
            shutil.rmtree(data_dir, ignore_errors=True)
        (where / "cluster.json").unlink(missing_ok=True)
    else:
        recorded = recorded_cluster_size(where)
        held = (
            f"cluster of {recorded} nodes"
            if recorded
            else "single broker"
            if (where / "data").exists()
            else ""
        )
        if brokers is not None and held and brokers != (recorded or 1):
            raise click.ClickException(
                f"{where} holds a {held}, not {brokers}; start it without --brokers, or with --fresh to "
                "replace it (losing its topics)"
            )
    broker = _broker(port, run_dir, cache_dir, brokers)
    try:
        address = broker.start(timeout=timeout)
    except KafkaLauncherError as err:
        raise click.ClickException(str(err)) from None
    click.echo(address)


@kafka.command()
@_port_option
@_run_dir_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    help="Seconds to wait for a clean shutdown before killing the broker.",
)
def stop(port: int, run_dir: Path | None, timeout: float) -> None:
    """Stop the broker (its topics stay in the run dir for the next start)."""
    _show_progress()
    broker = _broker(port, run_dir)
    try:
        was_running = broker.stop(timeout=timeout)
    except KafkaLauncherError as err:
        raise click.ClickException(str(err)) from None
    where = broker.bootstrap or f"127.0.0.1:{port}"
    click.echo(f"stopped {where}" if was_running else f"not running on {where}")


@kafka.command()
@_port_option
@_run_dir_option
def status(port: int, run_dir: Path | None) -> None:
    """Say whether the broker runs: exit code 0 if it does, 1 if not.

    For a cluster, one line per node; exit code 0 only if every node runs.
    """
    broker = _broker(port, run_dir)
    if isinstance(broker, LocalKafka):
        if broker.status():
            click.echo(f"running on {broker.bootstrap}")
            return
        click.echo("not running")
        raise SystemExit(1)
    nodes = broker.status()
    for node, pid in nodes:
        state = f"running (pid {pid})" if pid is not None else "not running"
        click.echo(f"node {node.node_id} on {node.bootstrap}: {state}")
    if not nodes or any(pid is None for _, pid in nodes):
        click.echo("not every node runs" if any(pid is not None for _, pid in nodes) else "not running")
        raise SystemExit(1)
    click.echo(f"running on {broker.bootstrap}")


@kafka.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": [],
    }
)
@click.argument("name", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, help="The local broker's port.")
def tools(name: str | None, args: tuple[str, ...], port: int) -> None:
    """Run one of Kafka's command-line tools on the local broker's jars: kpimon kafka tools NAME [ARGS]...

    \b
    kpimon kafka tools topics --list
    kpimon kafka tools console-consumer --topic kpimon-kpis --from-beginning --property print.key=true
    kpimon kafka tools consumer-groups --describe --group kpimon
    kpimon kafka tools topics --help

    NAME is Kafka's script name without `kafka-` and `.sh`; `--bootstrap-server 127.0.0.1:PORT` is added
    unless given. Without NAME: the list of tools. Options of kpimon (--port) go before NAME.
    """
    from kpimon.agents.devtools.kafkatools import TOOLS, UnknownTool, tool_command, write_log4j
    from kpimon.agents.devtools.localkafka import check_java

    if name is None or name in ("-h", "--help"):
        click.echo("Kafka's tools (kpimon kafka tools NAME --help for each one's options):")
        for tool_name, tool in sorted(TOOLS.items()):
            click.echo(f"  {tool_name:<22}{tool.summary}")
        return
    _show_progress()
    broker = _broker(port, None)
    # A cluster's bootstrap lists every node; its jars are those of any node.
    first = broker if isinstance(broker, LocalKafka) else LocalKafka(port=port)
    try:
        java = check_java()
        libs = first.ensure_jars()
        command = tool_command(java, libs, write_log4j(libs.parent), name, args, broker.bootstrap)
    except (KafkaLauncherError, UnknownTool) as err:
        raise click.ClickException(str(err)) from None
    # The tool replaces this process: stdin, stdout, Ctrl-C and the exit code are its own.
    os.execv(command[0], command)  # noqa: S606 (java, resolved by check_java; the args are the user's)
