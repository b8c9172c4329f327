"""Hold two sets of output records to the equality rule of the stream and the reference.

The rule (docs/commands.md, "Comparing the stream with the reference"): counts must be equal; ratios
within 1e-9. A key missing on one side counts as 0 for a count and as undefined (None) for a ratio, so a
missing count equals a published 0, while a missing ratio equals only a published null. The 95 % interval
bounds (`ci_low`, `ci_high`) of every record are held to the ratio rule too: within 1e-9, null only equal
to null, and a missing key has undefined bounds. When a list holds several records of one key, the later
one supersedes the earlier.
"""

from __future__ import annotations

from collections.abc import Iterable

from kpimon.streams.output import KpiRecord, decode

#: KPIs whose value is a ratio, score or mean (a float, possibly undefined); every other KPI is a count.
#: These are the ratio KPIs of the output table (docs/output.md, "KPIs and windows"), engagement and
#: satisfaction alike.
RATIO_KPIS = frozenset(
    {
        "stickiness",
        "churn_rate",
        "nps",
        "csat",
        "csat_mean",
        "nps_response_rate",
        "csat_response_rate",
    }
)

#: The largest difference between two ratio values that still counts as equal.
TOLERANCE = 1e-9


def latest(records: Iterable[KpiRecord]) -> dict[str, KpiRecord]:
    """The latest record per output key (later in the iterable supersedes earlier)."""
    return {record.key: record for record in records}


def compare(
    expected: Iterable[KpiRecord],
    actual: Iterable[KpiRecord],
    *,
    tolerance: float = TOLERANCE,
    names: tuple[str, str] = ("reference", "stream"),
) -> list[str]:
    """The differences between two record sets, one human-readable line each, sorted by key.

    An empty list means the two sets are equal by the contract's rule.
    """
    left, right = latest(expected), latest(actual)
    differences = []
    for key in sorted(left.keys() | right.keys()):
        a, b = left.get(key), right.get(key)
        kpi = (a if a is not None else b).kpi  # type: ignore[union-attr]  # one side is present
        if kpi in RATIO_KPIS:
            same = _same_ratio(_value(a, None), _value(b, None), tolerance)
            blank = "missing (undefined)"
        else:
            same = _same_count(_value(a, 0), _value(b, 0))
            blank = "missing (0)"
        if not same:
            shown_a = blank if a is None else repr(a.value)
            shown_b = blank if b is None else repr(b.value)
            differences.append(f"{key}: {names[0]} {shown_a} != {names[1]} {shown_b}")
        for bound, bound_a, bound_b in zip(("ci_low", "ci_high"), _bounds(a), _bounds(b), strict=True):
            if not _same_ratio(bound_a, bound_b, tolerance):
                shown_a = "missing (undefined)" if a is None else repr(bound_a)
                shown_b = "missing (undefined)" if b is None else repr(bound_b)
                differences.append(f"{key} {bound}: {names[0]} {shown_a} != {names[1]} {shown_b}")
    return differences


def _bounds(record: KpiRecord | None) -> tuple[float | None, float | None]:
    """(ci_low, ci_high) of a record; both undefined (None) for a missing record."""
    return (None, None) if record is None else (record.ci_low, record.ci_high)


def _value(record: KpiRecord | None, missing: float | None) -> float | int | None:
    return missing if record is None else record.value


def _same_count(a: float | int | None, b: float | int | None) -> bool:
    return a is not None and b is not None and a == b


def _same_ratio(a: float | int | None, b: float | int | None, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tolerance  # False for NaN, which equals nothing


def parse_records(data: bytes) -> list[KpiRecord]:
    """The records of JSON lines (as `kpimon reference` and `kpimon kpis` write them); blank lines skipped."""
    return [decode(line) for line in data.splitlines() if line.strip()]
