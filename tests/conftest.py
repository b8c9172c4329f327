"""Shared fixtures: one real Kafka broker per test session, unique topic prefixes per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from kpimon.agents.devtools.localkafka import LocalKafka, SecureListeners
from kpimon.agents.pipeline.core import ENV as CORE_ENV
from tests.certs import make_pki
from tests.helpers import free_port
from tests.security import SCRAM_PASSWORD, SCRAM_USER, Access, SecureKafka, access
from tests.workers import requested_core


def batch_core_line() -> str:
    """Which batch core the tests' workers run (tests/workers.py checks each worker runs it)."""
    asked = os.environ.get(CORE_ENV)
    return f"kpimon workers' batch core: {requested_core()} ({CORE_ENV}={asked or 'unset: the default'})"


def pytest_report_header() -> str:
    """The batch core, in the header (which `-q` hides)."""
    return batch_core_line()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The batch core again, last before the result line, where `pytest -q` (CI's `make test`) shows it."""
    terminalreporter.write_line(batch_core_line())


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker for the whole session.

    KPIMON_TEST_BOOTSTRAP points the tests at an existing broker. Otherwise a LocalKafka is started on
    a free port with its run dir in the session's tmp dir (fresh data every session) but the default
    jar cache ($KPIMON_HOME/cache), so the jars are downloaded once per machine, not once per run.
    """
    external = os.environ.get("KPIMON_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    broker = LocalKafka(port=free_port(), home=tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture
def unique_prefix() -> str:
    """A fresh `t-<8 hex>-` prefix for topic names and app ids, so no two tests share topics or groups."""
    return f"t-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A second local broker for the session with SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners.

    Started only by the tests that ask for it; certificates are made for it with `cryptography`.
    """
    home = tmp_path_factory.mktemp("secure-kafka")
    pki = make_pki(home / "pki")
    password_file = home / "scram-password"
    password_file.write_text(SCRAM_PASSWORD + "\n")
    wrong_password_file = home / "wrong-password"
    wrong_password_file.write_text("not-" + SCRAM_PASSWORD + "\n")
    listeners = SecureListeners(
        sasl_ssl_port=free_port(),
        ssl_port=free_port(),
        keystore=pki.server_keystore,
        truststore=pki.ca,
        scram_users={SCRAM_USER: SCRAM_PASSWORD},
    )
    broker = LocalKafka(port=free_port(), home=home / "run", secure=listeners)
    try:
        broker.start()
        yield SecureKafka(broker, pki, password_file, wrong_password_file)
    finally:
        broker.stop()


@pytest.fixture(params=["plaintext", "sasl_ssl", "mtls"])
def kafka_access(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Access:
    """The same test over PLAINTEXT (the session broker), SASL_SSL and mutual TLS (the secure broker)."""
    secure = request.getfixturevalue("secure_kafka") if request.param != "plaintext" else None
    return access(request.param, kafka_bootstrap, secure)
