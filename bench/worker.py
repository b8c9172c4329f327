"""`kpimon worker` as a black box: start it on the bench's topics, read its /metrics, its peak RSS.

The bench passes only documented settings: command-line flags and the `KPIMON_*_TOPIC` variables that
point the worker at the pre-filled input topics and at output and internal topics of its own, so several
runs can read the same input without sharing their partials or outputs.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bench.child import stop_process
from kpimon.agents.config.topics import TopicSpec
from kpimon.agents.devtools.localkafka import pick_free_port

#: The `kpimon` console script of the virtualenv running the bench.
KPIMON = str(Path(sys.executable).with_name("kpimon"))

#: The worker's changelogged tables (docs/architecture.md).
_TABLES = ("user-state", "aggregates")
DAU_LABELS = {"window": "1d", "day": "current", "dimension": "all", "segment": "all"}


@functools.cache
def worker_help() -> str:
    """The text of `kpimon worker --help` (to find out which options this kpimon has)."""
    proc = subprocess.run([KPIMON, "worker", "--help"], capture_output=True, text=True, check=False)
    return proc.stdout


def has_store_option() -> bool:
    """Whether `kpimon worker` accepts `--store` (memory or rocksdb)."""
    return "--store" in worker_help()


@dataclass(frozen=True)
class RunTopics:
    """The topics of one kpimon run: shared input, its own output and internal topics."""

    clicks: str
    surveys: str
    run: str  # prefix of this run's own topics and app id

    @property
    def app_id(self) -> str:
        return f"{self.run}app"

    @property
    def kpis(self) -> str:
        return f"{self.run}kpimon-kpis"

    @property
    def user_state_changelog(self) -> str:
        """Faust's changelog of the worker's `user-state` table (docs/architecture.md)."""
        return f"{self.app_id}-user-state-changelog"

    def changelog_specs(self, partitions: int) -> list[TopicSpec]:
        """The changelogs of the worker's tables, to create before it starts.

        Faust creates them itself, but on a busy machine its consumer can miss a just-created changelog in
        the cluster metadata ("Ignoring missing topic"); the aggregate agent then crashes on every partial
        with PartitionsMismatch (0 partitions) and kpimon-kpis never fills. Operators pre-create internal
        topics anyway; names that a future kpimon no longer uses are harmless.
        """
        compacted = {"cleanup.policy": "compact"}
        return [TopicSpec(f"{self.app_id}-{table}-changelog", partitions, compacted) for table in _TABLES]

    def env(self) -> dict[str, str]:
        """The environment of a worker of this run (no other KPIMON_* variable leaks in but KPIMON_CORE,
        so that `KPIMON_CORE=python python -m bench ...` measures the workers with the Python engine)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_") or k == "KPIMON_CORE"}
        env.update(
            KPIMON_CLICKS_TOPIC=self.clicks,
            KPIMON_SURVEYS_TOPIC=self.surveys,
            KPIMON_KPIS_TOPIC=self.kpis,
            KPIMON_PARTIALS_TOPIC=f"{self.run}kpimon-partials",
            KPIMON_REKEYED_TOPIC=f"{self.run}kpimon-rekeyed",
            KPIMON_DEAD_LETTER_TOPIC=f"{self.run}kpimon-dead-letters",
        )
        return env


class Worker:
    """One `kpimon worker` subprocess with its own web port, state directory and log file."""

    def __init__(
        self,
        bootstrap: str,
        topics: RunTopics,
        work: Path,
        max_lateness_days: int,
        flush_interval: float,
        store: str | None = None,
    ) -> None:
        self.web_port = pick_free_port()
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = work / f"worker-{self.web_port}.log"
        args = [
            KPIMON,
            "worker",
            "--broker",
            bootstrap,
            "--app-id",
            topics.app_id,
            "--web-port",
            str(self.web_port),
            "--data-dir",
            str(work / f"state-{self.web_port}"),
            "--max-lateness-days",
            str(max_lateness_days),
            "--flush-interval",
            str(flush_interval),
            "--log-level",
            "warning",
        ]
        if store is not None:
            args += ["--store", store]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=topics.env(), start_new_session=True
            )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        """GET a path of the worker's web server: (status, body); (0, b"") when it does not answer."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (OSError, ValueError):
            return 0, b""

    def metrics(self) -> str:
        """The /metrics text ('' when the worker does not answer yet)."""
        status, body = self.get("/metrics")
        return body.decode(errors="replace") if status == 200 else ""

    def events_total(self) -> float | None:
        """Messages processed so far (kpimon_events_total over topics and outcomes), None if unknown."""
        text = self.metrics()
        if not text:
            return None
        return sum(sample.value for sample in samples(text) if sample.name == "kpimon_events_total")

    def ready(self) -> bool:
        return self.get("/ready", timeout=2)[0] == 200

    def peak_rss_bytes(self) -> int | None:
        """VmHWM (peak resident set) of the worker process from /proc, None when unavailable."""
        return peak_rss_bytes(self.proc.pid)

    def problems(self) -> list[str]:
        """The first agent crash and the count of recovery errors the worker logged, as short lines."""
        found: list[str] = []
        recovery_errors = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "Crashed reason=" in line and not found:
                found.append(line.strip()[:300])
            elif "Error in recovery" in line:
                recovery_errors += 1
                if recovery_errors == 1:
                    found.append(line.strip()[:300])
        if recovery_errors > 1:
            found.append(f"({recovery_errors} 'Error in recovery' lines in {self.log_path.name})")
        return found

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


def peak_rss_bytes(pid: int, field: str = "VmHWM") -> int | None:
    """VmHWM (or another `Vm*` field, e.g. VmRSS) of a process (Linux), None when /proc does not say."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds a process has used (Linux /proc/<pid>/stat), None when unavailable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def samples(metrics_text: str) -> Iterator[Sample]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client."""
    for family in text_string_to_metric_families(metrics_text):
        yield from family.samples


def gauge_value(metrics_text: str, name: str = "kpimon_active_users", **labels: str) -> float | None:
    """The value of the sample of `name` with exactly `labels` in Prometheus text, or None.

    Without labels given: the global DAU of the current day (`DAU_LABELS`). Label order does not matter.
    """
    wanted = labels or DAU_LABELS
    return next((s.value for s in samples(metrics_text) if s.name == name and s.labels == wanted), None)


def sample_value(metrics_text: str, name: str) -> float | None:
    """The value of the unlabelled sample `name` in Prometheus text, or None."""
    return next((s.value for s in samples(metrics_text) if s.name == name and not s.labels), None)


def labelled_value(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly `labels` in Prometheus text, or None."""
    return next((s.value for s in samples(metrics_text) if s.name == name and s.labels == labels), None)
