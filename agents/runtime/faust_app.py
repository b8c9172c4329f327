"""kpimon's Faust app class: Faust assigns the source partitions, kpimon's source reader fetches them.

Faust's per-event path (consumer thread -> conductor -> stream -> agent, one event at a time) tops out
far below what one process can decode and count (docs/architecture.md, "Throughput"). So the input
topics stay subscribed by the ingest agent -- Faust still assigns their partitions together with the
user-state table's changelog, recovers the table and handles rebalances -- but Faust's consumer never
fetches them: `agents/runtime/source_reader.py` reads the assigned partitions in bulk instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

#: Seconds a commit waits for the producer's flush before it gives up (and the next commit tries again).
COMMIT_FLUSH_TIMEOUT = 10.0


class BulkTopicsConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, except that it never fetches the app's `bulk_topics`."""

    def _is_bulk(self, tp: TP) -> bool:
        return tp.topic in getattr(self.app, "bulk_topics", ())

    def _set_active_tps(self, tps: set[TP]) -> set[TP]:
        active: set[TP] = super()._set_active_tps(tps)
        active.difference_update([tp for tp in active if self._is_bulk(tp)])
        return active

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        super().resume_partitions([tp for tp in tps if not self._is_bulk(tp)])

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        """Faust's commit of its offsets (the partials'), but never stuck on a producer that cannot flush.

        Faust flushes the producer before it commits (the aggregates changelog must hold what the
        committed offsets say was processed) and waits as long as that takes: while no broker answers,
        forever, and the worker's stop with it. Here the flush has a time limit; a flush that does not
        finish in time skips this commit, and the next one commits the same offsets.
        """
        # The offsets first: what is processed after the flush started may not be in it.
        offsets = self._filter_committable_offsets(tps)
        if not offsets:
            return False
        flush = asyncio.ensure_future(self.app.producer.flush())
        try:
            # Shielded: cancelling a flush half-way could drop a message it had taken from the buffer.
            await asyncio.wait_for(asyncio.shield(flush), COMMIT_FLUSH_TIMEOUT)
        except (TimeoutError, KafkaError):
            return False
        # The rest of Faust's own _commit_tps (kpimon attaches no messages to offsets; kept anyway).
        try:
            await self._handle_attached(offsets)
        except ProducerSendError as exc:
            await self.crash(exc)
            return False
        committed: bool = await self._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        return committed

    def verify_event_path(self, now: float, tp: TP) -> None:
        # Faust's "no events processed from this partition" warnings would be about partitions it
        # deliberately does not read.
        if not self._is_bulk(tp):
            super().verify_event_path(now, tp)


class KpimonApp(faust.App):
    """A Faust app whose consumer leaves `bulk_topics` to kpimon's source reader.

    `before_stop` coroutines run first when the app stops, while the consumer can still commit.
    """

    def __init__(self, *args: Any, bulk_topics: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bulk_topics = frozenset(bulk_topics)
        self.before_stop: list[Any] = []

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        # The transport's consumer class is a class attribute; this app's transport gets its own.
        transport.Consumer = BulkTopicsConsumer  # type: ignore[misc]
        return transport

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
        producer: Any = self.producer
        return producer._ensure_producer()

    async def on_stop(self) -> None:
        for hook in self.before_stop:
            await hook()
        await super().on_stop()


#: aiokafka's default retry backoff (retry_backoff_ms=100), restored when a broker answers again.
DEFAULT_RETRY_BACKOFF = 0.1


def set_retry_backoff(clients: Iterable[Any], seconds: float) -> None:
    """Make aiokafka clients (producers, consumers) wait `seconds` between their retries.

    aiokafka retries a failed metadata update, connection, fetch or coordinator lookup every
    `retry_backoff_ms` (100 ms), for as long as no broker answers: ten connection attempts a second per
    client, each logged, about a fifth of a core. It has no public way to change the backoff of a running
    client, so this sets the attributes its retry loops read (the outage watch raises them exponentially
    during an outage and restores the default afterwards; agents/runtime/outage.py).
    """
    for client in clients:
        if client is None:
            continue
        for network in (getattr(client, "client", None), getattr(client, "_client", None)):
            if network is not None:
                _back_off_metadata_updates(network)
        parts = [client, getattr(client, "client", None), getattr(client, "_client", None)]
        parts += [getattr(client, "_sender", None), getattr(client, "_fetcher", None)]
        for part in parts:
            if part is not None and hasattr(part, "_retry_backoff"):
                part._retry_backoff = seconds
        coordinator = getattr(client, "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "_retry_backoff_ms"):
            coordinator._retry_backoff_ms = seconds * 1000


def _back_off_metadata_updates(client: Any) -> None:
    """Wait the client's retry backoff after a failed metadata update (once per client).

    aiokafka's producer, with messages waiting for a partition leader, asks for a metadata update and
    waits for it; a failed update (no broker answers) returns at once, so the producer asks again at
    once: a loop of connection attempts bounded only by how fast they are refused (a fifth of a core
    while the broker is away, measured). The pause makes it retry at the backoff instead.
    """
    if getattr(client, "_kpimon_backoff", False):
        return
    update = client._metadata_update

    async def _metadata_update(cluster_metadata: Any, topics: Any) -> Any:
        updated = await update(cluster_metadata, topics)
        if not updated:
            await asyncio.sleep(client._retry_backoff)
        return updated

    client._metadata_update = _metadata_update
    client._kpimon_backoff = True


def faust_consumer_client(app: faust.App) -> Any:
    """The aiokafka consumer under Faust's consumer (in Faust's consumer thread), or None before it exists."""
    thread = getattr(app.consumer, "_thread", None)
    return getattr(thread, "_consumer", None)


class KpimonWorker(faust.Worker):
    """Faust's worker, arming a watchdog when SIGTERM or SIGINT asks it to stop.

    Faust's stop waits for the consumer's last commit and the producer's flush, which never finish while
    no broker answers: the watchdog ends the process after its grace period (agents/runtime/outage.py).
    """

    def __init__(self, *args: Any, watchdog: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watchdog = watchdog

    def _on_sigterm(self) -> None:
        self.watchdog.start()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self.watchdog.start()
        super()._on_sigint()
