"""Test access to Kafka over each security protocol: the same tests run over PLAINTEXT, SASL_SSL and mTLS.

`SecureKafka` is a session's LocalKafka with SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners and the
files its clients need; `Access` is how one test connects: the bootstrap address, the aiokafka options of
its own clients and the `kpimon` flags that make a worker or a command connect the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.settings import Settings
from kpimon.agents.devtools.localkafka import LocalKafka
from tests.certs import Pki

SCRAM_USER = "kpimon-test"
SCRAM_PASSWORD = "scram-Pa55-for-tests"
#: The password in the unit tests' `secret_file`: it must never show in a repr, a log or a message.
SECRET = "s3cr3t-that-must-never-show-in-a-repr"


@dataclass(frozen=True)
class SecureKafka:
    """A running LocalKafka with secure listeners, its PKI and a file holding the SCRAM password."""

    broker: LocalKafka
    pki: Pki
    password_file: Path
    wrong_password_file: Path


@dataclass(frozen=True)
class Access:
    """How a test reaches Kafka: `bootstrap`, options for aiokafka clients, flags for `kpimon` commands."""

    name: str
    bootstrap: str
    flags: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def access(name: str, plaintext_bootstrap: str, secure: SecureKafka | None) -> Access:
    """The Access called `name`: plaintext, sasl_ssl or mtls."""
    if name == "plaintext":
        return Access(name, plaintext_bootstrap)
    assert secure is not None
    pki = secure.pki
    if name == "sasl_ssl":
        bootstrap = secure.broker.sasl_ssl_bootstrap
        flags = (
            "--security-protocol=SASL_SSL",
            f"--sasl-username={SCRAM_USER}",
            f"--sasl-password-file={secure.password_file}",
            f"--ssl-ca-file={pki.ca}",
        )
        settings = Settings.from_env(
            {},
            broker=bootstrap,
            security_protocol="SASL_SSL",
            sasl_username=SCRAM_USER,
            sasl_password_file=str(secure.password_file),
            ssl_ca_file=str(pki.ca),
        )
    elif name == "mtls":
        bootstrap = secure.broker.ssl_bootstrap
        flags = (
            "--security-protocol=SSL",
            f"--ssl-ca-file={pki.ca}",
            f"--ssl-cert-file={pki.client_cert}",
            f"--ssl-key-file={pki.client_key}",
        )
        settings = Settings.from_env(
            {},
            broker=bootstrap,
            security_protocol="SSL",
            ssl_ca_file=str(pki.ca),
            ssl_cert_file=str(pki.client_cert),
            ssl_key_file=str(pki.client_key),
        )
    else:
        raise ValueError(name)
    return Access(name, bootstrap, flags, aiokafka_options(settings))
