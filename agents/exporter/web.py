"""The worker's HTTP endpoints on Faust's web server: /metrics, /ready and /live, and nothing else.

With `web_auth_user` and `web_auth_password_file`, every request but one of /live needs HTTP basic auth; /live
stays open so a liveness probe needs no secret (it says only that the process answers). With
`web_tls_cert_file` and `web_tls_key_file`, the server speaks HTTPS only (docs/security.md).

Faust's own views (/table, /router, statistics, graph, performance) are switched off with Faust's settings;
its index `/` cannot be, so one aiohttp middleware answers 404 for every route kpimon does not document
(after the auth check, so without credentials no path tells whether it exists). The middleware and the
server's timeouts and error log go in through `web_application_options`, Faust's public way to configure
the aiohttp application.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web as aiohttp_web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from kpimon.agents.config.kafka_security import read_secret
from kpimon.agents.config.settings import Settings
from kpimon.agents.exporter import exposition

Handler = Callable[[Any, Any], Awaitable[Any]]
REALM = "kpimon"


def web_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context of the web endpoints, or None for plain HTTP."""
    if not settings.web_tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.web_tls_cert_file, settings.web_tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load web_tls_cert_file/web_tls_key_file ({settings.web_tls_cert_file}): {exc}"
        ) from None
    return context


class BasicAuth:
    """Checks an `Authorization: Basic ...` header against one user and password, in constant time."""

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()

    def __repr__(self) -> str:
        return f"BasicAuth(user={self._user.decode()!r})"

    def allows(self, header: str | None) -> bool:
        """Whether the header carries this user and password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        # Both compared whatever the first says, so the time taken does not tell which one was wrong.
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return bool(sep) and user_ok and password_ok


def basic_auth(settings: Settings) -> BasicAuth | None:
    """The basic-auth check the settings ask for (the password read from its file), or None."""
    if not settings.web_auth_user:
        return None
    password = read_secret("web_auth_password_file", settings.web_auth_password_file)
    return BasicAuth(settings.web_auth_user, password)


#: The paths kpimon serves (docs/security.md); any other answers 404 (401 first when auth is on).
ROUTES = ("/metrics", "/ready", "/live")
#: The one path served without credentials.
OPEN_ROUTES = ("/live",)
#: Faust's built-in views, all off: each exposes internals, /table even table rows by key (user ids).
FAUST_VIEWS_OFF = {
    "web_tables_enabled": False,
    "web_router_enabled": False,
    "web_stats_enabled": False,
    "web_graph_enabled": False,
    "web_metrics_enabled": False,
}
#: At most one log line about malformed requests per this many seconds; the next line counts the rest.
BAD_REQUEST_LOG_INTERVAL = 60.0


def auth_middleware(auth: BasicAuth | None) -> Any:
    """The aiohttp middleware: 401 without valid credentials (except /live), 404 outside `ROUTES`."""

    @aiohttp_web.middleware
    async def guard(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
        # The matched resource, not the raw path: "/live/", "//live" or "/%6Cive" are not /live.
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else None
        if path in OPEN_ROUTES:
            response: aiohttp_web.StreamResponse = await handler(request)
            return response
        if auth is not None and not auth.allows(request.headers.get("Authorization")):
            return aiohttp_web.Response(
                text="authentication required\n",
                status=401,
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        if path not in ROUTES:
            return aiohttp_web.Response(text="not found\n", status=404)
        response = await handler(request)
        return response

    return guard


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger of aiohttp's request handler, with malformed requests logged safely.

    aiohttp logs a request its parser refuses (it answers 400) at ERROR with the traceback, whose message
    quotes the offending bytes: a header with credentials ends up in the log, and anyone who reaches the
    port can flood it. Here each such request is one WARNING line without any request bytes (the
    exception's class name and the client address only), at most one per `interval` seconds; the next
    line says how many were left out. Every bad request is counted in `kpimon_web_bad_requests_total`.
    Everything else goes to the `aiohttp.server` logger unchanged.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        interval: float = BAD_REQUEST_LOG_INTERVAL,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})
        self.interval = interval
        self.clock = clock
        self.bad_requests = Counter(
            "kpimon_web_bad_requests",
            "Malformed HTTP requests the web server refused with 400 (not logged beyond one line a minute).",
            registry=registry,
        )
        self._last_line: float | None = None
        self._left_out = 0

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log as given, unless the record is about a request the HTTP parser refused."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            self.bad_request(exc, args[0] if args else None)
            return
        super().log(level, msg, *args, **kwargs)

    def bad_request(self, exc: HttpProcessingError, remote: object) -> None:
        """Count a refused request; log it at WARNING unless a line was written within `interval`."""
        self.bad_requests.inc()
        now = self.clock()
        if self._last_line is not None and now - self._last_line < self.interval:
            self._left_out += 1
            return
        left_out, self._left_out, self._last_line = self._left_out, 0, now
        more = f"; {left_out} more since the last such line" if left_out else ""
        # The class name says what was wrong; the message would quote the request's bytes.
        self.logger.warning(
            "malformed HTTP request from %s refused with 400 (%s)%s", remote, type(exc).__name__, more
        )


def web_warnings(settings: Settings) -> list[str]:
    """What a worker warns about at start: web settings that leave a secret or the data exposed."""
    warnings = []
    if settings.web_auth_user and not settings.web_tls_cert_file:
        warnings.append(
            "web basic auth without TLS: the password of web_auth_user crosses the network in clear text "
            "with every request to /metrics and /ready; set web_tls_cert_file and web_tls_key_file "
            "(docs/security.md)"
        )
    return warnings


def web_options(settings: Settings, registry: CollectorRegistry) -> dict[str, Any]:
    """Keyword arguments of `faust.App` for the web server: Faust's views off, auth, timeouts, safe log."""
    return {
        **FAUST_VIEWS_OFF,
        "web_ssl_context": web_ssl_context(settings),
        "web_application_options": {
            "middlewares": [auth_middleware(basic_auth(settings))],
            # Keyword arguments of aiohttp's request handler, for every connection.
            "handler_args": {
                # Closes a connection without a complete request for this long: idle keep-alive, idle TLS,
                # and headers never finished (the timer is not reset by partial data).
                "keepalive_timeout": settings.web_timeout,
                "logger": ServerLog(registry),
            },
        },
    }


class Served(Protocol):
    """What the endpoints serve (the worker's `Kpimon`, built in agents/app.py)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def app(self) -> Any: ...
    @property
    def registry(self) -> CollectorRegistry: ...
    @property
    def ready(self) -> bool: ...


def register_web(kpimon: Served) -> None:
    """Serve the metrics registry and the health endpoints on the app's web port (auth: `auth_middleware`)."""
    # Faust's web views are registered with `app.page(path)`; typed here, the app itself is the runtime's.
    page: Callable[[str], Callable[[Handler], Handler]] = kpimon.app.page

    @page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # In slices: the source reader shares this loop (exposition.py).
        body = await exposition.render(kpimon.registry)
        # The exposition format version travels in the Content-Type, as Prometheus expects.
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        # 503 while starting or rebalancing, so a load balancer or Kubernetes waits for it.
        if kpimon.ready:
            return web.json({"ready": True})
        return web.json({"ready": False}, status=503)

    @page("/live")
    async def live(web: Any, request: Any) -> Any:
        # Never behind auth: a liveness probe must not need a secret, and this says nothing but "alive".
        return web.json({"live": True})
