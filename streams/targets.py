"""KPI targets: a TOML file says which value a KPI should reach (`min`) or not exceed (`max`).

    [targets.nps]            # the KPI name of the output topic
    min = 30                 # NPS should be at least 30 ...
    window = "7d"            # ... in the 7d window (optional: every window of the KPI when absent)

A bad file is refused as a whole with an error naming the key and the problem, so a worker never starts
with targets it misread.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpimon.streams.catalogue import CATALOGUE

#: KPI name -> windows, for every KPI that can carry a target (the catalogue's; docs/definitions.md).
TARGETABLE: dict[str, tuple[str, ...]] = {kpi.name: kpi.windows for kpi in CATALOGUE if kpi.targetable}


#: The smallest sample (the record's denominator: MAU, the churn base, survey answers, surveys shown) for
#: which a value on the wrong side of its target counts as a breach. The alert rules use the same minimums
#: (monitoring/config.py; a test keeps them equal); KPIs not listed (active_users) need none.
MIN_SAMPLE: dict[str, int] = {
    "stickiness": 100,
    "churn_rate": 100,
    "nps": 30,
    "csat": 30,
    "csat_mean": 30,
    "nps_response_rate": 30,
    "csat_response_rate": 30,
}


class TargetsError(ValueError):
    """The targets file is invalid; the message names the key and the problem."""


@dataclass(frozen=True)
class Target:
    """A target of one KPI and window."""

    kpi: str
    window: str
    value: float
    direction: str  # "min": value >= target is fine; "max": value <= target is fine

    def breached(self, value: float | int | None) -> bool | None:
        """Whether `value` is on the wrong side; None when the value is undefined."""
        if value is None:
            return None
        return value < self.value if self.direction == "min" else value > self.value

    def judge(
        self,
        value: float | int | None,
        sample: float | int | None,
        interval: tuple[float | None, float | None] | None = None,
    ) -> tuple[bool | None, bool | None]:
        """(off_target, breach) of a value with its sample size (the denominator) and 95 % interval.

        off_target: the value is on the wrong side of the target. breach: it is significantly so, by the
        alert rules' test: the sample is at least MIN_SAMPLE[kpi], and for a KPI with an interval the whole
        interval is on the wrong side (its upper bound below a `min` target, its lower bound above a `max`
        one). Both None when the value is undefined.
        """
        off = self.breached(value)
        if not off:
            return off, off
        minimum = MIN_SAMPLE.get(self.kpi)
        if minimum is not None and (sample is None or sample < minimum):
            return True, False
        if interval is not None:
            low, high = interval
            bound = high if self.direction == "min" else low
            if bound is None:
                return True, False
            return True, (bound < self.value if self.direction == "min" else bound > self.value)
        return True, True


Targets = dict[tuple[str, str], Target]


def parse_targets(document: dict[str, Any], source: str = "targets") -> Targets:
    """Targets from a parsed TOML document; TargetsError on the first problem."""
    unknown = set(document) - {"targets"}
    if unknown:
        raise TargetsError(
            f"{source}: unknown top-level key {sorted(unknown)[0]!r} (expected [targets.<kpi>])"
        )
    table = document.get("targets", {})
    if not isinstance(table, dict):
        raise TargetsError(f"{source}: 'targets' must be a table of [targets.<kpi>] sections")
    out: Targets = {}
    for kpi, spec in table.items():
        where = f"{source}: targets.{kpi}"
        if kpi not in TARGETABLE:
            raise TargetsError(f"{where}: unknown KPI (one of {', '.join(sorted(TARGETABLE))})")
        if not isinstance(spec, dict):
            raise TargetsError(f"{where}: must be a table with min or max")
        extra = set(spec) - {"min", "max", "window"}
        if extra:
            raise TargetsError(f"{where}.{sorted(extra)[0]}: unknown key (expected min, max, window)")
        directions = [d for d in ("min", "max") if d in spec]
        if len(directions) != 1:
            raise TargetsError(f"{where}: give exactly one of min or max")
        direction = directions[0]
        value = spec[direction]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise TargetsError(f"{where}.{direction}: must be a finite number, got {value!r}")
        windows = TARGETABLE[kpi]
        window = spec.get("window")
        if window is not None and window not in windows:
            raise TargetsError(f"{where}.window: {window!r} is not a window of {kpi} ({', '.join(windows)})")
        for w in (window,) if window else windows:
            out[(kpi, w)] = Target(kpi, w, float(value), direction)
    return out


def load_targets(path: Path) -> Targets:
    """Targets from a TOML file; TargetsError naming the file, key and problem."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TargetsError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetsError(f"{path}: not valid TOML: {exc}") from None
    return parse_targets(document, str(path))
