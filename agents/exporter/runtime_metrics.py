"""The worker process's own series: CPU, memory and file descriptors, the Python platform, the build.

prometheus_client's process and platform collectors, on the worker's injected registry (not the global
default one, which kpimon never serves), and `kpimon_build_info`: which versions and which batch core
run, for dashboards, for telling workers of a rolling upgrade apart, and for proving which core a run
used (the integration tests check it).
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector

#: The distributions named in kpimon_build_info's labels (label -> distribution).
BUILD_LABELS = {"version": "kpimon", "faust": "faust-streaming", "aiokafka": "aiokafka"}


def package_version(distribution: str) -> str:
    """The installed version of a distribution, `unknown` when it is not installed as one."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def build_labels(core: str) -> dict[str, str]:
    """The labels of kpimon_build_info: kpimon's version, Python's, Faust's and aiokafka's, and `core`,
    the batch core the worker's batches go through (`native` or `python`, pipeline/core.py)."""
    labels = {label: package_version(dist) for label, dist in BUILD_LABELS.items()}
    labels["python"] = platform.python_version()
    labels["core"] = core
    return labels


def register_runtime_metrics(registry: CollectorRegistry, core: str) -> None:
    """Add process_*, python_info and kpimon_build_info (with the batch core `core`) to `registry`."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    labels = build_labels(core)
    build = Gauge(
        "kpimon_build_info",
        "Always 1; the labels name the versions of kpimon, Python, Faust and aiokafka this worker runs, "
        "and its batch core (native or python).",
        sorted(labels),
        registry=registry,
    )
    build.labels(**labels).set(1)
