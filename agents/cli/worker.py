"""`kpimon worker`: run the Faust worker (all agents, the web endpoints)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.options import broker_option, kafka_options, setting, topic_prefix_option
from kpimon.agents.config.preflight import KafkaAccessError, check_access
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import Replication, ReplicationError, TopicSpec, ensure_topics
from kpimon.agents.runtime.membership import (
    InstanceInUseError,
    claim,
    instances_topic,
    register_membership,
)
from kpimon.agents.runtime.tables import TABLE_NAMES, changelog_topic_name, leader_topic
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
    # Static membership's announcements (runtime/membership.py): one record per instance id.
    instances = [TopicSpec(instances_topic(settings.app_id), 1, compacted)] if settings.instance_id else []
    # Faust's leader-election topic: created here so that it is replicated like the others.
    leader = TopicSpec(leader_topic(settings.app_id), 1)
    changelogs = [
        TopicSpec(changelog_topic_name(settings.app_id, name), settings.partitions, compacted)
        for name in TABLE_NAMES
    ]
    return [
        *instances,
        leader,
        *changelogs,
        TopicSpec(settings.clicks, settings.partitions),
        TopicSpec(settings.surveys, settings.partitions),
        TopicSpec(settings.rekeyed, settings.partitions),
        TopicSpec(settings.dead_letters, settings.partitions),
        TopicSpec(settings.partials, settings.partitions, compacted),
        TopicSpec(settings.kpis, settings.partitions, compacted),
    ]


@click.command()
@broker_option
@setting("web_port", "Port of /metrics, /ready and /live.", type=int)
@setting("web_host", "Address the web server binds.")
@setting("app_id", "Faust app id: the consumer group and the prefix of its internal topics.")
@topic_prefix_option
@setting("partitions", "Partitions of the topics the worker creates when they are missing.", type=int)
@setting(
    "replication_factor",
    "Replicas of the topics the worker creates; 0: 3 on a cluster of 3 or more live brokers, else 1.",
    type=click.IntRange(min=0),
)
@setting(
    "min_insync_replicas",
    "min.insync.replicas of the topics the worker creates; 0: 2 with 3 replicas or more, else 1.",
    type=click.IntRange(min=0),
)
@setting("data_dir", "Local state directory.", shown="~/.kpimon/state", type=click.Path(path_type=Path))
@setting(
    "max_lateness_days",
    "Accept events whose day is at most this many days before today (raise it to backfill).",
    type=int,
)
@setting("targets_file", "TOML file of KPI targets (see deploy/targets.example.toml).")
@setting("max_segment_values", "Values kept per segment dimension; further ones count as `other`.", type=int)
@setting(
    "segment_personal_pattern",
    "Regular expression (Python, searched) of segment values that are personal data: they count as "
    "`other`, as e-mail addresses always do.",
)
@setting("flush_interval", "Seconds between flushes of changed counters and KPIs.", type=float)
@setting(
    "store",
    "Where the worker keeps its tables: memory (rebuilt from the changelogs at every start) or "
    "rocksdb (on disk under --data-dir; less memory, faster restarts).",
    type=click.Choice(["memory", "rocksdb"]),
)
@setting(
    "batch_max_messages",
    "At most this many input messages per fetched batch; within it, the worker sizes batches to take "
    "about 50 ms each, so its web server and timers keep their turns.",
    type=int,
)
@setting("commit_interval", "Seconds between commits of processed input offsets.", type=float)
@setting(
    "session_timeout",
    "Seconds without a heartbeat before a crashed worker's partitions move to the others.",
    type=float,
)
@setting(
    "instance_id",
    "Static group membership: this worker's unique id in the group (e.g. the pod name); a worker "
    "restarted with the same id takes its partitions back at once.",
    shown="none, dynamic membership",
)
@setting("passive_types", "Comma-separated click types that do not make a user active.")
@setting("log_level", "Log level.", type=click.Choice(["debug", "info", "warning", "error"]))
@setting("web_tls_cert_file", "PEM certificate chain: serve the web endpoints over HTTPS only.")
@setting("web_tls_key_file", "PEM key of --web-tls-cert-file.")
@setting("web_auth_user", "HTTP basic auth user for /metrics and /ready (/live stays open).")
@setting("web_auth_password_file", "File holding the basic auth password.")
@setting(
    "web_timeout",
    "Seconds a web connection may go without a complete request (idle, unfinished headers) before "
    "it is closed.",
    type=float,
)
@setting(
    "dead_letter_redact",
    "Dead letters without comment, with user_id and key as HMAC-SHA256, not the original bytes.",
    shown="no",
)
@setting("dead_letter_redact_key_file", "File holding the HMAC key of --dead-letter-redact.")
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


async def preflight(settings: Settings) -> tuple[str | None, Replication]:
    """Check access to Kafka (one clear error), create the missing topics, claim the instance id.

    Returns this run's id when the worker has an instance id (runtime/membership.py), else None, and the
    replication the topics were created with (for the topics Faust creates itself).
    """
    await check_access(settings)
    options = aiokafka_options(settings)
    replication = await asyncio.wait_for(
        ensure_topics(
            settings.broker,
            topic_specs(settings),
            options=options,
            replication_factor=settings.replication_factor,
            min_insync_replicas=settings.min_insync_replicas,
        ),
        60,
    )
    if not settings.instance_id:
        return None, replication
    return await asyncio.wait_for(claim(settings, options), 60), replication


def run_worker(settings: Settings) -> None:
    """Create the topics, then run the Faust worker in this process until it is stopped."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    # Configuration first: a bad file stops the worker before it touches Kafka.
    targets: Targets = {}
    if settings.targets_file:
        try:
            targets = load_targets(Path(settings.targets_file))
        except TargetsError as exc:
            raise click.ClickException(f"invalid targets file: {exc}") from None
        log.info("loaded %d KPI targets from %s", len(targets), settings.targets_file)
    # The preflight waits on the network (and 2 s on the instance id's claim after a crash) while importing
    # Faust takes seconds of CPU on a busy machine: both at once make a restarted worker ready sooner.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        checked = pool.submit(lambda: asyncio.run(preflight(settings)))
        from prometheus_client import disable_created_metrics

        from kpimon.agents.app import create_app
        from kpimon.agents.exporter.web import web_warnings
        from kpimon.agents.runtime.faust_app import run_worker as run_faust_worker
        from kpimon.agents.runtime.outage import ShutdownWatchdog

        # `_created` series double the exposition for no use on a dashboard.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        for warning in web_warnings(settings):
            log.warning("%s", warning)
        try:
            run, replication = checked.result()
        except (
            KafkaAccessError,
            InstanceInUseError,
            ReplicationError,
        ) as exc:  # refused credentials, TLS trouble, no broker, too few brokers: one line naming the cause
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # a refused request, a timeout: one clear line
            raise click.ClickException(f"cannot reach Kafka at {settings.broker}: {exc!r}") from None
    # The resolved replication, for the topics Faust would create itself.
    settings = replace(
        settings, replication_factor=replication.factor, min_insync_replicas=replication.min_insync
    )
    try:
        kpimon = create_app(settings, targets=targets)
    except ValueError as exc:  # an unreadable secret or certificate file: named, not dumped
        raise click.ClickException(str(exc)) from None
    if run is not None:
        register_membership(kpimon.app, settings, run)
        log.info("static member %r of group %s (run %s)", settings.instance_id, settings.app_id, run)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    scheme = "https" if settings.web_tls_cert_file else "http"
    click.echo(
        f"kpimon worker {settings.app_id}: broker {settings.broker}, "
        f"metrics on {scheme}://{settings.web_host}:{settings.web_port}/metrics"
        + (" (basic auth)" if settings.web_auth_user else ""),
        err=True,
    )
    # SIGTERM ends the worker within seconds whatever the broker's state (runtime/outage.py).
    run_faust_worker(kpimon.app, settings.log_level, watchdog=ShutdownWatchdog())
