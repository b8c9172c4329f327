"""Shift-share: which segments moved the all/all value of a KPI week over week, split into rate and mix.

A ratio KPI of the whole population is the weighted mean of its segments' values within one dimension
(platform, plan, stage, ...): with `n_s` the segment's denominator (NPS answers, CSAT answers, churn base),
weight `w_s = n_s / sum(n)` and rate `r_s` (the segment's NPS, CSAT, churn rate), `V = sum(w_s * r_s)`.
Between last week (`w`, `r`) and now (`w'`, `r'`) the change splits per segment, exactly, with the midpoint
(symmetric) convention:

    rate effect_s = (r'_s - r_s) * (w_s + w'_s) / 2      the segment's own value moved
    mix effect_s  = (w'_s - w_s) * (r_s + r'_s) / 2      the segment's share of the population moved

    rate effect_s + mix effect_s = w'_s r'_s - w_s r_s, so the parts of all segments sum to V' - V.

A segment without a value in one of the weeks (no answers, empty base) has weight 0 there and takes the
other week's value as its rate: rate effect 0, mix effect `w'_s r'_s` (new) or `-w_s r_s` (gone).

A count (DAU) is a sum, not a mean: each segment's part is its own change (the rate effect), the mix effect
is 0 by definition.

V is the all/all value exactly when every unit of the population counts in exactly one segment of the
dimension: every survey answer has one platform, plan, stage and engagement level; every churn base user
one NPS group. A user active on two platforms counts in both, so platform DAU or churn do not add up to
the all/all value: what the segments do not explain is recorded as the dimension's `overlap` effect, so the
segments' parts plus the overlap are the all/all change, whatever the dimension. `share` is a segment's
part (rate + mix) over the all/all change.

Recorded (monitoring/rules.py adds them to the KPI group; per window, current day, every dimension but
`all`):

- `dimension_segment:<metric>:rate_effect7d`, `dimension_segment:<metric>:mix_effect7d` (the KPI's unit);
- `dimension_segment:<metric>:share7d` (a fraction of the all/all change; absent when that change is 0);
- `dimension:<metric>:overlap_effect7d` (the all/all change minus the sum of the segments' parts).

They read the recorded `dimension_segment:*:max` series now and `offset 7d`, like `delta7d`, so backfilled
history is enough. `decompose` is the same math in Python (the tests' brute-force comparison and the
end-to-end test's expected values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: KPI gauge -> (its denominator's gauge, that gauge's own label matchers); None: a count, no weights.
WEIGHTS: dict[str, tuple[str, str] | None] = {
    "kpimon_nps_score": ("kpimon_survey_responses", 'survey="nps", bucket="responses"'),
    "kpimon_csat_ratio": ("kpimon_survey_responses", 'survey="csat", bucket="responses"'),
    "kpimon_churn_ratio": ("kpimon_churn_base_users", ""),
    "kpimon_active_users": None,
}
#: How the parts read in the alert annotation: NPS in points, the ratios in percentage points, DAU in users.
PartFormat = Literal["decimal", "percent", "count"]
FORMATS: dict[str, PartFormat] = {
    "kpimon_nps_score": "decimal",
    "kpimon_csat_ratio": "percent",
    "kpimon_churn_ratio": "percent",
    "kpimon_active_users": "count",
}
#: The name of the KPI in its dashboard panel's title (`panel_title`).
NAMES: dict[str, str] = {
    "kpimon_nps_score": "NPS",
    "kpimon_csat_ratio": "CSAT",
    "kpimon_churn_ratio": "Churn rate",
    "kpimon_active_users": "DAU",
}
_GO_FORMAT: dict[PartFormat, str] = {
    "decimal": 'printf "%+.1f"',
    "percent": "humanizePercentage",
    "count": 'printf "%+.0f"',
}
#: Labels that tell a segment series apart (`window`, `day`, `dimension`, `segment`): the weights' own
#: labels (survey, bucket) are aggregated away so that value and weight series match one to one.
_OWN_LABELS = "survey, bucket"


def _max(metric: str) -> str:
    # The per-segment recorded series of a gauge (rules.kpi, not imported: rules imports this module).
    return f"dimension_segment:{metric}:max"


def panel_title(metric: str) -> str:
    """Title of the dashboard panel that draws the split of `metric` (monitoring/dashboards.py)."""
    return f"{NAMES[metric]} change against the same day last week: rate and mix effect by segment"


def rate_effect(metric: str) -> str:
    """Record name of the segments' rate effects of `metric`."""
    return f"dimension_segment:{metric}:rate_effect7d"


def mix_effect(metric: str) -> str:
    """Record name of the segments' mix effects of `metric`."""
    return f"dimension_segment:{metric}:mix_effect7d"


def share(metric: str) -> str:
    """Record name of the segments' shares (rate + mix over the all/all change) of `metric`."""
    return f"dimension_segment:{metric}:share7d"


def overlap_effect(metric: str) -> str:
    """Record name of the part of the all/all change the segments of a dimension do not explain."""
    return f"dimension:{metric}:overlap_effect7d"


def _segments(metric: str, matchers: str, offset: str) -> str:
    own = f"{matchers}, " if matchers else ""
    return f'{_max(metric)}{{{own}dimension!="all", day="current"}}{offset}'


def _weight(metric: str, offset: str) -> str:
    spec = WEIGHTS[metric]
    assert spec is not None
    gauge, matchers = spec
    n = _segments(gauge, matchers, offset)
    if matchers:
        n = f"max without ({_OWN_LABELS}) ({n})"
    return f"({n} / on (window, day, dimension) group_left sum by (window, day, dimension) ({n}))"


