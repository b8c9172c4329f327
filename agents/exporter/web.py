"""The worker's HTTP endpoints on Faust's web server: /metrics, /ready and /live.

With `web_auth_user` and `web_auth_password_file`, /metrics and /ready need HTTP basic auth; /live stays open
so a liveness probe needs no secret (it says only that the process answers). With `web_tls_cert_file` and
`web_tls_key_file`, the server speaks HTTPS only (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kpimon.agents.config.kafka_security import read_secret
from kpimon.agents.config.settings import Settings

if TYPE_CHECKING:
    from kpimon.agents.app import Kpimon

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


def register_web(kpimon: Kpimon) -> None:
    """Serve the metrics registry and the health endpoints on the app's web port."""
    app = kpimon.app
    auth = basic_auth(kpimon.settings)

    def protected(handler: Handler) -> Handler:
        if auth is None:
            return handler

        @functools.wraps(handler)  # Faust names the view class after the function
        async def guarded(web: Any, request: Any) -> Any:
            if not auth.allows(request.headers.get("Authorization")):
                return web.text(
                    "authentication required\n",
                    status=401,
                    headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                )
            return await handler(web, request)

        return guarded

    @app.page("/metrics")
    @protected
    async def metrics(web: Any, request: Any) -> Any:
        body = generate_latest(kpimon.registry)
        # The exposition format version travels in the Content-Type, as Prometheus expects.
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/ready")
    @protected
    async def ready(web: Any, request: Any) -> Any:
        # 503 while starting or rebalancing, so a load balancer or Kubernetes waits for it.
        if kpimon.ready:
            return web.json({"ready": True})
        return web.json({"ready": False}, status=503)

    @app.page("/live")
    async def live(web: Any, request: Any) -> Any:
        # Never behind auth: a liveness probe must not need a secret, and this says nothing but "alive".
        return web.json({"live": True})
