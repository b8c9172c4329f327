"""How kpimon authenticates to Kafka: one place turns the settings into client options.

Every Kafka client of kpimon (the worker's Faust app, its topic pre-flight, replay, simulate, kpis, top) gets
its security options from here, so PLAINTEXT, TLS, mutual TLS and SASL_SSL (SCRAM) behave the same in all of
them. Secrets are read from their files when a client is built, never kept in `Settings`, never logged.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from kpimon.agents.config.settings import Settings


class Secret(str):
    """A secret read from its file: a `str` for every use, `<redacted>` in every repr.

    Containers show their items by repr, so an options dict, a dataclass or an exception holding one
    (aiokafka's options, `kpimon top`'s config) never shows the secret when printed or logged.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'"


class SecretFileError(ValueError):
    """A secret file cannot be read or is empty; the message names the setting, never the content."""


def read_secret(setting: str, path: str) -> Secret:
    """The content of a secret file without its trailing newline (as `echo secret > file` leaves it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretFileError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"{setting}: {path} is not UTF-8 text") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise SecretFileError(f"{setting}: {path} is empty")
    return Secret(secret)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context (CA, optional client certificate), or None for PLAINTEXT."""
    if settings.security_protocol == "PLAINTEXT":
        return None
    from aiokafka.helpers import create_ssl_context

    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.ssl_ca_file or None,
            certfile=settings.ssl_cert_file or None,
            keyfile=settings.ssl_key_file or None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise SecretFileError(
            f"cannot load the Kafka TLS files (ssl_ca_file, ssl_cert_file, ssl_key_file): {exc}"
        ) from None
    context.check_hostname = settings.ssl_check_hostname
    return context


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient/Client: security_protocol and friends."""
    if settings.security_protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    options: dict[str, Any] = {
        "security_protocol": settings.security_protocol,
        "ssl_context": ssl_context(settings),
    }
    if settings.security_protocol == "SASL_SSL":
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=read_secret("sasl_password_file", settings.sasl_password_file),
        )
    return options


def describe(settings: Settings) -> str:
    """How a client connects, for messages: e.g. `SASL_SSL (SCRAM-SHA-512 as kpimon)`; no secrets."""
    if settings.security_protocol == "SASL_SSL":
        return f"SASL_SSL ({settings.sasl_mechanism} as {settings.sasl_username})"
    if settings.security_protocol == "SSL":
        return "SSL with a client certificate" if settings.ssl_cert_file else "SSL"
    return "PLAINTEXT"
