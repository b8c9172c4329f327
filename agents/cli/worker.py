"""`kpimon worker`: run the Faust worker (all agents, the web endpoints)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.options import kafka_options
from kpimon.agents.config.preflight import KafkaAccessError, check_access
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import TopicSpec, ensure_topics
from kpimon.agents.runtime.tables import TABLE_NAMES, changelog_topic_name
from kpimon.streams.targets import Targets, TargetsError, load_targets

log = logging.getLogger("kpimon.worker")


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics a worker needs before it starts, the tables' changelogs included.

    The input topics, kpimon-rekeyed and kpimon-partials must have the same partition count: Faust assigns
    their partitions together (co-partitioning), which keeps a user's events and state on one worker.
    Faust would create the changelogs itself, but only while the consumer joins the group: the join's
    metadata can then list a changelog with 0 partitions, and Faust's check that a table's changelog has
    as many partitions as its source topic fails on every event until the next rebalance (the agent
    crashes and restarts each time).
    """
    compacted = {"cleanup.policy": "compact"}
    changelogs = [
        TopicSpec(changelog_topic_name(settings.app_id, name), settings.partitions, compacted)
        for name in TABLE_NAMES
    ]
    return [
        *changelogs,
        TopicSpec(settings.clicks, settings.partitions),
        TopicSpec(settings.surveys, settings.partitions),
        TopicSpec(settings.rekeyed, settings.partitions),
        TopicSpec(settings.dead_letters, settings.partitions),
        TopicSpec(settings.partials, settings.partitions, compacted),
        TopicSpec(settings.kpis, settings.partitions, compacted),
    ]


@click.command()
@click.option(
    "--broker", envvar="KPIMON_BROKER", help="Kafka bootstrap HOST:PORT.  [default: 127.0.0.1:9092]"
)
@click.option(
    "--web-port",
    type=int,
    envvar="KPIMON_WEB_PORT",
    help="Port of /metrics, /ready and /live.  [default: 6066]",
)
@click.option(
    "--web-host", envvar="KPIMON_WEB_HOST", help="Address the web server binds.  [default: 127.0.0.1]"
)
@click.option(
    "--app-id",
    envvar="KPIMON_APP_ID",
    help="Faust app id: the consumer group and the prefix of its internal topics.  [default: kpimon]",
)
@click.option(
    "--topic-prefix", envvar="KPIMON_TOPIC_PREFIX", help="Prefix of every topic name.  [default: none]"
)
@click.option(
    "--partitions",
    type=int,
    envvar="KPIMON_PARTITIONS",
    help="Partitions of the topics the worker creates when they are missing.  [default: 4]",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="KPIMON_DATA_DIR",
    help="Local state directory.  [default: ~/.kpimon/state]",
)
@click.option(
    "--max-lateness-days",
    type=int,
    envvar="KPIMON_MAX_LATENESS_DAYS",
    help="Accept events whose day is at most this many days before today (raise it to backfill)."
    "  [default: 7]",
)
@click.option(
    "--targets-file",
    envvar="KPIMON_TARGETS_FILE",
    help="TOML file of KPI targets (see deploy/targets.example.toml).  [default: none]",
)
@click.option(
    "--max-segment-values",
    type=int,
    envvar="KPIMON_MAX_SEGMENT_VALUES",
    help="Values kept per segment dimension; further ones count as `other`.  [default: 50]",
)
@click.option(
    "--segment-personal-pattern",
    envvar="KPIMON_SEGMENT_PERSONAL_PATTERN",
    help="Regular expression (Python, searched) of segment values that are personal data: they count as "
    "`other`, as e-mail addresses always do.  [default: none]",
)
@click.option(
    "--flush-interval",
    type=float,
    envvar="KPIMON_FLUSH_INTERVAL",
    help="Seconds between flushes of changed counters and KPIs.  [default: 1.0]",
)
@click.option(
    "--store",
    type=click.Choice(["memory", "rocksdb"]),
    envvar="KPIMON_STORE",
    help="Where the worker keeps its tables: memory (rebuilt from the changelogs at every start) or "
    "rocksdb (on disk under --data-dir; less memory, faster restarts).  [default: memory]",
)
@click.option(
    "--batch-max-messages",
    type=int,
    envvar="KPIMON_BATCH_MAX_MESSAGES",
    help="At most this many input messages per fetched batch; within it, the worker sizes batches to take "
    "about 50 ms each, so its web server and timers keep their turns.  [default: 10000]",
)
@click.option(
    "--commit-interval",
    type=float,
    envvar="KPIMON_COMMIT_INTERVAL",
    help="Seconds between commits of processed input offsets.  [default: 2.0]",
)
@click.option(
    "--session-timeout",
    type=float,
    envvar="KPIMON_SESSION_TIMEOUT",
    help="Seconds without a heartbeat before a crashed worker's partitions move to the others."
    "  [default: 60]",
)
@click.option(
    "--passive-types",
    envvar="KPIMON_PASSIVE_TYPES",
    help="Comma-separated click types that do not make a user active.  [default: none]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    envvar="KPIMON_LOG_LEVEL",
    help="Log level.  [default: info]",
)
@click.option(
    "--web-tls-cert-file",
    envvar="KPIMON_WEB_TLS_CERT_FILE",
    help="PEM certificate chain: serve the web endpoints over HTTPS only.  [default: none]",
)
@click.option("--web-tls-key-file", envvar="KPIMON_WEB_TLS_KEY_FILE", help="PEM key of --web-tls-cert-file.")
@click.option(
    "--web-auth-user",
    envvar="KPIMON_WEB_AUTH_USER",
    help="HTTP basic auth user for /metrics and /ready (/live stays open).  [default: none]",
)
@click.option(
    "--web-auth-password-file",
    envvar="KPIMON_WEB_AUTH_PASSWORD_FILE",
    help="File holding the basic auth password.  [default: none]",
)
@click.option(
    "--web-timeout",
    type=float,
    envvar="KPIMON_WEB_TIMEOUT",
    help="Seconds a web connection may go without a complete request (idle, unfinished headers) before "
    "it is closed.  [default: 30]",
)
@click.option(
    "--dead-letter-redact/--no-dead-letter-redact",
    default=None,
    envvar="KPIMON_DEAD_LETTER_REDACT",
    help="Dead letters without comment, with user_id and key as HMAC-SHA256, not the original bytes."
    "  [default: no]",
)
@click.option(
    "--dead-letter-redact-key-file",
    envvar="KPIMON_DEAD_LETTER_REDACT_KEY_FILE",
    help="File holding the HMAC key of --dead-letter-redact.  [default: none]",
)
@kafka_options
def worker(kafka: dict[str, Any], **options: object) -> None:
    """Run a kpimon worker: consume clicks and surveys, validate, compute KPIs, serve /metrics.

    Start several workers with the same --app-id to share the partitions. Stop with Ctrl-C or SIGTERM.
    """
    try:
        settings = Settings.from_env(**options, **kafka)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_worker(settings)


