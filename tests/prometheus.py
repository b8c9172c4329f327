"""A real Prometheus server for tests: Debian's `prometheus` binary on a free 127.0.0.1 port.

`write_setup()` writes a generated prometheus.yml and rules/ into a directory (any `MonitoringConfig`, e.g.
`monitoring.accelerated.accelerated(...)` for short `for` durations and 1 s intervals); `backfill()` turns
samples into TSDB blocks with `promtool tsdb create-blocks-from openmetrics`, so the server starts with
history (e.g. a week ago, for `offset 7d`); `running_prometheus()` starts the server on a fresh storage
directory and stops it on exit. Queries go through the HTTP API (/api/v1/...), as Grafana's do.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitoring.accelerated import prometheus_files
from monitoring.config import MonitoringConfig
from tests.helpers import free_port
from tests.servers import ServerProcess


def binary(name: str) -> str:
    """Path of `prometheus` or `promtool`; AssertionError saying how to install it when missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        raise AssertionError(f"{name} not found: run `make system-deps` (Debian's prometheus package)")
    return path


def write_setup(directory: Path, config: MonitoringConfig) -> Path:
    """Write prometheus.yml and rules/*.yaml generated from `config` into `directory`; the config's path."""
    for relative, text in prometheus_files(config).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory / "prometheus.yml"


def check_config(config_file: Path) -> None:
    """`promtool check config` (which also checks the rule files it loads); AssertionError on a problem."""
    result = subprocess.run(
        [binary("promtool"), "check", "config", config_file.name],
        cwd=config_file.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass(frozen=True)
class Series:
    """One series to backfill: metric name, labels and one value held over the given timestamps."""

    name: str
    labels: Mapping[str, str]
    value: float


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def openmetrics(series: Iterable[Series], timestamps: Sequence[float]) -> str:
    """OpenMetrics text of `series`, each with its value at every timestamp (Unix seconds, ascending).

    Samples of one metric family are kept together and each series' samples in time order, as the format
    (and promtool's importer) requires.
    """
    by_name: dict[str, list[Series]] = {}
    for one in series:
        by_name.setdefault(one.name, []).append(one)
    lines: list[str] = []
    for name, members in sorted(by_name.items()):
        lines.append(f"# TYPE {name} gauge")
        for one in members:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(one.labels.items()))
            for ts in timestamps:
                lines.append(f"{name}{{{labels}}} {one.value!r} {ts:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(storage: Path, series: Iterable[Series], timestamps: Sequence[float], work: Path) -> None:
    """Write `series` into TSDB blocks under `storage` (before the server starts on it)."""
    storage.mkdir(parents=True, exist_ok=True)
    source = work / "backfill.om"
    source.write_text(openmetrics(series, timestamps))
    result = subprocess.run(
        [
            binary("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            str(source),
            str(storage),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class PrometheusError(AssertionError):
    """The API answered with an error (bad query, server problem)."""


class PrometheusServer(ServerProcess):
    """A `prometheus` subprocess on 127.0.0.1:`port` and a small client of its HTTP API."""

    name = "prometheus"

    def __init__(
        self, config_file: Path, storage: Path, port: int, log_path: Path, retention: str = "30d"
    ) -> None:
        super().__init__(
            [
                binary("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Backfilled history a week old must survive; the default 15d would too, but say it.
                f"--storage.tsdb.retention.time={retention}",
                # Debian's defaults point at /etc/prometheus and /usr/share; nothing here needs them.
                f"--web.console.templates={config_file.parent}",
                f"--web.console.libraries={config_file.parent}",
            ],
            port,
            log_path,
            cwd=config_file.parent,
        )

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def _get(self, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise PrometheusError(f"GET {path} {dict(params)}: HTTP {exc.code}: {body}") from None

    def api(self, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> Any:
        """`data` of a successful /api/v1 answer; PrometheusError otherwise."""
        answer = self._get(f"/api/v1/{path}", params)
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query now: the result as a list of {metric, value} (a scalar becomes one sample)."""
        data = self.api("query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """Instant query now as {labels without __name__: value}."""
        out: dict[frozenset[tuple[str, str]], float] = {}
        for sample in self.query(expr):
            labels = {k: v for k, v in sample["metric"].items() if k != "__name__"}
            out[frozenset(labels.items())] = float(sample["value"][1])
        return out

    def alerts(self) -> list[dict[str, Any]]:
        """The pending and firing alerts (/api/v1/alerts)."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its health and last error (/api/v1/rules), across groups."""
        groups = self.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def label_values(self, label: str, match: str) -> list[str]:
        """Values of `label` among the series `match` selects (what Grafana's label_values() asks)."""
        values: list[str] = self.api(f"label/{label}/values", [("match[]", match)])
        return values

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets."""
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active


@contextmanager
def running_prometheus(
    config_file: Path, storage: Path, port: int | None = None, retention: str = "30d"
) -> Iterator[PrometheusServer]:
    """A ready Prometheus serving `config_file` on a free port (or `port`) with `storage`; stopped on exit."""
    storage.mkdir(parents=True, exist_ok=True)
    server = PrometheusServer(
        config_file, storage, port or free_port(), config_file.parent / "prometheus.log", retention
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def finite(value: float) -> bool:
    """Not NaN and not infinite."""
    return not (math.isnan(value) or math.isinf(value))