def _all_change(metric: str) -> str:
    """The all/all week-over-week change, labelled (window, day) only."""
    now = f'{_max(metric)}{{dimension="all", day="current"}}'
    return f"max without (dimension, segment) ({now} - {now} offset 7d)"


def recording_rules() -> list[tuple[str, str]]:
    """(record, expr) of every shift-share rule, in evaluation order (the parts before share and overlap)."""
    out: list[tuple[str, str]] = []
    for metric, spec in WEIGHTS.items():
        r1, r0 = _segments(metric, "", ""), _segments(metric, "", " offset 7d")
        if spec is None:
            # A count: the segment's own change; a segment present in one week only counts from 0.
            out.append((rate_effect(metric), f"{r1} - {r0}\nor {r1}\nor -({r0})"))
            out.append((mix_effect(metric), f"{r1} * 0\nor {r0} * 0"))
        else:
            w1, w0 = _weight(metric, ""), _weight(metric, " offset 7d")
            # Both weeks: the midpoint formulas. One week only: that week's value stands for both, so the
            # rate effect is 0 and the mix effect the segment's whole term (w' r' new, -w r gone).
            out.append((rate_effect(metric), f"({r1} - {r0}) * ({w1} + {w0}) / 2\nor {r1} * 0\nor {r0} * 0"))
            out.append(
                (
                    mix_effect(metric),
                    f"({w1} - {w0}) * ({r1} + {r0}) / 2\nor {w1} * {r1}\nor -({w0} * {r0})",
                )
            )
        parts = f"({rate_effect(metric)} + {mix_effect(metric)})"
        total = _all_change(metric)
        out.append((share(metric), f"{parts}\n/ on (window, day) group_left ()\n({total} != 0)"))
        out.append(
            (
                overlap_effect(metric),
                f"{total}\n- on (window, day) group_right\nsum by (window, day, dimension) {parts}",
            )
        )
    return out


def drivers_template(metric: str) -> str:
    """The `drivers` annotation (Prometheus template) of a week-over-week alert on `metric`.

    For an alert on all/all: per dimension, the segment with the largest share of the change, largest
    first, e.g. `platform=android 98.3% of the change (rate -45.8, mix -1.5); plan=free ...`. Empty for
    an alert on a segment (the split explains the all/all value) and before a week of history.
    """
    fmt = _GO_FORMAT[FORMATS[metric]]
    top = f'sort_desc(topk by (dimension) (1, {share(metric)}{{window="%s", day="current"}}))'
    part = '{window="%s", day="current", dimension="%s", segment="%s"}'
    args = "$s.Labels.window $s.Labels.dimension $s.Labels.segment"

    def value(record: str) -> str:
        query = f"{{{{ with printf `{record}{part}` {args} | query }}}}"
        return f"{query}{{{{ . | first | value | {fmt} }}}}{{{{ end }}}}"

    return (
        '{{ if eq $labels.dimension "all" }}'
        f"{{{{ range $i, $s := printf `{top}` $labels.window | query }}}}"
        "{{ if $i }}; {{ end }}"
        "{{ $s.Labels.dimension }}={{ $s.Labels.segment }} {{ $s.Value | humanizePercentage }} of the change"
        f" (rate {value(rate_effect(metric))}, mix {value(mix_effect(metric))})"
        "{{ end }}{{ end }}"
    )


@dataclass(frozen=True)
class Segment:
    """A segment in one week: its denominator (NPS answers, churn base; 1 for a count) and its value
    (None: undefined, e.g. no answers)."""

    n: float
    value: float | None


@dataclass(frozen=True)
class Effect:
    """A segment's part of the change: rate + mix."""

    rate: float
    mix: float

    @property
    def total(self) -> float:
        """rate + mix: w' r' - w r of the segment."""
        return self.rate + self.mix


def decompose(
    before: Mapping[str, Segment], after: Mapping[str, Segment], *, count: bool = False
) -> dict[str, Effect]:
    """Each segment's rate and mix effect between `before` and `after` (the recording rules' math).

    Weights are n over the sum of n of the week (`count`: weights 1, the value is a count, mix 0).
    """
    if count:
        # A count's value is always defined; a segment missing in a week counts from (or to) 0.
        def count_of(week: Mapping[str, Segment], s: str) -> float:
            return (week[s].value or 0.0) if s in week else 0.0

        return {
            s: Effect(count_of(after, s) - count_of(before, s), 0.0) for s in before.keys() | after.keys()
        }

    def weights(week: Mapping[str, Segment]) -> dict[str, float]:
        total = sum(seg.n for seg in week.values())
        return {s: seg.n / total for s, seg in week.items()} if total else {}

    w0, w1 = weights(before), weights(after)
    out: dict[str, Effect] = {}
    for s in before.keys() | after.keys():
        r0 = before[s].value if s in before else None
        r1 = after[s].value if s in after else None
        if r0 is None and r1 is None:
            continue
        a, b = w0.get(s, 0.0) if r0 is not None else 0.0, w1.get(s, 0.0) if r1 is not None else 0.0
        r0 = r1 if r0 is None else r0
        r1 = r0 if r1 is None else r1
        assert r0 is not None and r1 is not None
        out[s] = Effect((r1 - r0) * (a + b) / 2, (b - a) * (r0 + r1) / 2)
    return out
