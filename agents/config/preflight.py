"""Pre-flight: can this process connect and authenticate to Kafka? One clear line when it cannot.

aiokafka's clients swallow the cause of a failed bootstrap (they log it and raise "Unable to bootstrap"), and
Faust retries forever; so before any client starts, one connection to the bootstrap broker goes through the
same TLS and SASL steps and its failure is turned into a message naming the cause and the setting to check.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from kpimon.agents import compat
from kpimon.agents.config.kafka_security import SecretFileError, aiokafka_options, describe
from kpimon.agents.config.settings import Settings


class KafkaAccessError(Exception):
    """This process cannot reach or authenticate to Kafka; str() is one line for the user."""


class KafkaUnreachableError(KafkaAccessError):
    """No answer from a broker (refused, timed out): another bootstrap broker may still answer."""


class KafkaHandshakeError(KafkaAccessError):
    """A broker closed or reset the connection during the handshake.

    Most likely the wrong security protocol (every broker would do the same), but a broker of a cluster that
    dies at that moment does it too: the other bootstrap brokers are tried before this is final.
    """


async def check_access(settings: Settings, timeout: float = 20.0) -> None:
    """Connect to a bootstrap broker and ask for metadata; KafkaAccessError saying why not.

    Brokers of a comma-separated `broker` are tried in turn while they do not answer or close the connection
    during the handshake (a broker dying at that moment does so too); a refused credential or certificate
    is final (every broker of a cluster would refuse it alike).
    """
    try:
        options = aiokafka_options(settings)
    except SecretFileError as exc:
        raise KafkaAccessError(str(exc)) from None
    brokers = [b.strip() for b in settings.broker.split(",") if b.strip()]
    handshake: KafkaHandshakeError | None = None
    for index, broker in enumerate(brokers):
        try:
            await _probe(broker, settings, options, timeout)
            return
        except KafkaHandshakeError as exc:
            handshake = handshake or exc
            if index == len(brokers) - 1:
                raise handshake from None
        except KafkaUnreachableError:
            if index == len(brokers) - 1:
                # A closed handshake names a cause (the protocol); an unreachable broker does not.
                if handshake is not None:
                    raise handshake from None
                raise


async def _probe(broker: str, settings: Settings, options: dict[str, Any], timeout: float) -> None:
    from aiokafka.errors import (
        KafkaConnectionError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    host, _, port = broker.rpartition(":")
    how = describe(settings)
    refused = f"cannot authenticate to Kafka at {broker} with {how}"
    try:
        async with asyncio.timeout(timeout):
            await compat.probe_metadata(
                host.strip("[]"), int(port), "kpimon-preflight", int(timeout * 1000), options
            )
    except SaslAuthenticationFailed:
        raise KafkaAccessError(
            f"{refused}: SASL authentication failed (wrong user or password; check sasl_username and "
            "sasl_password_file)"
        ) from None
    except UnsupportedSaslMechanismError:
        raise KafkaAccessError(
            f"{refused}: the broker does not enable SASL mechanism {settings.sasl_mechanism} "
            "(check sasl_mechanism)"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise KafkaAccessError(
            f"{refused}: TLS certificate verification failed: {exc.verify_message} (check ssl_ca_file, "
            "and that the broker certificate names the host of broker)"
        ) from None
    except KafkaConnectionError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            raise KafkaAccessError(
                f"{refused}: the broker refused the TLS handshake ({cause.reason or cause}); it may require "
                "a client certificate (ssl_cert_file, ssl_key_file) signed by a CA it trusts"
            ) from None
        raise KafkaHandshakeError(
            f"{refused}: the broker closed the connection during the handshake; it expects another "
            f"security protocol or credentials (check security_protocol, now {settings.security_protocol})"
        ) from None
    except ssl.SSLError as exc:
        raise KafkaAccessError(
            f"{refused}: TLS handshake failed ({exc.reason or exc}); is {broker} a TLS listener? "
            "(check security_protocol)"
        ) from None
    except ConnectionResetError:
        raise KafkaHandshakeError(
            f"{refused}: the broker reset the connection during the handshake; {broker} may be a "
            f"listener without TLS (check security_protocol, now {settings.security_protocol})"
        ) from None
    except TimeoutError:
        raise KafkaUnreachableError(
            f"cannot reach Kafka at {broker}: no answer within {timeout:.0f} s (check broker and "
            "security_protocol)"
        ) from None
    except OSError as exc:
        raise KafkaUnreachableError(f"cannot reach Kafka at {broker}: {exc.strerror or exc}") from None
