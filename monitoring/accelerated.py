"""The same monitoring on a fast clock: short `for` durations and intervals, by configuration.

End-to-end tests run a real Prometheus with the project's rules; waiting an hour for `for: 1h` is not an
option, and editing the generated files is not either. `accelerated()` returns a copy of a
`MonitoringConfig` whose every `for_*` duration, `keep_firing_for` and both intervals are short, and
`prometheus_files()` renders the Prometheus config and rule files of any config exactly as `make generate`
renders the committed ones (the committed files keep `DEFAULT`). Thresholds, selectors and windows (rate
and lag windows, `offset 7d`) are left alone: only how long a condition must hold, how long a firing alert
outlasts it and how often Prometheus looks change.

`keep_firing_for` is on the fast clock too: the default 2 days would keep every alert that fired on a
test's transient values (a replay walking its current day through weeks of history) firing for the rest of
the test, so whether a segment is seen alerting once the values are final would depend on how long the
transient lasted, i.e. on the machine's load.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from monitoring.config import MonitoringConfig
from monitoring.generate import PROMETHEUS_DIR, generated_files


def _short_for(section: Any, duration: str) -> Any:
    """A copy of an alert-section dataclass with every `for_*` field and `keep_firing_for` (when set) set
    to `duration`."""
    changes = {
        f.name: duration
        for f in fields(section)
        if f.name.startswith("for_") or (f.name == "keep_firing_for" and getattr(section, f.name))
    }
    return replace(section, **changes)


def accelerated(
    config: MonitoringConfig,
    *,
    for_duration: str = "3s",
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> MonitoringConfig:
    """`config` with every alert's `for` and `keep_firing_for` set to `for_duration` and the given
    scrape/evaluation intervals.

    Durations are Prometheus duration strings. The nested alert sections (churn, satisfaction, engagement,
    pipeline) are found generically, so a `for_*` field added later is shortened too.
    """
    sections = {
        f.name: _short_for(getattr(config, f.name), for_duration)
        for f in fields(config)
        if is_dataclass(getattr(config, f.name))
    }
    return replace(
        config, scrape_interval=scrape_interval, evaluation_interval=evaluation_interval, **sections
    )


def prometheus_files(config: MonitoringConfig) -> dict[Path, str]:
    """Path relative to deploy/prometheus/ -> text: prometheus.yml and rules/*.yaml generated from `config`.

    Written together into one directory they form a Prometheus setup (prometheus.yml loads `rules/*.yaml`
    relative to itself), the same as the committed deploy/prometheus/ when `config` is `DEFAULT`.
    """
    return {
        path.relative_to(PROMETHEUS_DIR): text
        for path, text in generated_files(config).items()
        if path.is_relative_to(PROMETHEUS_DIR)
    }
