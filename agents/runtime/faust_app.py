"""kpimon's Faust app class: Faust assigns the source partitions, kpimon's source reader fetches them.

Faust's per-event path (consumer thread -> conductor -> stream -> agent, one event at a time) tops out
far below what one process can decode and count (docs/architecture.md, "Throughput"). So the input
topics stay subscribed by the ingest agent -- Faust still assigns their partitions together with the
user-state table's changelog, recovers the table and handles rebalances -- but Faust's consumer never
fetches them (`compat.BulkTopicsApp`): `runtime/source_reader.py` reads the assigned partitions in bulk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kpimon.agents import compat
from kpimon.agents.config.kafka_security import read_secret, ssl_context
from kpimon.agents.config.settings import Settings


class KpimonApp(compat.BulkTopicsApp):
    """A Faust app whose consumer leaves `bulk_topics` to kpimon's source reader.

    `before_stop` coroutines run first when the app stops, while the consumer can still commit.
    """

    def __init__(self, *args: Any, bulk_topics: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bulk_topics = frozenset(bulk_topics)
        self.before_stop: list[Callable[[], Awaitable[None]]] = []

    def track_topics(self, topics: Iterable[str]) -> None:
        """Keep the producer's metadata of `topics` fresh, however the topics first became known.

        aiokafka refreshes metadata only for the topics its client was asked about. A topic already in
        the client's first (all-topics) metadata is never added to that list, so a later refresh drops
        it, and every message to it then waits for a partition leader forever (the producer's flush,
        and with it every commit, hangs). kpimon's own topics exist before the worker starts, so they
        are exactly such topics.
        """
        client = self.producer_client().client
        for topic in topics:
            client.add_topic(topic)

    def producer_client(self) -> Any:
        """aiokafka's producer under Faust's (started with the app): for record-batch sends."""
        return compat.aiokafka_producer(self)

    async def on_stop(self) -> None:
        for hook in self.before_stop:
            await hook()
        await super().on_stop()


def run_worker(app: KpimonApp, loglevel: str, watchdog: Any = None) -> None:
    """Run the Faust worker of `app` in this process until it is stopped (SIGTERM, Ctrl-C).

    `watchdog` (runtime/outage.py's ShutdownWatchdog) is started when a signal asks the worker to stop.
    """
    import faust

    runner = (
        faust.Worker(app, loglevel=loglevel, quiet=True)
        if watchdog is None
        else compat.watched_worker()(app, loglevel=loglevel, quiet=True, watchdog=watchdog)
    )
    # Faust's terminal spinner, with a log level of warning or above, sets the root logger to DEBUG and
    # handles every record: each message of the hot path would then build aiokafka's and Faust's debug
    # log records (measured: 7 % of a worker's CPU). A worker's output is a log, not a terminal.
    runner.spinner = None
    runner.execute_from_commandline()


def faust_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `faust.App`: `broker_credentials` (Faust hands them to its aiokafka clients)."""
    import faust

    if settings.security_protocol == "PLAINTEXT":
        return {}
    context = ssl_context(settings)
    if settings.security_protocol == "SSL":
        return {"broker_credentials": faust.SSLCredentials(context)}
    # SASLCredentials with a context means SASL_SSL; its repr shows the user name only.
    return {
        "broker_credentials": faust.SASLCredentials(
            username=settings.sasl_username,
            password=read_secret("sasl_password_file", settings.sasl_password_file),
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    }
