"""Security settings, client options, web basic auth and dead-letter redaction, without a broker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
from pathlib import Path

import faust
import pytest

from kpimon.agents.cli.worker import worker as worker_command
from kpimon.agents.config.kafka_security import (
    SecretFileError,
    aiokafka_options,
    describe,
    read_secret,
)
from kpimon.agents.config.settings import Settings
from kpimon.agents.exporter.web import BasicAuth, basic_auth, web_ssl_context
from kpimon.agents.pipeline.deadletters import Redactor
from kpimon.agents.runtime.faust_app import faust_options
from tests.certs import Pki
from tests.security import SECRET


def sasl(secret_file: Path, pki: Pki, **more: object) -> Settings:
    return Settings.from_env(
        {},
        security_protocol="SASL_SSL",
        sasl_username="kpimon",
        sasl_password_file=str(secret_file),
        ssl_ca_file=str(pki.ca),
        **more,
    )


# --- Settings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"security_protocol": "SASL_PLAINTEXT"},
            "security_protocol must be one of PLAINTEXT, SSL, SASL_SSL",
        ),
        ({"security_protocol": "SASL_SSL"}, "security_protocol SASL_SSL needs sasl_username"),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u"},
            "security_protocol SASL_SSL needs sasl_password_file",
        ),
        ({"sasl_username": "u"}, "sasl_username and sasl_password_file need security_protocol SASL_SSL"),
        ({"ssl_ca_file": "/etc/hostname"}, "ssl_ca_file needs security_protocol SSL or SASL_SSL"),
        ({"security_protocol": "SSL", "ssl_cert_file": "/etc/hostname"}, "ssl_cert_file needs ssl_key_file"),
        ({"security_protocol": "SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism must be one of"),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password_file": "/no/such/file"},
            "sasl_password_file: cannot read /no/such/file: No such file or directory",
        ),
        ({"web_auth_user": "prom"}, "web_auth_user needs web_auth_password_file"),
        ({"web_tls_key_file": "/etc/hostname"}, "web_tls_key_file needs web_tls_cert_file"),
        ({"dead_letter_redact": True}, "dead_letter_redact needs dead_letter_redact_key_file"),
        (
            {"dead_letter_redact": True, "dead_letter_redact_key_file": "/no/key"},
            "dead_letter_redact_key_file: cannot read /no/key",
        ),
    ],
)
def test_bad_security_settings_are_refused_naming_the_setting(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        Settings.from_env({}, **values)


def test_settings_hold_paths_never_secrets(secret_file: Path, pki: Pki) -> None:
    settings = sasl(secret_file, pki, web_auth_user="prom", web_auth_password_file=str(secret_file))
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in repr(faust_options(settings))
    assert SECRET not in repr(basic_auth(settings))
    assert SECRET not in describe(settings)
    assert SECRET not in repr(Redactor(SECRET.encode()))


def test_environment_and_config_file_and_flags_in_that_order(tmp_path: Path, secret_file: Path) -> None:
    config = tmp_path / "kpimon.toml"
    config.write_text(
        'security_protocol = "SASL_SSL"\n'
        'sasl_username = "from-file"\n'
        f'sasl_password_file = "{secret_file}"\n'
        "ssl_check_hostname = false\n"
        "web_port = 7000\n"
        "dead_letter_redact = false\n"
    )
    env = {"KPIMON_CONFIG_FILE": str(config), "KPIMON_SASL_USERNAME": "from-env", "KPIMON_WEB_PORT": "7001"}
    settings = Settings.from_env(env, web_port=7002)
    assert settings.security_protocol == "SASL_SSL"  # file
    assert settings.sasl_username == "from-env"  # environment over file
    assert settings.web_port == 7002  # flag over environment
    assert settings.ssl_check_hostname is False
    assert Settings.from_env({"KPIMON_DEAD_LETTER_REDACT": "no"}).dead_letter_redact is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("brokr = 'x'\n", "unknown setting 'brokr'"),
        ("web_port = 'abc'\n", "web_port must be a number"),
        ("[kafka]\nbroker = 'x'\n", "unknown setting 'kafka'"),
        ("broker = \n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "kpimon.toml"
    config.write_text(text)
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"KPIMON_CONFIG_FILE": str(config)})
    with pytest.raises(ValueError, match=r"config_file .*: cannot read"):
        Settings.from_env({}, config_file=str(tmp_path / "missing.toml"))


def test_boolean_environment_values() -> None:
    assert Settings.from_env({"KPIMON_SSL_CHECK_HOSTNAME": "off"}).ssl_check_hostname is False
    with pytest.raises(ValueError, match="KPIMON_SSL_CHECK_HOSTNAME must be a boolean"):
        Settings.from_env({"KPIMON_SSL_CHECK_HOSTNAME": "maybe"})


def test_every_security_setting_is_a_worker_option() -> None:
    names = {p.name for p in worker_command.params}
    assert {
        "config_file",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password_file",
        "ssl_ca_file",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_check_hostname",
        "web_tls_cert_file",
        "web_tls_key_file",
        "web_auth_user",
        "web_auth_password_file",
        "dead_letter_redact",
        "dead_letter_redact_key_file",
    } <= names


# --- Kafka client options ----------------------------------------------------------------------------------


def test_plaintext_options() -> None:
    assert aiokafka_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_options(Settings()) == {}


def test_sasl_ssl_options(secret_file: Path, pki: Pki) -> None:
    settings = sasl(secret_file, pki)
    options = aiokafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("kpimon", SECRET)
    assert isinstance(options["ssl_context"], ssl.SSLContext) and options["ssl_context"].check_hostname
    credentials = faust_options(settings)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("kpimon", SECRET)


def test_mutual_tls_options(pki: Pki) -> None:
    settings = Settings.from_env(
        {},
        security_protocol="SSL",
        ssl_ca_file=str(pki.ca),
        ssl_cert_file=str(pki.client_cert),
        ssl_key_file=str(pki.client_key),
        ssl_check_hostname=False,
    )
    options = aiokafka_options(settings)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert options["ssl_context"].check_hostname is False
    credentials = faust_options(settings)["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    assert describe(settings) == "SSL with a client certificate"


def test_secret_files_are_read_without_the_newline_and_must_not_be_empty(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_text("pa ss\r\n")
    assert read_secret("x_file", str(path)) == "pa ss"
    path.write_text("\n")
    with pytest.raises(SecretFileError, match=r"x_file: .* is empty"):
        read_secret("x_file", str(path))


# --- web ------------------------------------------------------------------------------------------------


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth() -> None:
    auth = BasicAuth("prom", "pw:with:colons")
    assert auth.allows(header("prom", "pw:with:colons"))
    assert not auth.allows(header("prom", "pw"))
    assert not auth.allows(header("Prom", "pw:with:colons"))
    assert not auth.allows(None)
    assert not auth.allows("Bearer abc")
    assert not auth.allows("Basic !!!not-base64")
    assert not auth.allows("Basic " + base64.b64encode(b"no-colon").decode())


def test_web_ssl_context_loads_the_certificate(pki: Pki) -> None:
    assert web_ssl_context(Settings()) is None
    settings = Settings.from_env(
        {}, web_tls_cert_file=str(pki.server_cert), web_tls_key_file=str(pki.server_key)
    )
    assert isinstance(web_ssl_context(settings), ssl.SSLContext)
    wrong = Settings.from_env(
        {}, web_tls_cert_file=str(pki.server_cert), web_tls_key_file=str(pki.client_key)
    )
    with pytest.raises(ValueError, match="cannot load web_tls_cert_file"):
        web_ssl_context(wrong)


# --- dead-letter redaction ---------------------------------------------------------------------------

KEY = b"k3y"


def expected(user_id: str) -> str:
    return "hmac-sha256:" + hmac.new(KEY, user_id.encode(), hashlib.sha256).hexdigest()


def test_redaction_pseudonymises_user_ids_and_drops_comments() -> None:
    value = json.dumps({"user_id": "alice", "comment": "I am Alice", "score": 11, "survey": "nps"}).encode()
    key, redacted, headers = Redactor(KEY).redact(b"alice", value)
    assert key == expected("alice").encode()
    assert redacted is not None
    assert json.loads(redacted) == {"user_id": expected("alice"), "score": 11, "survey": "nps"}
    assert headers == [("kpimon-redacted", b"pseudonymised")]


@pytest.mark.parametrize(
    "value", [b"{oops alice", b"\xff\xfealice", b'["alice"]', b"42", b'"alice"'], ids=repr
)
def test_redaction_drops_payloads_that_are_not_json_objects(value: bytes) -> None:
    key, redacted, headers = Redactor(KEY).redact(None, value)
    assert (key, redacted, headers) == (None, b"", [("kpimon-redacted", b"payload-dropped")])


def test_redaction_is_keyed() -> None:
    value = json.dumps({"user_id": 12345}).encode()  # a wrong type is pseudonymised too
    first = Redactor(KEY).redact(b"12345", value)
    assert json.loads(first[1] or b"")["user_id"].startswith("hmac-sha256:")
    assert first == Redactor(KEY).redact(b"12345", value)
    assert first[0] != Redactor(b"another key").redact(b"12345", value)[0]
