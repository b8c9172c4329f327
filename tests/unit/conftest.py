"""Fixtures of the unit tests that handle secrets and certificates (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.certs import Pki, make_pki
from tests.security import SECRET


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates and keys, made once per test module."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file holding SECRET and a newline, as secret files are written."""
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    return path
