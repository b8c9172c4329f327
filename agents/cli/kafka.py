"""`kpimon kafka start|stop|status|tools`: a local single-node Apache Kafka for development and tests."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import click

from kpimon.agents.devtools.localkafka import DEFAULT_PORT, KafkaLauncherError, LocalKafka

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


def _broker(port: int, run_dir: Path | None, cache_dir: Path | None = None) -> LocalKafka:
    try:
        return LocalKafka(port=port, home=run_dir, cache_dir=cache_dir)
    except KafkaLauncherError as err:
        raise click.ClickException(str(err)) from None


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
    """Run a local single-node Apache Kafka (KRaft) on 127.0.0.1 for development and tests.

    Needs Java 17+ and, once per machine, Maven: the Kafka jars pinned in agents/devtools/kafka/pom.xml are
    downloaded into $KPIMON_HOME/cache the first time. The broker runs in the background; its log is
    kafka.log in the run dir.
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
def start(port: int, run_dir: Path | None, cache_dir: Path | None, timeout: float, fresh: bool) -> None:
    """Start the broker in the background and print its bootstrap address.

    Progress goes to stderr; the last line on stdout is the bootstrap address alone, so scripts can
    use `BROKER=$(kpimon kafka start | tail -n1)`. If the broker already runs, its address is printed.
    A broker keeps its topics across restarts; --fresh starts from nothing.
    """
    _show_progress()
    broker = _broker(port, run_dir, cache_dir)
    if fresh:
        if broker.status():
            raise click.ClickException(
                f"the broker on {broker.bootstrap} runs; stop it first: kpimon kafka stop --port {port}"
            )
        click.echo(describe_deletion(broker.data_dir), err=True)
        shutil.rmtree(broker.data_dir, ignore_errors=True)
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
    click.echo(f"stopped {broker.bootstrap}" if was_running else f"not running on {broker.bootstrap}")


@kafka.command()
@_port_option
@_run_dir_option
def status(port: int, run_dir: Path | None) -> None:
    """Say whether the broker runs: exit code 0 if it does, 1 if not."""
    broker = _broker(port, run_dir)
    if broker.status():
        click.echo(f"running on {broker.bootstrap}")
    else:
        click.echo("not running")
        raise SystemExit(1)


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
    try:
        java = check_java()
        libs = broker.ensure_jars()
        command = tool_command(java, libs, write_log4j(libs.parent), name, args, broker.bootstrap)
    except (KafkaLauncherError, UnknownTool) as err:
        raise click.ClickException(str(err)) from None
    # The tool replaces this process: stdin, stdout, Ctrl-C and the exit code are its own.
    os.execv(command[0], command)  # noqa: S606 (java, resolved by check_java; the args are the user's)
