"""Secrets never show in a repr, and a worker warns at start when basic auth runs without TLS."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import faust

from kpimon.agents.config.kafka_security import Secret, aiokafka_options, read_secret
from kpimon.agents.config.settings import Settings
from kpimon.agents.devtools.top import KpiFeed, MetricsAccess, TopConfig
from kpimon.agents.exporter.web import basic_auth, web_warnings
from kpimon.agents.pipeline.deadletters import Redactor
from kpimon.agents.runtime.faust_app import faust_options
from tests.certs import Pki
from tests.helpers import KPIMON, free_port
from tests.security import SECRET


def test_a_secret_is_a_string_everywhere_but_in_its_repr() -> None:
    secret = Secret(SECRET)
    assert secret == SECRET and secret.encode() == SECRET.encode() and f"{secret}" == SECRET
    assert "\0".join(["user", secret]) == f"user\0{SECRET}"  # how SASL PLAIN builds its message
    logged = logging.LogRecord("kpimon", logging.INFO, __file__, 1, "options %r", ({"p": secret},), None)
    for shown in (
        repr(secret),
        repr([secret]),
        repr({"password": secret}),
        f"{secret!r}",
        logged.getMessage(),
    ):
        assert SECRET not in shown, shown


def test_no_repr_of_a_client_configuration_shows_a_secret(secret_file: Path, pki: Pki) -> None:
    settings = Settings.from_env(
        {},
        security_protocol="SASL_SSL",
        sasl_username="kpimon",
        sasl_password_file=str(secret_file),
        ssl_ca_file=str(pki.ca),
        web_auth_user="prometheus",
        web_auth_password_file=str(secret_file),
        dead_letter_redact=True,
        dead_letter_redact_key_file=str(secret_file),
    )
    options = aiokafka_options(settings)
    assert options["sasl_plain_password"] == SECRET  # the client still gets the password
    password = read_secret("web_auth_password_file", settings.web_auth_password_file)
    config = TopConfig(
        broker=settings.broker,
        topic=settings.kpis,
        kafka_options=options,
        metrics_access=MetricsAccess("prometheus", password, None),
    )
    feed = KpiFeed(settings.broker, settings.kpis, options=options)
    shown = [
        repr(settings),
        repr(options),
        repr(dict(options)),  # a copy, as `kpimon top` makes
        repr(feed.options),
        repr(config),
        repr(faust_options(settings)),
        repr(faust_options(settings)["broker_credentials"].__dict__),
        repr(basic_auth(settings)),
        repr(Redactor(read_secret("k", str(secret_file)).encode())),
        str(options),
    ]
    for text in shown:
        assert SECRET not in text, text
    assert isinstance(faust_options(settings)["broker_credentials"], faust.SASLCredentials)


def test_basic_auth_without_tls_is_warned_about(secret_file: Path, pki: Pki) -> None:
    auth = {"web_auth_user": "prometheus", "web_auth_password_file": str(secret_file)}
    tls = {"web_tls_cert_file": str(pki.server_cert), "web_tls_key_file": str(pki.server_key)}
    (warning,) = web_warnings(Settings.from_env({}, **auth))
    assert "without TLS" in warning and "web_tls_cert_file" in warning
    assert web_warnings(Settings.from_env({}, **auth, **tls)) == []
    assert web_warnings(Settings.from_env({}, **tls)) == []
    assert web_warnings(Settings()) == []


def test_the_worker_warns_at_start(secret_file: Path, tmp_path: Path) -> None:
    """The real command: the warning comes before it even reaches for Kafka (none listens here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")}
    result = subprocess.run(
        [
            *(KPIMON, "worker", "--broker", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path)),
            *("--web-auth-user", "prometheus", "--web-auth-password-file", str(secret_file)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0  # no broker
    assert "WARNING" in result.stderr and "web basic auth without TLS" in result.stderr, result.stderr
    assert SECRET not in result.stderr + result.stdout
