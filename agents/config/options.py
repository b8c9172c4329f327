"""Command-line options made from the settings: one factory, so no command copies an option block.

`setting(name, help)` is the option of the `Settings` field `name`: `--name-with-dashes`, read from
`KPIMON_<NAME>` too, its default shown from `Settings` itself. The option has no default of its own: the
command passes the value (None when not given) to `Settings.from_env`, so flags win over the environment,
which wins over the config file (docs/configuration.md). `kafka_options` adds the options every
Kafka-using command shares (the config file and the Kafka security settings); `broker_option` and
`topic_prefix_option` are the two every topic-using command has.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import click

from kpimon.agents.config.settings import SASL_MECHANISMS, SECURITY_PROTOCOLS, Settings

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULTS = Settings()
_FIELDS = {f.name for f in fields(Settings)}


def _shown(value: object) -> str:
    """A default as the help text shows it: an empty setting is `none`."""
    if value in ("", None, ()):
        return "none"
    return str(value)


def setting(name: str, help: str, *, shown: str | None = None, **attrs: Any) -> Callable[[F], F]:
    """The click option of the setting `name`, with `help` and the default (`shown`, else Settings').

    A boolean setting becomes an on/off pair (`--x/--no-x`). `attrs` go to click.option (type, metavar).
    """
    if name not in _FIELDS:
        raise ValueError(f"{name!r} is not a setting")
    flag = "--" + name.replace("_", "-")
    default = getattr(_DEFAULTS, name)
    declarations = [f"{flag}/--no-{flag[2:]}"] if isinstance(default, bool) else [flag]
    return click.option(
        *declarations,
        name,
        default=None,
        envvar=f"KPIMON_{name.upper()}",
        help=f"{help}  [default: {shown if shown is not None else _shown(default)}]",
        **attrs,
    )


broker_option = setting("broker", "Kafka bootstrap HOST:PORT.")
topic_prefix_option = setting("topic_prefix", "Prefix of every topic name.")

#: The settings every Kafka-using command has as options: help text and click.option attributes.
_KAFKA_SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "config_file": ("TOML file of settings (name = value); flags and KPIMON_* variables win.", {}),
    "security_protocol": (
        "Kafka security: PLAINTEXT, SSL (TLS, mutual with --ssl-cert-file) or SASL_SSL.",
        {"type": click.Choice(SECURITY_PROTOCOLS)},
    ),
    "sasl_mechanism": ("SASL mechanism of SASL_SSL.", {"type": click.Choice(SASL_MECHANISMS)}),
    "sasl_username": ("SASL user.", {}),
    "sasl_password_file": ("File holding the SASL password (never pass the password itself).", {}),
    "ssl_ca_file": ("PEM file of the CA(s) of the broker certificates.", {"shown": "the system CAs"}),
    "ssl_cert_file": ("PEM client certificate for mutual TLS.", {}),
    "ssl_key_file": ("PEM private key of --ssl-cert-file.", {}),
    "ssl_check_hostname": ("Check that the broker certificate names the broker host.", {"shown": "check"}),
}
#: The parameter names `kafka_options` adds.
NAMES = tuple(_KAFKA_SETTINGS)
_KAFKA_OPTIONS = tuple(setting(name, help, **attrs) for name, (help, attrs) in _KAFKA_SETTINGS.items())


def kafka_options(command: F) -> F:
    """Add the shared options to a click command; it receives them as one dict, `kafka`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kafka = {name: kwargs.pop(name) for name in NAMES}
        return command(*args, kafka=kafka, **kwargs)

    decorated: Any = wrapper
    for option in reversed(_KAFKA_OPTIONS):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]
