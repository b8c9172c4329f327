"""The worker's web port without a broker: the routes Faust's web app really has, auth on all but /live,
malformed requests answered 400 and logged once without their bytes, and slow clients cut off.

The app is the one `create_app` builds (Faust's views, kpimon's pages and middleware), served by aiohttp's
test server, which honours the same `handler_args` as Faust's runner. tests/integration/test_security.py
repeats the essentials against a running worker with HTTPS.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import Application
from prometheus_client import CollectorRegistry

from kpimon.agents.app import create_app
from kpimon.agents.config.settings import Settings
from kpimon.agents.exporter.web import FAUST_VIEWS_OFF, OPEN_ROUTES, ROUTES, ServerLog
from tests.certs import Pki, make_pki

USER, PASSWORD = "prometheus", "web-Pa55-in-a-unit-test"
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def web_app(tmp_path: Path, auth: bool = True) -> tuple[Application, CollectorRegistry]:
    """The aiohttp application of a worker built with basic auth (or none) and a 1 s web timeout."""
    password = tmp_path / "web-password"
    password.write_text(PASSWORD + "\n")
    more: dict[str, Any] = {"web_auth_user": USER, "web_auth_password_file": str(password)} if auth else {}
    settings = Settings(data_dir=tmp_path / "state", web_timeout=TIMEOUT, **more)
    registry = CollectorRegistry()
    kpimon = create_app(settings, registry=registry)
    web = kpimon.app.web
    web.init_server()  # Faust's blueprints and kpimon's pages onto the aiohttp app, as at start
    application: Application = web.web_app
    return application, registry


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TestServer]:
    application, _ = web_app(tmp_path)
    async with TestServer(application) as test_server:
        yield test_server


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def status(server: TestServer, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.make_url(path), headers=headers, allow_redirects=False) as response,
    ):
        await response.read()
        return response.status


def test_faust_views_are_switched_off_by_its_settings(tmp_path: Path) -> None:
    kpimon = create_app(Settings(data_dir=tmp_path / "state"))
    for setting, value in FAUST_VIEWS_OFF.items():
        assert getattr(kpimon.app.conf, setting) is value, setting


async def test_every_registered_route_needs_credentials_except_live(tmp_path: Path) -> None:
    application, _ = web_app(tmp_path)
    routes = [
        (route.method, route.resource.canonical) for route in application.router.routes() if route.resource
    ]
    paths = {path for _, path in routes}
    assert set(ROUTES) <= paths
    assert not [
        p for p in paths if p.startswith(("/table", "/router", "/graph", "/performance", "/assignment"))
    ]
    assert paths - set(ROUTES) == {"/"}  # Faust's index: no setting removes it, the middleware hides it
    async with TestServer(application) as server:
        for method, path in routes:
            expected = 200 if path in OPEN_ROUTES else 401
            assert await status(server, method, path) == expected, (method, path)
            if path not in OPEN_ROUTES:
                assert await status(server, method, path, basic(USER, "wrong")) == 401, (method, path)
                assert await status(server, method, path, basic("someone", PASSWORD)) == 401, (method, path)
        # With credentials: kpimon's routes answer, everything else does not exist.
        good = basic(USER, PASSWORD)
        assert await status(server, "GET", "/metrics", good) == 200
        assert await status(server, "GET", "/ready", good) == 503  # not started
        for path in ("/", "/table/", "/table/user-state/dave@example.com/", "/router/", "/router/topics"):
            assert await status(server, "GET", path, good) == 404, path
            assert await status(server, "GET", path) == 401, path  # no path tells whether it exists
        # Only /live itself is open, not what merely looks like it (sent raw: clients normalise paths).
        for path in ("/live/", "//live", "/live/../metrics", "/live/%2e%2e/metrics", "/x/../metrics"):
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            answer = await raw_exchange(server, request)
            assert answer.startswith(b"HTTP/1.1 401 "), (path, answer[:60])


async def test_without_auth_only_the_documented_routes_exist(tmp_path: Path) -> None:
    application, _ = web_app(tmp_path, auth=False)
    async with TestServer(application) as server:
        assert await status(server, "GET", "/metrics") == 200
        assert await status(server, "GET", "/live") == 200
        for path in ("/", "/table/", "/router/", "/graph/", "/performance/"):
            assert await status(server, "GET", path) == 404, path


async def raw_exchange(server: TestServer, data: bytes) -> bytes:
    """Send raw bytes, return everything the server answers before it closes the connection."""
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_a_malformed_request_is_answered_400_and_logged_once_without_its_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    application, registry = web_app(tmp_path)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    # Valid credentials with a trailing control character: the parser refuses the header.
    request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\x01\r\n\r\n".encode()
    caplog.set_level(logging.DEBUG)
    async with TestServer(application) as server:
        answers = [await raw_exchange(server, request) for _ in range(5)]
    for answer in answers:
        assert answer.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), answer[:80]
    lines = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING  # rate-limited: one line for five
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith("aiohttp"))
    for secret in (token, PASSWORD, token[:12], "Basic "):
        assert secret not in caplog.text, secret
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert registry.get_sample_value("kpimon_web_bad_requests_total") == 5


def test_the_bad_request_log_is_rate_limited_and_counts_what_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = ServerLog(CollectorRegistry(), interval=60.0, clock=lambda: now[0])
    bad = aiohttp.http_exceptions.BadHttpMessage("Invalid header value char: b'secret'")
    caplog.set_level(logging.INFO, logger="aiohttp.server")
    for _ in range(4):
        log.exception("Error handling request from %s", "192.0.2.1", exc_info=bad)
    now[0] += 61
    log.exception("Error handling request from %s", "192.0.2.1", exc_info=bad)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "malformed HTTP request from 192.0.2.1 refused with 400 (BadHttpMessage)",
        "malformed HTTP request from 192.0.2.1 refused with 400 (BadHttpMessage)"
        "; 3 more since the last such line",
    ]
    # Anything else passes through unchanged (a handler's own error keeps its traceback).
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        log.exception("Error handling request", exc_info=exc)
    assert caplog.records[-1].levelno == logging.ERROR and caplog.records[-1].exc_info is not None


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (EOF or reset); fails after `seconds`."""
    started = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(1024), seconds):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connected, never a byte
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",  # headers never finished
        b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n",  # one request, then idle on keep-alive
    ],
    ids=["idle", "unfinished-headers", "idle-keep-alive"],
)
async def test_slow_clients_are_cut_off_after_the_web_timeout(tmp_path: Path, sent: bytes) -> None:
    application, _ = web_app(tmp_path)
    async with TestServer(application) as server:
        assert server.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(sent)
        await writer.drain()
        waited = await closed_within(reader, TIMEOUT + 3)
        writer.close()
    assert waited < TIMEOUT + 3


async def test_a_slowly_trickled_header_does_not_keep_the_connection(tmp_path: Path) -> None:
    application, _ = web_app(tmp_path)
    async with TestServer(application) as server:
        assert server.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        with pytest.raises((ConnectionError, OSError)):
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                if reader.at_eof():
                    raise ConnectionResetError("closed")
                await asyncio.sleep(0.2)
        writer.close()
    assert time.monotonic() - started < TIMEOUT + 3


async def test_an_idle_tls_connection_is_cut_off_after_the_web_timeout(tmp_path: Path, pki: Pki) -> None:
    application, _ = web_app(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(pki.server_cert, pki.server_key)
    server = TestServer(application)
    await server.start_server(ssl=server_context)
    try:
        assert server.port is not None
        client_context = ssl.create_default_context(cafile=str(pki.ca))
        # The handshake completes, then the client sends nothing.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_context)
        waited = await closed_within(reader, TIMEOUT + 3)
        writer.close()
    finally:
        await server.close()
    assert waited < TIMEOUT + 3
