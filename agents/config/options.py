"""The command-line options every Kafka-using command shares: the config file and the Kafka security settings.

Each option also reads its `KPIMON_<NAME>` variable; `Settings.from_env` gets them as overrides, so flags win
over the environment, which wins over the config file (docs/configuration.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from kpimon.agents.config.settings import SASL_MECHANISMS, SECURITY_PROTOCOLS

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = (
    click.option(
        "--config-file",
        envvar="KPIMON_CONFIG_FILE",
        help="TOML file of settings (name = value); flags and KPIMON_* variables win.  [default: none]",
    ),
    click.option(
        "--security-protocol",
        type=click.Choice(SECURITY_PROTOCOLS),
        envvar="KPIMON_SECURITY_PROTOCOL",
        help="Kafka security: PLAINTEXT, SSL (TLS, mutual with --ssl-cert-file) or SASL_SSL."
        "  [default: PLAINTEXT]",
    ),
    click.option(
        "--sasl-mechanism",
        type=click.Choice(SASL_MECHANISMS),
        envvar="KPIMON_SASL_MECHANISM",
        help="SASL mechanism of SASL_SSL.  [default: SCRAM-SHA-512]",
    ),
    click.option("--sasl-username", envvar="KPIMON_SASL_USERNAME", help="SASL user.  [default: none]"),
    click.option(
        "--sasl-password-file",
        envvar="KPIMON_SASL_PASSWORD_FILE",
        help="File holding the SASL password (never pass the password itself).  [default: none]",
    ),
    click.option(
        "--ssl-ca-file",
        envvar="KPIMON_SSL_CA_FILE",
        help="PEM file of the CA(s) of the broker certificates.  [default: the system CAs]",
    ),
    click.option(
        "--ssl-cert-file",
        envvar="KPIMON_SSL_CERT_FILE",
        help="PEM client certificate for mutual TLS.  [default: none]",
    ),
    click.option(
        "--ssl-key-file",
        envvar="KPIMON_SSL_KEY_FILE",
        help="PEM private key of --ssl-cert-file.  [default: none]",
    ),
    click.option(
        "--ssl-check-hostname/--no-ssl-check-hostname",
        default=None,
        envvar="KPIMON_SSL_CHECK_HOSTNAME",
        help="Check that the broker certificate names the broker host.  [default: check]",
    ),
)

#: The parameter names the options add.
NAMES = (
    "config_file",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password_file",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_check_hostname",
)


def kafka_options(command: F) -> F:
    """Add the shared options to a click command; it receives them as one dict, `kafka`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kafka = {name: kwargs.pop(name) for name in NAMES}
        return command(*args, kafka=kafka, **kwargs)

    decorated: Any = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]
