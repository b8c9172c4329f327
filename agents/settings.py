"""One frozen settings object, built once at the edge (CLI flags over environment over defaults).

Nothing else in kpimon reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from streams.validation import Policy

DEFAULT_BROKER = "127.0.0.1:9092"


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
    #: TOML file of KPI targets (deploy/targets.example.toml); none when empty.
    targets_file: str = ""
    #: Seconds between flushes of changed counters to kpimon-partials and of changed KPIs to kpimon-kpis.
    flush_interval: float = 1.0
    #: Seconds without a heartbeat after which Kafka gives a (crashed) worker's partitions to the others.
    session_timeout: float = 60.0
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> Settings:
        """Defaults, then `KPIMON_*` variables of `env`, then the non-None `overrides` (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"KPIMON_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **values)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that cannot work, naming the setting."""
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.max_lateness_days < 0:
            raise ValueError(f"max_lateness_days must be >= 0, got {self.max_lateness_days}")
        if not 0 < self.web_port < 65536:
            raise ValueError(f"web_port must be in 1..65535, got {self.web_port}")
        if self.max_segment_values < 1:
            raise ValueError(f"max_segment_values must be >= 1, got {self.max_segment_values}")
        if self.flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0, got {self.flush_interval}")
        if not 6 <= self.session_timeout <= 300:
            # Kafka's default group.min/max.session.timeout.ms bounds.
            raise ValueError(f"session_timeout must be in 6..300 seconds, got {self.session_timeout}")
        if ":" not in self.broker:
            raise ValueError(f"broker must be HOST:PORT, got {self.broker!r}")

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


def _coerce(name: str, type_name: object, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"KPIMON_{name.upper()} must be a number, got {raw!r}") from None
    return raw