async def preflight(settings: Settings) -> None:
    """Check access to Kafka (one clear error), then create the missing topics."""
    await check_access(settings)
    options = aiokafka_options(settings)
    await asyncio.wait_for(ensure_topics(settings.broker, topic_specs(settings), options=options), 60)


def run_worker(settings: Settings) -> None:
    """Create the topics, then run the Faust worker in this process until it is stopped."""
    from prometheus_client import disable_created_metrics

    from kpimon.agents.app import create_app
    from kpimon.agents.exporter.web import web_warnings
    from kpimon.agents.runtime.faust_app import run_worker as run_faust_worker

    # `_created` series double the exposition for no use on a dashboard.
    disable_created_metrics()  # type: ignore[no-untyped-call]

    logging.basicConfig(
        level=settings.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    for warning in web_warnings(settings):
        log.warning("%s", warning)
    # Configuration first: a bad file stops the worker before it touches Kafka.
    targets: Targets = {}
    if settings.targets_file:
        try:
            targets = load_targets(Path(settings.targets_file))
        except TargetsError as exc:
            raise click.ClickException(f"invalid targets file: {exc}") from None
        log.info("loaded %d KPI targets from %s", len(targets), settings.targets_file)
    try:
        asyncio.run(preflight(settings))
    except KafkaAccessError as exc:  # refused credentials, TLS trouble, no broker: one line naming the cause
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # a refused request, a timeout: one clear line
        raise click.ClickException(f"cannot reach Kafka at {settings.broker}: {exc!r}") from None
    try:
        kpimon = create_app(settings, targets=targets)
    except ValueError as exc:  # an unreadable secret or certificate file: named, not dumped
        raise click.ClickException(str(exc)) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    scheme = "https" if settings.web_tls_cert_file else "http"
    click.echo(
        f"kpimon worker {settings.app_id}: broker {settings.broker}, "
        f"metrics on {scheme}://{settings.web_host}:{settings.web_port}/metrics"
        + (" (basic auth)" if settings.web_auth_user else ""),
        err=True,
    )
    run_faust_worker(kpimon.app, settings.log_level)
