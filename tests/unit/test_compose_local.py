"""deploy/compose.local.yaml, the plain local variant (issue #20): no secrets, the worker's settings are
settings, its targets file and the generated rules are mounted, and Prometheus' config is the generated one
for the worker (checked by promtool)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from kpimon.agents.config.settings import Settings
from monitoring.config import DEFAULT
from monitoring.prometheus import prometheus_config
from scripts.generate import ROOT
from tests.unit.test_deploy import check_prometheus_config

LOCAL = ROOT / "deploy" / "compose.local.yaml"
DOCUMENT: dict[str, Any] = yaml.safe_load(LOCAL.read_text())
SERVICES: dict[str, Any] = DOCUMENT["services"]


def test_plain_services_and_no_secrets() -> None:
    assert {"kafka", "worker", "prometheus", "grafana"} <= set(SERVICES)
    assert "secrets" not in DOCUMENT
    assert not any("secrets" in service for service in SERVICES.values())
    protocols = SERVICES["kafka"]["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert {pair.split(":")[1] for pair in protocols.split(",")} == {"PLAINTEXT"}


def test_worker_environment_is_settings_and_reaches_the_internal_listener() -> None:
    env = {name: str(value) for name, value in SERVICES["worker"]["environment"].items()}
    names = {name.removeprefix("KPIMON_").lower() for name in env}
    assert names <= {f.name for f in Settings.__dataclass_fields__.values()}
    settings = Settings.from_env({k: v for k, v in env.items() if k != "KPIMON_TARGETS_FILE"})
    assert settings.broker in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    mounts = dict(volume.split(":")[:2][::-1] for volume in SERVICES["worker"]["volumes"])
    assert (LOCAL.parent / mounts["/etc/kpimon/targets.toml"]).is_file()
    assert f"{settings.web_port}:{settings.web_port}" in SERVICES["worker"]["ports"]


def test_prometheus_config_is_the_generated_one_for_the_worker(tmp_path: Path) -> None:
    content: str = DOCUMENT["configs"]["prometheus"]["content"]
    expected = prometheus_config(replace(DEFAULT, worker_targets=("worker:6066",)))
    # No Alertmanager in the local variant: the alerts show on Prometheus' /alerts page only.
    expected.pop("alerting", None)
    assert yaml.safe_load(content) == expected
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in SERVICES["prometheus"]["volumes"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run `make system-deps` (installs Debian's prometheus package)")
    check_prometheus_config(promtool, content, tmp_path)
