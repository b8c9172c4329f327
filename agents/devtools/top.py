"""`kpimon top`: a live terminal view of kpimon-kpis and of the workers' pipeline figures.

A consumer without a group reads every partition of kpimon-kpis from the beginning and then keeps
following it, so the view always holds the latest record per key. Workers' /metrics are scraped every
refresh for events/s, dead letters and lag. On a terminal the view is a full-screen rich `Live`; when
stdout is not a terminal (or with --plain) it prints one plain line per refresh instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from rich.console import Console, RenderableType
from rich.live import Live

from kpimon.agents.config.kafka_security import aiokafka_options, read_secret
from kpimon.agents.config.options import broker_option, kafka_options, topic_prefix_option
from kpimon.agents.config.settings import Settings
from kpimon.agents.config.topics import topic_partitions
from kpimon.agents.devtools.top_view import (
    PLAIN_LEGEND,
    KpiIndex,
    PipelineFigures,
    PipelineTotals,
    ViewInfo,
    parse_metrics,
    pipeline_figures,
    plain_line,
    render_view,
)
from kpimon.streams import output

#: The segment dimensions of kpimon-kpis (docs/definitions.md), `all` for the whole population.
DIMENSIONS = ("all", "platform", "plan", "stage")

#: Seconds `--once` waits for the topic to be read to its end ...
ONCE_TIMEOUT = 60.0
#: ... and for the broker to answer at all.
ONCE_CONNECT_TIMEOUT = 10.0
#: Columns of the `--svg` picture.
SVG_WIDTH = 82


@dataclass(frozen=True)
class TopConfig:
    """What `kpimon top` shows and how often."""

    broker: str
    topic: str
    metrics_urls: tuple[str, ...] = ()
    dimension: str = "all"
    segment: str | None = "all"  # None: every segment of `dimension`, side by side
    interval: float = 2.0
    plain: bool | None = None  # None: plain when stdout is not a terminal
    once: bool = False
    #: With `once`: save the view as an SVG picture here (rich's export) instead of printing it.
    svg: Path | None = None
    #: Security options of the Kafka clients (kpimon.agents.config.kafka_security.aiokafka_options).
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    #: How to reach workers whose /metrics need basic auth or HTTPS with a private CA.
    metrics_access: MetricsAccess | None = None


@dataclass(frozen=True)
class MetricsAccess:
    """Basic auth and TLS trust for scraping workers' /metrics (docs/security.md)."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    def request(self, url: str) -> urllib.request.Request:
        """A GET of `url` with the Authorization header, if any."""
        request = urllib.request.Request(url)  # noqa: S310 (URL given by the user)
        if self.user is not None and self.password is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def context(self) -> ssl.SSLContext | None:
        """The TLS context of https URLs: the CA file's, else the system CAs (None)."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener that follows a redirect only within the origin of the request (docs/security.md).

        urllib's own redirect handling copies the request's headers, Authorization included, to wherever
        the redirect points: a worker's port taken over (or a misconfigured proxy) would get the password.
        """
        return urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self.context()), SameOriginRedirects()
        )


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port explicit: what a redirect must keep to carry credentials."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects within the request's origin; refuses (raises HTTPError) any to another one."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if origin(newurl) != origin(req.full_url):
            raise urllib.error.HTTPError(
                req.full_url, code, f"refused a redirect to another origin ({msg})", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class KpiFeed:
    """Follows a KPI topic into a `KpiIndex`: from the beginning to the end once, then every new record.

    `state` says how it goes ("connecting", "waiting for <topic>", "loading", "live", or the error), and
    `loaded` is set once every partition was read to the end offset it had when the feed started.
    """

    def __init__(
        self, bootstrap: str, topic: str, retry: float = 1.0, options: Mapping[str, Any] | None = None
    ) -> None:
        self.bootstrap, self.topic, self.retry = bootstrap, topic, retry
        self.options = dict(options or {})
        self.index = KpiIndex()
        self.state = "connecting"
        self.missing_topic = False
        self.unreachable = False
        self.undecodable = 0
        self.loaded = asyncio.Event()
        self.closing = False
        self._positions: dict[int, int] = {}

    def close(self) -> None:
        """Ask `run` to end within one poll (half a second), also if a cancellation of it got lost."""
        self.closing = True

    async def run(self) -> None:
        """Consume until closed or cancelled, retrying after any error (broker down, no topic yet)."""
        while not self.closing:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except KafkaConnectionError:
                self.unreachable = True
                self.state = f"cannot reach {self.bootstrap}"
            except Exception as exc:
                self.state = f"error: {type(exc).__name__}: {exc}"[:60]
            await asyncio.sleep(self.retry)

    async def _consume(self) -> None:
        partitions = await topic_partitions(self.bootstrap, self.topic, self.options)
        self.unreachable = False
        self.missing_topic = not partitions
        if not partitions:
            self.state = f"waiting for {self.topic}"
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            **self.options,
            client_id="kpimon-top",
            group_id=None,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in self._positions:
                    consumer.seek(tp, self._positions[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            end = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if end[tp] > self._positions.get(tp.partition, 0)}
            if not self.loaded.is_set():
                self.state = "loading" if remaining else "live"
                if not remaining:
                    self.loaded.set()
            while not self.closing:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        self._apply(record.key, record.value)
                        self._positions[tp.partition] = record.offset + 1
                    if tp in remaining and self._positions.get(tp.partition, 0) >= end[tp]:
                        remaining.discard(tp)
                if not remaining:
                    self.state = "live"
                    self.loaded.set()
        finally:
            await consumer.stop()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            self.index.discard(key.decode(errors="replace"))  # a tombstone deletes the key
            return
        try:
            self.index.put(output.decode(value))
        except ValueError:  # msgspec.DecodeError / ValidationError are ValueErrors
            self.undecodable += 1


def scrape(url: str, timeout: float = 2.0, access: MetricsAccess | None = None) -> PipelineTotals | None:
    """The pipeline totals of one worker's /metrics; None when it does not answer (or refuses us)."""
    access = access or MetricsAccess()
    try:
        with access.opener().open(access.request(url), timeout=timeout) as response:
            text = response.read().decode()
        return parse_metrics(text, time.monotonic())
    except (OSError, ValueError):
        return None


class MetricsPoller:
    """Scrapes workers' /metrics and keeps each one's previous totals, for events/s."""

    def __init__(self, urls: tuple[str, ...], access: MetricsAccess | None = None) -> None:
        self.urls = urls
        self.access = access
        self._last: dict[str, PipelineTotals] = {}
        self.figures = PipelineFigures(urls=len(urls))

    async def poll(self) -> PipelineFigures:
        """Scrape every URL (concurrently) and return the new figures."""
        if not self.urls:
            return self.figures
        current = await asyncio.gather(
            *(asyncio.to_thread(scrape, url, 2.0, self.access) for url in self.urls)
        )
        pairs = [(self._last.get(url), cur) for url, cur in zip(self.urls, current, strict=True)]
        for url, cur in zip(self.urls, current, strict=True):
            if cur is not None:
                self._last[url] = cur
        self.figures = pipeline_figures(pairs)
        return self.figures


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _where(config: TopConfig, index: KpiIndex) -> tuple[str, str | None]:
    """The dimension and segment to show: a segment given without its dimension is looked up."""
    if config.dimension == "all" and config.segment not in (None, "all"):
        return index.dimension_of(config.segment) or "all", config.segment
    return config.dimension, config.segment


def _plain_lines(config: TopConfig, feed: KpiFeed, figures: PipelineFigures) -> list[str]:
    """One line for the segment shown, or one per segment of the dimension (at least one line)."""
    dimension, segment = _where(config, feed.index)
    segments = [segment] if segment is not None else (feed.index.segments(dimension) or ["all"])
    clock = _clock()
    return [
        plain_line(feed.index, figures, dimension=dimension, segment=seg, clock=clock, state=feed.state)
        for seg in segments
    ]


def _render(
    config: TopConfig, feed: KpiFeed, figures: PipelineFigures, info: ViewInfo, width: int
) -> RenderableType:
    dimension, segment = _where(config, feed.index)
    return render_view(feed.index, figures, info, dimension=dimension, segment=segment, width=width)


#: How long the view waits for its KPI feed to stop (it needs at most one half-second poll).
FEED_STOP_SECONDS = 5.0


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _main(config: TopConfig, plain: bool, watch: Callable[[], None] | None) -> bool:
    """Run the view; returns whether it ended on Ctrl-C (SIGINT)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()

    previous_term = signal.getsignal(signal.SIGTERM)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if not config.once:
        # Ctrl-C ends the view through `stop`, not by cancelling this task (asyncio.run's default): a
        # cancellation can be lost on the way through the thread-pool scrapes and aiokafka, and the demo then
        # kept refreshing after Ctrl-C (seen about once in five runs).
        loop.add_signal_handler(signal.SIGINT, interrupt)
    feed = KpiFeed(config.broker, config.topic, options=config.kafka_options)
    poller = MetricsPoller(config.metrics_urls, config.metrics_access)
    feed_task = asyncio.create_task(feed.run(), name="kpimon-top-feed")
    source = f"{config.topic} @ {config.broker}"

    def info() -> ViewInfo:
        return ViewInfo(source=source, state=feed.state, clock=_clock(), metrics=config.metrics_urls)

    try:
        if config.once:
            await _once(config, plain, feed, poller, info)
        elif plain:
            click.echo(PLAIN_LEGEND)
            while not stop.is_set():
                if watch is not None:
                    watch()
                figures = await poller.poll()
                for line in _plain_lines(config, feed, figures):
                    click.echo(line)
                await _sleep_or_stop(stop, config.interval)
        else:
            console = Console()
            with Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
                while not stop.is_set():
                    if watch is not None:
                        watch()
                    figures = await poller.poll()
                    live.update(_render(config, feed, figures, info(), console.width), refresh=True)
                    await _sleep_or_stop(stop, config.interval)
    finally:
        feed.close()
        feed_task.cancel()
        # Bounded: the feed ends within a poll once closed, even if the cancellation is swallowed.
        await asyncio.wait({feed_task}, timeout=FEED_STOP_SECONDS)
        if not config.once:
            loop.remove_signal_handler(signal.SIGINT)  # back to Python's default (KeyboardInterrupt)
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous_term)
    return interrupted


async def _once(
    config: TopConfig,
    plain: bool,
    feed: KpiFeed,
    poller: MetricsPoller,
    info: Callable[[], ViewInfo],
) -> None:
    """Read the topic to its end, scrape the metrics twice (for events/s) and show one view."""
    started = time.monotonic()
    await poller.poll()
    deadline = started + ONCE_TIMEOUT
    while not feed.loaded.is_set():
        if feed.missing_topic:
            raise click.ClickException(f"topic {config.topic} does not exist on {config.broker}")
        waited = time.monotonic() - started
        if time.monotonic() > deadline or (feed.unreachable and waited > ONCE_CONNECT_TIMEOUT):
            raise click.ClickException(f"could not read {config.topic} ({feed.state})")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(feed.loaded.wait(), 0.2)
    await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    figures = await poller.poll()
    if config.svg is not None:
        # A terminal of the README's width, recorded instead of shown.
        console = Console(record=True, width=SVG_WIDTH, force_terminal=True, file=io.StringIO())
        console.print(_render(config, feed, figures, info(), SVG_WIDTH))
        console.save_svg(str(config.svg), title="kpimon top")
        click.echo(f"saved {config.svg}", err=True)
    elif plain:
        for line in _plain_lines(config, feed, figures):
            click.echo(line)
    else:
        console = Console()
        console.print(_render(config, feed, figures, info(), console.width))


def run_top(config: TopConfig, watch: Callable[[], None] | None = None) -> None:
    """Show the view until Ctrl-C (KeyboardInterrupt, raised to the caller) or SIGTERM (returns).

    `watch` is called before every refresh; an exception it raises ends the view and propagates (the demo
    uses it to stop when one of its processes died). Runs its own event loop, in the calling thread.
    """
    plain = config.plain if config.plain is not None else not sys.stdout.isatty()
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)  # the view says when the broker is unreachable
    try:
        interrupted = asyncio.run(_main(config, plain, watch))
    finally:
        kafka_log.setLevel(level)
    if interrupted:
        raise KeyboardInterrupt


def _default_metrics_url() -> str:
    settings = Settings()
    return f"http://{settings.web_host}:{settings.web_port}/metrics"


@click.command(short_help="Live terminal view of the KPIs, their targets and breaches, and the pipeline.")
@broker_option
@topic_prefix_option
@click.option(
    "--metrics-url",
    "metrics_urls",
    multiple=True,
    metavar="URL",
    help="A worker's /metrics, for events/s, dead letters and lag; repeat for several workers."
    f"  [default: {_default_metrics_url()}]",
)
@click.option(
    "--web-auth-user",
    envvar="KPIMON_WEB_AUTH_USER",
    help="Basic auth user of the workers' /metrics (as the worker's option).  [default: none]",
)
@click.option(
    "--web-auth-password-file",
    envvar="KPIMON_WEB_AUTH_PASSWORD_FILE",
    help="File holding the basic auth password of the workers' /metrics.  [default: none]",
)
@click.option(
    "--metrics-ca-file",
    help="PEM CA of https --metrics-url certificates.  [default: the system CAs]",
)
@click.option(
    "--no-metrics", is_flag=True, help="Do not read any /metrics (no pipeline figures).", show_default=False
)
@click.option(
    "--dimension",
    type=click.Choice(DIMENSIONS),
    default="all",
    show_default=True,
    help="Segment dimension to show; other than `all` without --segment: all its segments side by side.",
)
@click.option(
    "--segment",
    help="One segment to show, with sparklines (e.g. android, pro, onboarding; the dimension is found "
    "when --dimension is all).  [default: all]",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--plain",
    is_flag=True,
    help="Print one plain line per refresh, even on a terminal (the default when stdout is not one).",
    show_default=False,
)
@click.option("--once", is_flag=True, help="Show the current values once and exit.", show_default=False)
@click.option(
    "--svg",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the view once as an SVG picture (rich's export) and exit.",
)
@kafka_options
def top(
    broker: str | None,
    topic_prefix: str | None,
    metrics_urls: tuple[str, ...],
    no_metrics: bool,
    dimension: str,
    segment: str | None,
    interval: float,
    plain: bool,
    once: bool,
    svg: Path | None,
    web_auth_user: str | None,
    web_auth_password_file: str | None,
    metrics_ca_file: str | None,
    kafka: dict[str, Any],
) -> None:
    """A live terminal view of kpimon-kpis: DAU/WAU/MAU, stickiness, churn, NPS, CSAT and response rates,
    each with its target, a 14-day sparkline and a BREACH mark, plus the pipeline (events/s, dead
    letters, lag) from the workers' /metrics.

    \b
    Examples:
      kpimon top                                   # all users; Ctrl-C quits
      kpimon top --dimension platform              # every platform side by side
      kpimon top --dimension plan --segment pro    # one segment, with sparklines
      kpimon top --plain --interval 10 >> kpis.log # plain lines (also when piped)
    """
    try:
        settings = Settings.from_env(
            broker=broker,
            topic_prefix=topic_prefix,
            web_auth_user=web_auth_user,
            web_auth_password_file=web_auth_password_file,
            **kafka,
        )
        security = aiokafka_options(settings)
        password = (
            read_secret("web_auth_password_file", settings.web_auth_password_file)
            if settings.web_auth_user
            else None
        )
    except ValueError as exc:  # a bad setting or an unreadable secret file
        raise click.UsageError(str(exc)) from None
    if segment is None and dimension == "all":
        segment = "all"
    urls = () if no_metrics else (metrics_urls or (_default_metrics_url(),))
    config = TopConfig(
        broker=settings.broker,
        topic=settings.kpis,
        metrics_urls=urls,
        dimension=dimension,
        segment=segment,
        interval=interval,
        plain=False if svg is not None else (True if plain else None),
        once=once or svg is not None,
        svg=svg,
        kafka_options=security,
        metrics_access=MetricsAccess(settings.web_auth_user or None, password, metrics_ca_file),
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_top(config)
