"""Shared fixtures: one real Kafka broker per test session, unique topic prefixes per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from agents.localkafka import LocalKafka
from tests.helpers import free_port


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
