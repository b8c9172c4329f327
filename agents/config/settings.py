"""One frozen settings object, built once at the edge (CLI flags over environment over defaults).

Nothing else in kpimon reads the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kpimon.streams.validation import Policy

DEFAULT_BROKER = "127.0.0.1:9092"
#: Kafka security protocols kpimon speaks: none, TLS (optionally with a client certificate), SASL over TLS.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
#: What Kafka accepts as a group.instance.id (the rules of a topic name).
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def default_home() -> Path:
    """Where kpimon keeps local things (Kafka jars and data, worker state): $KPIMON_HOME or ~/.kpimon."""
    return Path(os.environ.get("KPIMON_HOME") or Path.home() / ".kpimon")


@dataclass(frozen=True)
class Settings:
    """Everything a kpimon process needs to know. Environment names are `KPIMON_<FIELD>` in capitals."""

    broker: str = DEFAULT_BROKER
    app_id: str = "kpimon"
    topic_prefix: str = ""
    clicks_topic: str = "clicks"
    surveys_topic: str = "surveys"
    dead_letter_topic: str = "kpimon-dead-letters"
    kpis_topic: str = "kpimon-kpis"
    partials_topic: str = "kpimon-partials"
    rekeyed_topic: str = "kpimon-rekeyed"
    partitions: int = 4
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: Path = field(default_factory=lambda: default_home() / "state")
    max_lateness_days: int = 7
    max_future_seconds: int = 300
    max_message_bytes: int = 1024 * 1024
    #: Click types that do not make a user active (comma-separated in the environment).
    passive_types: str = ""
    #: At most this many values per segment dimension; further values fold into "other".
    max_segment_values: int = 50
    #: Segment values matching this regular expression (searched, Python syntax) fold into "other" like
    #: e-mail addresses do: personal data never becomes a label (docs/security.md). None when empty.
    segment_personal_pattern: str = ""
    #: TOML file of KPI targets (deploy/targets.example.toml); none when empty.
    targets_file: str = ""
    #: Seconds between flushes of changed counters to kpimon-partials and of changed KPIs to kpimon-kpis.
    flush_interval: float = 1.0
    #: Table store of the worker's state: "memory" or "rocksdb" (local disk under data_dir).
    store: str = "memory"
    #: At most this many messages per fetch of the source partitions (one batch); within it, batches are
    #: sized to take about 50 ms (agents/pipeline/pacing.py BatchSizer).
    batch_max_messages: int = 10_000
    #: Seconds between commits of the processed source offsets (after flushing what they produced).
    commit_interval: float = 2.0
    #: Seconds without a heartbeat after which Kafka gives a (crashed) worker's partitions to the others.
    session_timeout: float = 60.0
    #: Static group membership (Kafka's group.instance.id): a restarted worker with the same id takes its
    #: partitions back at once. Unique per worker; empty means dynamic membership.
    instance_id: str = ""
    #: Replication factor of the topics kpimon creates; 0: automatic, 3 on a cluster of at least 3 brokers
    #: (as the cluster's metadata says when the topics are created), else one per live broker
    #: (agents/config/topics.py).
    replication_factor: int = 0
    #: min.insync.replicas of the topics kpimon creates; 0: automatic, 2 with a replication factor of 3 or
    #: more, else 1. Producers use acks=all, so a write needs this many replicas.
    min_insync_replicas: int = 0
    #: Seconds between the worker's log lines summing up the messages it rejected (none when none were).
    rejection_log_interval: float = 60.0
    #: The batch core: "native" (the compiled kpimon._native), "python" (the Python engine, its
    #: specification), or empty: native when installed, else python with a warning (pipeline/core.py).
    core: str = ""
    log_level: str = "info"
    #: TOML file of settings (`name = value`, names as below); flags and environment win over it.
    config_file: str = ""
    # Kafka security (docs/security.md). Secrets are never settings: only the paths of files holding them,
    # so neither repr(settings) nor a log line of the settings can leak one.
    #: PLAINTEXT, SSL (TLS; mutual TLS with ssl_cert_file/ssl_key_file) or SASL_SSL.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password_file: str = ""
    #: PEM file of the CA(s) that signed the brokers' certificates; the system CAs when empty.
    ssl_ca_file: str = ""
    #: PEM client certificate (chain) and private key for mutual TLS.
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    #: Verify that the broker certificate names the host of `broker` (turn off only for tests).
    ssl_check_hostname: bool = True
    # The worker's web server (/metrics, /ready; /live stays open for liveness probes).
    web_tls_cert_file: str = ""
    web_tls_key_file: str = ""
    web_auth_user: str = ""
    web_auth_password_file: str = ""
    #: Seconds a web connection may go without a complete request (idle keep-alive, idle TLS, headers
    #: never finished) before the server closes it.
    web_timeout: float = 30.0
    #: Dead letters without `comment`, with user_id and key replaced by HMAC-SHA256 (docs/security.md).
    dead_letter_redact: bool = False
    dead_letter_redact_key_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> Settings:
        """Defaults, then the config file, then `KPIMON_*` variables of `env`, then the non-None `overrides`.

        The config file is `overrides["config_file"]` or else `KPIMON_CONFIG_FILE` (overrides are CLI flags).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"KPIMON_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _coerce(f"KPIMON_{f.name.upper()}", f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config_file = values.get("config_file") or ""
        from_file = read_config_file(Path(config_file)) if config_file else {}
        settings = replace(cls(), **{**from_file, **values})
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that cannot work, naming the setting."""
        self._check_values()
        self._check_security()

    def _check_values(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.max_lateness_days < 0:
            raise ValueError(f"max_lateness_days must be >= 0, got {self.max_lateness_days}")
        if not 0 < self.web_port < 65536:
            raise ValueError(f"web_port must be in 1..65535, got {self.web_port}")
        if self.max_segment_values < 1:
            raise ValueError(f"max_segment_values must be >= 1, got {self.max_segment_values}")
        try:
            re.compile(self.segment_personal_pattern)
        except re.error as exc:
            raise ValueError(f"segment_personal_pattern is not a valid regular expression: {exc}") from None
        if self.flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0, got {self.flush_interval}")
        if self.store not in ("memory", "rocksdb"):
            raise ValueError(f"store must be memory or rocksdb, got {self.store!r}")
        if self.core not in ("", "python", "native"):
            raise ValueError(
                f"core must be python or native (or empty: native when installed), got {self.core!r}"
            )
        if self.batch_max_messages < 1:
            raise ValueError(f"batch_max_messages must be >= 1, got {self.batch_max_messages}")
        if not 0 < self.web_timeout <= 3600:
            raise ValueError(f"web_timeout must be in (0, 3600] seconds, got {self.web_timeout}")
        if self.commit_interval <= 0:
            raise ValueError(f"commit_interval must be > 0, got {self.commit_interval}")
        if self.rejection_log_interval <= 0:
            raise ValueError(f"rejection_log_interval must be > 0, got {self.rejection_log_interval}")
        if not 6 <= self.session_timeout <= 300:
            # Kafka's default group.min/max.session.timeout.ms bounds.
            raise ValueError(f"session_timeout must be in 6..300 seconds, got {self.session_timeout}")
        if self.replication_factor < 0 or self.min_insync_replicas < 0:
            raise ValueError(
                "replication_factor and min_insync_replicas must be >= 0 (0: automatic), "
                f"got {self.replication_factor} and {self.min_insync_replicas}"
            )
        if self.replication_factor and self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) must not exceed replication_factor "
                f"({self.replication_factor}): no write could ever be acknowledged"
            )
        if self.instance_id and not _INSTANCE_ID.fullmatch(self.instance_id):
            raise ValueError(
                f"instance_id must be 1..249 letters, digits, '.', '_' or '-', got {self.instance_id!r}"
            )
        if ":" not in self.broker:
            raise ValueError(f"broker must be HOST:PORT, got {self.broker!r}")

    def _check_security(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"got {self.security_protocol!r}"
            )
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, got {self.sasl_mechanism!r}"
            )
        if self.security_protocol == "SASL_SSL":
            if not self.sasl_username:
                raise ValueError("security_protocol SASL_SSL needs sasl_username")
            if not self.sasl_password_file:
                raise ValueError("security_protocol SASL_SSL needs sasl_password_file")
        elif self.sasl_username or self.sasl_password_file:
            raise ValueError(
                f"sasl_username and sasl_password_file need security_protocol SASL_SSL, "
                f"got {self.security_protocol}"
            )
        tls_files = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file")
        if self.security_protocol == "PLAINTEXT":
            for name in tls_files:
                if getattr(self, name):
                    raise ValueError(f"{name} needs security_protocol SSL or SASL_SSL, got PLAINTEXT")
        _pair(self, "ssl_cert_file", "ssl_key_file")
        _pair(self, "web_tls_cert_file", "web_tls_key_file")
        _pair(self, "web_auth_user", "web_auth_password_file")
        if self.dead_letter_redact and not self.dead_letter_redact_key_file:
            raise ValueError("dead_letter_redact needs dead_letter_redact_key_file (the HMAC key)")
        for f in fields(self):
            if f.name.endswith("_file") and f.name != "targets_file" and getattr(self, f.name):
                _readable(f.name, getattr(self, f.name))

    @property
    def policy(self) -> Policy:
        """The validation policy these settings imply."""
        return Policy(
            max_lateness_days=self.max_lateness_days,
            max_future_ms=self.max_future_seconds * 1000,
            max_message_bytes=self.max_message_bytes,
        )

    def topic(self, name: str) -> str:
        """A topic name with the configured prefix (tests use unique prefixes)."""
        return f"{self.topic_prefix}{name}"

    @property
    def clicks(self) -> str:
        return self.topic(self.clicks_topic)

    @property
    def surveys(self) -> str:
        return self.topic(self.surveys_topic)

    @property
    def dead_letters(self) -> str:
        return self.topic(self.dead_letter_topic)

    @property
    def kpis(self) -> str:
        return self.topic(self.kpis_topic)

    @property
    def partials(self) -> str:
        return self.topic(self.partials_topic)

    @property
    def rekeyed(self) -> str:
        return self.topic(self.rekeyed_topic)

    @property
    def passive(self) -> frozenset[str]:
        """The passive click types as a set."""
        return frozenset(t.strip() for t in self.passive_types.split(",") if t.strip())


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a TOML config file (`name = value` at the top level), checked by name and type."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"config_file {path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config_file {path}: not valid TOML: {exc}") from None
    types = {f.name: str(f.type) for f in fields(Settings)}
    values: dict[str, Any] = {}
    for name, value in document.items():
        if name not in types or name == "config_file":
            raise ValueError(f"config_file {path}: unknown setting {name!r}")
        if isinstance(value, dict | list):
            raise ValueError(f"config_file {path}: {name} must be a single value")
        where = f"config_file {path}: {name}"
        values[name] = value if isinstance(value, bool) else _coerce(where, types[name], str(value))
    return values


def _coerce(where: str, type_name: object, raw: str) -> Any:
    kind = str(type_name)
    if kind == "bool":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ValueError(f"{where} must be a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")
    try:
        if kind == "int":
            return int(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{where} must be a number, got {raw!r}") from None
    return raw


def _pair(settings: Settings, first: str, second: str) -> None:
    """Both settings or neither, naming the missing one."""
    if bool(getattr(settings, first)) != bool(getattr(settings, second)):
        given, missing = (first, second) if getattr(settings, first) else (second, first)
        raise ValueError(f"{given} needs {missing}")


def _readable(name: str, path: str) -> None:
    """A file setting must name a readable file; the error names the setting, never the content."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from None
