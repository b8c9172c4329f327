"""Small PromQL helpers: selectors, numbers, and the metric names an expression uses."""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`' + r"|'(?:[^'\\]|\\.)*'")
#: kpimon's raw metrics and recording rules (level:metric:operations); `up` is Prometheus' own.
_METRIC = re.compile(r"(?<![\w:$])(kpimon_\w+|[a-z_]+:\w+:\w+|up)(?![\w:(])")


def selector(metric: str, *matchers: str, **labels: str) -> str:
    """`metric{...}` from raw matchers ('dimension="all"', empty ones skipped) and label="value" pairs."""
    parts = [m for m in matchers if m]
    parts.extend(f'{name}="{value}"' for name, value in labels.items())
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def number(value: float) -> str:
    """A number as PromQL writes it: 100, 0.8, -10 (no trailing .0)."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def metric_names(expr: str) -> set[str]:
    """The metric names (raw `kpimon_*`, recording rules `a:b:c`, `up`) an expression selects.

    String literals are removed first, so label values such as kpi="nps" never count; label names and
    functions never look like metric names here (no kpimon_ prefix, no colons, or followed by `(`).
    """
    return set(_METRIC.findall(_STRING.sub('""', expr)))


#: Grafana template variables and what the PromQL checks substitute for them.
GRAFANA_VARIABLES: dict[str, str] = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$dimension": "all",
    "$segment": "all",
    "$window": "7d",
    "$topic": ".*",
    "${datasource}": "",
}


def substitute_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """A dashboard expression with its Grafana variables replaced, so Prometheus can run it."""
    merged = {**GRAFANA_VARIABLES, **(values or {})}
    for name in sorted(merged, key=len, reverse=True):  # $__rate_interval before $__range, ...
        expr = expr.replace(name, merged[name])
    return expr
