"""deploy/k8s/prometheus-operator/ (issue #20): the ServiceMonitor scrapes the workers' metrics Service with
the job the rules select, the PrometheusRule holds exactly the rule files' groups (and passes promtool), and
the workers' resources fit their store."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.config import DEFAULT
from monitoring.generate import OPERATOR_DIR, RULES_DIR
from scripts.generate import ROOT

K8S = ROOT / "deploy" / "k8s"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s(kind: str) -> list[dict[str, Any]]:
    return [d for path in sorted(K8S.glob("*.yaml")) for d in documents(path) if d["kind"] == kind]


def test_service_monitor_scrapes_the_metrics_service_as_the_rules_job() -> None:
    (monitor,) = documents(ROOT / OPERATOR_DIR / "servicemonitor.yaml")
    selected = [
        service
        for service in k8s("Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = [s for s in selected if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}]
    assert [s["metadata"]["name"] for s in scraped] == ["kpimon-worker-metrics"]
    assert scraped[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]] == DEFAULT.job
    assert endpoint["path"] == "/metrics"


def test_prometheus_rule_is_the_rule_files(tmp_path: Path) -> None:
    (rule,) = documents(ROOT / OPERATOR_DIR / "prometheusrule.yaml")
    expected = [g for path in sorted((ROOT / RULES_DIR).glob("*.yaml")) for g in documents(path)[0]["groups"]]
    key = lambda group: group["name"]  # noqa: E731
    assert sorted(rule["spec"]["groups"], key=key) == sorted(expected, key=key)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run `make system-deps` (installs Debian's prometheus package)")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_worker_memory_is_sized_for_the_store_on_disk() -> None:
    (settings,) = [c for c in k8s("ConfigMap") if c["metadata"]["name"] == "kpimon-settings"]
    assert settings["data"]["KPIMON_STORE"] == "rocksdb"  # the 1 GiB limit holds 1M users only on disk
    (statefulset,) = k8s("StatefulSet")
    (worker,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["memory"] == "1Gi"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts["state"] == settings["data"]["KPIMON_DATA_DIR"]  # RocksDB writes into the claim
