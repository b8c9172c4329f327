"""Prometheus recording and alert rules, built from a `MonitoringConfig`.

Recording rules are named `level:metric:operations` (Prometheus' convention). The level of the KPI rules
is `dimension_segment`: one series per segment with `instance`/`job` aggregated away; `window`, `day` and the
metric's own labels (status, survey, bucket) are part of a KPI's identity and always kept. Because the
recorded series carry no `instance`, `offset 7d` compares like with like even when the KPI group moved to
another worker in between (a rebalance changes the raw series' `instance`).

Week over week ("against the same day last week"): the value the *current-day* series has now is compared
with the value the same series had 7 days ago (`offset 7d`), which was then the current day's value. So a 7d
NPS of day d at 10:00 is compared with the 7d NPS of day d-7 as it stood at 10:00 on day d-7, and DAU (1d)
with DAU at the same time of the same weekday: partial days compare with partial days.

Targets come from the workers' `kpimon_kpi_target{kpi,direction,window,...}`, normalised by a recording rule
to one series per (kpi, direction, window), and joined `on (window)`. A KPI without a published target
(or with a target of the other direction) joins nothing, so it never alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kpimon.streams import catalogue
from monitoring.config import MonitoringConfig
from monitoring.promql import number, selector
from monitoring.shiftshare import drivers_template, panel_title
from monitoring.shiftshare import recording_rules as shift_share_rules

#: How an alert's value (and target) read in its description.
ValueFormat = Literal["percent", "decimal", "count", "duration"]
Severity = Literal["critical", "warning", "info"]

#: KPI gauges (agents/exporter/kpi_collector.py) and their own labels beside window, day, dimension, segment.
KPI_GAUGES: dict[str, tuple[str, ...]] = catalogue.gauges()
KPI_LABELS = ("window", "day", "dimension", "segment")
#: The 95 % interval bounds of the ratio KPIs (label `kpi`), recorded like the KPI gauges.
CI_GAUGES = ("kpimon_kpi_ci_low", "kpimon_kpi_ci_high")
#: Gauge of a KPI with an interval -> its `kpi` label in the interval series.
CI_KPIS: dict[str, str] = {
    kpi.metric: kpi.name
    # Satisfaction first: the order of the generated recording rules.
    for kpi in sorted(catalogue.CATALOGUE, key=lambda kpi: kpi.family != "satisfaction")
    if kpi.interval and not kpi.labels
}
#: Interval KPIs without week-over-week recordings: retention compares cohorts, not one population over
#: time; its alert is the interval against the target (and the minimum cohort).
NO_WEEKLY_CHANGE = frozenset({"kpimon_retention_ratio"})
#: Joins between two KPIs of the same segment (never on `day`: a selector fixes it on both sides).
SEGMENT_JOIN = "on (window, dimension, segment)"
TARGET = "kpi_window:kpimon_kpi_target:max"
#: The recording rules of monitoring/shiftshare.py, in their own file (`SHIFT_SHARE_FILE`).
SHIFT_SHARE_GROUP = "kpimon-shiftshare.rules"
SHIFT_SHARE_FILE = "kpimon-shiftshare.yaml"
#: DAU of the same weekday, median of the previous 4 weeks at the same time of day.
DAU_MEDIAN_4W = "dimension_segment:kpimon_active_users:median4w"


def kpi(metric: str) -> str:
    """The recorded per-segment series of a KPI gauge."""
    return f"dimension_segment:{metric}:max"


def delta_halfwidth(metric: str) -> str:
    """sqrt(hw² + hw(7 days ago)²), hw = (ci_high - ci_low) / 2: a week-over-week change beyond it is more
    than the two 95 % intervals allow (per segment, no `kpi` label)."""
    return f"dimension_segment:{metric}:delta7d_ci_halfwidth"


@dataclass(frozen=True)
class RecordingRule:
    """`record: expr`."""

    record: str
    expr: str


@dataclass(frozen=True)
class Alert:
    """An alert rule, with what Grafana needs to express the same alert.

    `description` is a template with `{value}`, `{target}` and `{<label>}` placeholders; `render` turns it
    into Prometheus' or Grafana's template language. `target_expr`, when set, is the alert's target aligned
    to the alerting series' labels (Grafana reads it as query B; Prometheus' description runs `target_query`).
    """

    name: str
    group: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str
    value_format: ValueFormat
    target_query: str = ""  # printf format, `%s` = the alert's window label
    target_expr: str = ""
    #: The `kpi` label of the 95 % interval to show beside the alert (the KPI's interval now), or "".
    interval_kpi: str = ""
    #: The KPI gauge whose all/all week-over-week change the `drivers` annotation splits by segment
    #: (monitoring/shiftshare.py), or "".
    drivers: str = ""
    #: Prometheus' `keep_firing_for` (hysteresis: firing that long after the condition last held), or "".
    keep_firing_for: str = ""


@dataclass(frozen=True)
class RuleGroup:
    """A named group of recording rules or alerts."""

    name: str
    rules: tuple[RecordingRule, ...] | tuple[Alert, ...]


def recording_rules(config: MonitoringConfig) -> tuple[RuleGroup, ...]:
    """The KPI and pipeline recording rules."""
    job = f'job="{config.job}"'
    kpis: list[RecordingRule] = []
    for metric, own in KPI_GAUGES.items():
        by = ", ".join((*own, *KPI_LABELS))
        kpis.append(RecordingRule(kpi(metric), f"max by ({by}) ({selector(metric, job)})"))
    kpis.append(
        RecordingRule(TARGET, f"max by (kpi, direction, window) ({selector('kpimon_kpi_target', job)})")
    )
    for metric in CI_GAUGES:
        by = ", ".join(("kpi", *KPI_LABELS))
        kpis.append(RecordingRule(kpi(metric), f"max by ({by}) ({selector(metric, job)})"))
    for metric, kpi_name in CI_KPIS.items():
        if metric in NO_WEEKLY_CHANGE:
            continue
        kpis.append(
            RecordingRule(f"dimension_segment:{metric}:delta7d", f"{kpi(metric)} - {kpi(metric)} offset 7d")
        )
        high, low = (selector(kpi(m), kpi=kpi_name) for m in CI_GAUGES[::-1])
        # From the recorded bounds of now and of 7 days ago (not from a recorded half-width): history
        # backfilled as `dimension_segment:*:max` series is enough, like for delta7d.
        now = f"max without (kpi) ({high} - {low}) / 2"
        then = f"max without (kpi) ({high} offset 7d - {low} offset 7d) / 2"
        kpis.append(RecordingRule(delta_halfwidth(metric), f"sqrt(({now}) ^ 2 + ({then}) ^ 2)"))
    users = kpi("kpimon_active_users")
    kpis.append(
        RecordingRule("dimension_segment:kpimon_active_users:relchange7d", f"{users} / {users} offset 7d - 1")
    )
    # The median of the current-day DAU at the same time of the same weekday 1-4 weeks ago (over the weeks
    # that have a value: with only some of them, the median of those; with none, no series).
    dau = selector(users, window="1d", day="current")
    weeks = " or ".join(
        f'label_replace({dau} offset {7 * n}d, "weeks_ago", "{n}", "", "")' for n in range(1, 5)
    )
    kpis.append(RecordingRule(DAU_MEDIAN_4W, f"quantile without (weeks_ago) (0.5, {weeks})"))

    window = config.pipeline.rate_window
    rate = f"rate{window}"
    pipeline = (
        RecordingRule(
            f"topic_outcome:kpimon_events:{rate}",
            f"sum by (topic, outcome) (rate({selector('kpimon_events_total', job)}[{window}]))",
        ),
        RecordingRule(f"topic:kpimon_events:{rate}", f"sum by (topic) (topic_outcome:kpimon_events:{rate})"),
        RecordingRule(
            f"topic_reason:kpimon_dead_letters:{rate}",
            f"sum by (topic, reason) (rate({selector('kpimon_dead_letters_total', job)}[{window}]))",
        ),
        RecordingRule(
            f"topic:kpimon_dead_letters:ratio_{rate}",
            f"sum by (topic) (topic_reason:kpimon_dead_letters:{rate}) / topic:kpimon_events:{rate}",
        ),
        RecordingRule(
            f"topic_le:kpimon_event_delay_seconds_bucket:{rate}",
            f"sum by (topic, le) (rate({selector('kpimon_event_delay_seconds_bucket', job)}[{window}]))",
        ),
        RecordingRule(
            "topic_partition:kpimon_consumer_lag_messages:max",
            f"max by (topic, partition) ({selector('kpimon_consumer_lag_messages', job)})",
        ),
        RecordingRule(
            "topic:kpimon_consumer_lag_messages:sum",
            "sum by (topic) (topic_partition:kpimon_consumer_lag_messages:max)",
        ),
        RecordingRule(
            "job:kpimon_last_snapshot_timestamp_seconds:max",
            f"max by (job) ({selector('kpimon_last_snapshot_timestamp_seconds', job)})",
        ),
    )
    # Shift-share in a group (and file) of its own: many expressions, needed by no alert condition (only by
    # the `drivers` annotation), so the promtool tests of the alerts need not evaluate them at every step.
    shift_share = tuple(RecordingRule(record, expr) for record, expr in shift_share_rules())
    return (
        RuleGroup("kpimon-kpis.rules", tuple(kpis)),
        RuleGroup(SHIFT_SHARE_GROUP, shift_share),
        RuleGroup("kpimon-pipeline.rules", pipeline),
    )


class _Kpis:
    """Selector builders for the KPI alerts of one config."""

    def __init__(self, config: MonitoringConfig) -> None:
        self.config = config

    def current(
        self, metric: str, window: str, *, alerting: bool = True, day: str = "current", **labels: str
    ) -> str:
        """The current-day (or `day`) recorded series of a KPI; `alerting` adds the segment selector."""
        extra = self.config.kpi_alert_selector if alerting else ""
        return selector(kpi(metric), extra, **labels, window=window, day=day)

    def recorded(self, record: str, window: str) -> str:
        """A derived per-segment series (delta7d, relchange7d) of the current day, alerting segments only."""
        return selector(record, self.config.kpi_alert_selector, window=window, day="current")

    @staticmethod
    def target(kpi_name: str, direction: str) -> str:
        """The normalised target series of a KPI."""
        return selector(TARGET, kpi=kpi_name, direction=direction)

    def breach(self, metric: str, kpi_name: str, window: str, direction: str, day: str = "current") -> str:
        """The KPI's current value where it is on the wrong side of its target (nothing without a target).

        For a KPI with a 95 % interval (`CI_KPIS`) the whole interval must be on the wrong side: its upper
        bound below a `min` target, its lower bound above a `max` target. Without an interval, no alert.
        """
        op = "<" if direction == "min" else ">"
        target = self.target(kpi_name, direction)
        if metric not in CI_KPIS:
            return f"{self.current(metric, window, day=day)} {op} on (window) group_left {target}"
        bound = "kpimon_kpi_ci_high" if direction == "min" else "kpimon_kpi_ci_low"
        interval = self.current(bound, window, day=day, kpi=kpi_name)
        return (
            f"{self.current(metric, window, day=day)}\nand {SEGMENT_JOIN}\n"
            f"({interval} {op} on (window) group_left {target})"
        )

    def changed(self, metric: str, window: str, direction: str, limit: float) -> str:
        """The week-over-week change of a KPI where it exceeds `limit` and what the two intervals allow.

        `direction` "down": change < -limit and change < -sqrt(hw_now² + hw_week_ago²); "up": > both.
        """
        delta = self.recorded(f"dimension_segment:{metric}:delta7d", window)
        allowed = self.recorded(delta_halfwidth(metric), window)
        if direction == "down":
            return f"{delta} < -{number(limit)}\nand\n{delta} < -{allowed}"
        return f"{delta} > {number(limit)}\nand\n{delta} > {allowed}"

    def meets(self, metric: str, kpi_name: str, window: str, direction: str) -> str:
        """The KPI's current value where it meets its target."""
        op = ">=" if direction == "min" else "<="
        return (
            f"{self.current(metric, window)} {op} on (window) group_left {self.target(kpi_name, direction)}"
        )

    def aligned_target(
        self, metric: str, kpi_name: str, window: str, direction: str, day: str = "current"
    ) -> str:
        """The target with the KPI series' labels (for Grafana's description)."""
        series = self.current(metric, window, day=day)
        return f"{series} * 0 + on (window) group_left {self.target(kpi_name, direction)}"

    @staticmethod
    def target_query(kpi_name: str, direction: str) -> str:
        """A printf format of the target query, `%s` = window (Prometheus' description runs it)."""
        return selector(TARGET, kpi=kpi_name, direction=direction, window="%s")

    def responses(self, survey: str, window: str, minimum: int) -> str:
        """The answered-surveys sample guard."""
        series = self.current(
            "kpimon_survey_responses", window, alerting=False, survey=survey, bucket="responses"
        )
        return f"{series} >= {minimum}"


def alert_groups(config: MonitoringConfig) -> tuple[RuleGroup, ...]:
    """Every alert, by group: engagement, satisfaction, pipeline."""
    k = _Kpis(config)
    churn, sat, eng, pipe = config.churn, config.satisfaction, config.engagement, config.pipeline
    ret = config.retention
    job = f'job="{config.job}"'
    where = "{window} {kpi} of {dimension}={segment}"

    churn_base = (
        f"({k.current('kpimon_churn_base_users', churn.window, alerting=False)} >= {churn.min_base_users})"
    )
    # Stickiness of the previous, whole day: the current day's DAU grows from 0 at midnight, so its
    # DAU / MAU was below any sensible target every night (the alert back-test: a ticket a day).
    mau = k.current("kpimon_active_users", "30d", alerting=False, day="previous")
    dau_median = k.recorded(DAU_MEDIAN_4W, "1d")
    engagement: tuple[Alert, ...] = (
        Alert(
            "KpimonDauDroppedWeekOverWeek",
            "kpimon-engagement",
            f"{k.current('kpimon_active_users', '1d')} / {dau_median} - 1"
            f" < -{number(eng.dau_max_drop_ratio)}\n"
            f"and {SEGMENT_JOIN}\n({dau_median} >= {eng.dau_min_users})",
            eng.for_dau_drop,
            "warning",
            "DAU dropped against the same weekday of the previous 4 weeks",
            "DAU of {dimension}={segment} changed by {value} against the median of the same time of the same"
            f" weekday in the previous 4 weeks (alert below -{number(eng.dau_max_drop_ratio * 100)}%).",
            "percent",
            drivers="kpimon_active_users",
        ),
        Alert(
            "KpimonStickinessBelowTarget",
            "kpimon-engagement",
            f"({k.breach('kpimon_stickiness_ratio', 'stickiness', '30d', 'min', day='previous')})\n"
            f"and {SEGMENT_JOIN}\n({mau} >= {eng.stickiness_min_mau})",
            eng.for_stickiness,
            "warning",
            "Stickiness (DAU/MAU) below target",
            where.replace("{kpi}", "stickiness") + " is {value}, below its target of {target}.",
            "percent",
            k.target_query("stickiness", "min"),
            k.aligned_target("kpimon_stickiness_ratio", "stickiness", "30d", "min", day="previous"),
        ),
        Alert(
            "KpimonChurnAboveTarget",
            "kpimon-engagement",
            f"({k.breach('kpimon_churn_ratio', 'churn_rate', churn.window, 'max')})\n"
            f"and {SEGMENT_JOIN}\n{churn_base}",
            churn.for_above_target,
            "warning",
            "Churn rate above target",
            where.replace("{kpi}", "churn rate") + " is {value}, above its target of {target}.",
            "percent",
            k.target_query("churn_rate", "max"),
            k.aligned_target("kpimon_churn_ratio", "churn_rate", churn.window, "max"),
            interval_kpi="churn_rate",
            keep_firing_for=churn.keep_firing_for,
        ),
        Alert(
            "KpimonChurnRoseWeekOverWeek",
            "kpimon-engagement",
            f"({k.changed('kpimon_churn_ratio', churn.window, 'up', churn.max_rise_week_over_week)})\n"
            f"and {SEGMENT_JOIN}\n{churn_base}",
            churn.for_rise,
            "warning",
            "Churn rate up against the same day last week",
            where.replace("{kpi}", "churn rate")
            + " is up {value} (percentage points) against the same day last week"
            f" (alert above {number(churn.max_rise_week_over_week * 100)} points and beyond the two 95 %"
            " intervals).",
            "percent",
            interval_kpi="churn_rate",
            drivers="kpimon_churn_ratio",
            keep_firing_for=churn.keep_firing_for,
        ),
    )

    # The newest cohort measured on a whole day (`previous`): the newest matured one (`current`) is measured
    # on the current day, whose activity grows from 0 at midnight, so its retention was below target every
    # night (the e2e's reference at 00:28 UTC: 1 of 60 users retained, 95 % upper bound 0.089).
    cohort_users = k.current("kpimon_retention_cohort_users", ret.window, alerting=False, day="previous")
    cohort = f"({cohort_users} >= {ret.min_cohort_users})"

    def nps_group(metric: str, group: str, **labels: str) -> str:
        # Churn by NPS group: dimension nps_group, whatever the alert selector (one population, cut by group).
        return k.current(
            metric, ret.nps_churn_window, alerting=False, dimension="nps_group", segment=group, **labels
        )

    detractors_low = (
        f"max without (kpi, segment) ({nps_group('kpimon_kpi_ci_low', 'detractor', kpi='churn_rate')})"
    )
    promoters_high = (
        f"max without (kpi, segment) ({nps_group('kpimon_kpi_ci_high', 'promoter', kpi='churn_rate')})"
    )
    minimum = ret.nps_churn_min_base_users
    group_bases = "\nand on (window)\n".join(
        f"(max without (segment) ({nps_group('kpimon_churn_base_users', group)}) >= {minimum})"
        for group in ("detractor", "promoter")
    )
    engagement += (
        Alert(
            "KpimonRetentionBelowTarget",
            "kpimon-engagement",
            f"({k.breach('kpimon_retention_ratio', 'retention_rate', ret.window, 'min', day='previous')})\n"
            f"and {SEGMENT_JOIN}\n{cohort}",
            ret.for_below_target,
            "warning",
            "Retention of the newest complete cohort below target",
            where.replace("{kpi}", "retention")
            + " (the newest cohort measured on a whole day) is {value}, below its target of {target}.",
            "percent",
            k.target_query("retention_rate", "min"),
            k.aligned_target("kpimon_retention_ratio", "retention_rate", ret.window, "min", day="previous"),
            interval_kpi="retention_rate",
        ),
        Alert(
            "KpimonDetractorsChurnMore",
            "kpimon-engagement",
            f"{nps_group('kpimon_churn_ratio', 'detractor')}\n"
            f"and on (window)\n({detractors_low}\n> on (window)\n{promoters_high})\n"
            f"and on (window)\n{group_bases}",
            ret.for_detractor_churn,
            "info",
            "Detractors churn more than promoters",
            "{window} churn of the users whose latest NPS answer in the base period was a detractor's is"
            " {value}, above the promoters' churn with non-overlapping 95 % intervals.",
            "percent",
            interval_kpi="churn_rate",
        ),
    )

    w = sat.window
    nps_n = f"({k.responses('nps', w, sat.min_responses)})"
    csat_n = f"({k.responses('csat', w, sat.min_responses)})"
    satisfaction = (
        Alert(
            "KpimonNpsBelowTarget",
            "kpimon-satisfaction",
            f"({k.breach('kpimon_nps_score', 'nps', w, 'min')})\nand {SEGMENT_JOIN}\n{nps_n}",
            sat.for_below_target,
            "warning",
            "NPS below target",
            where.replace("{kpi}", "NPS") + " is {value}, below its target of {target}.",
            "decimal",
            k.target_query("nps", "min"),
            k.aligned_target("kpimon_nps_score", "nps", w, "min"),
            interval_kpi="nps",
            keep_firing_for=sat.keep_firing_for,
        ),
        Alert(
            "KpimonNpsDroppedWeekOverWeek",
            "kpimon-satisfaction",
            f"({k.changed('kpimon_nps_score', w, 'down', sat.nps_max_drop_week_over_week)})\n"
            f"and {SEGMENT_JOIN}\n{nps_n}",
            sat.for_drop,
            "warning",
            "NPS down against the same day last week",
            where.replace("{kpi}", "NPS") + " changed by {value} points against the same day last week"
            f" (alert below -{number(sat.nps_max_drop_week_over_week)} and beyond the two 95 % intervals).",
            "decimal",
            interval_kpi="nps",
            drivers="kpimon_nps_score",
            keep_firing_for=sat.keep_firing_for,
        ),
        Alert(
            "KpimonCsatBelowTarget",
            "kpimon-satisfaction",
            f"({k.breach('kpimon_csat_ratio', 'csat', w, 'min')})\nand {SEGMENT_JOIN}\n{csat_n}",
            sat.for_below_target,
            "warning",
            "CSAT below target",
            where.replace("{kpi}", "CSAT") + " is {value}, below its target of {target}.",
            "percent",
            k.target_query("csat", "min"),
            k.aligned_target("kpimon_csat_ratio", "csat", w, "min"),
            interval_kpi="csat",
            keep_firing_for=sat.keep_firing_for,
        ),
        Alert(
            "KpimonCsatDroppedWeekOverWeek",
            "kpimon-satisfaction",
            f"({k.changed('kpimon_csat_ratio', w, 'down', sat.csat_max_drop_week_over_week)})\n"
            f"and {SEGMENT_JOIN}\n{csat_n}",
            sat.for_drop,
            "warning",
            "CSAT falling against the same day last week",
            where.replace("{kpi}", "CSAT") + " changed by {value} (percentage points) against the same day"
            f" last week (alert below -{number(sat.csat_max_drop_week_over_week * 100)} points and beyond the"
            " two 95 % intervals).",
            "percent",
            interval_kpi="csat",
            drivers="kpimon_csat_ratio",
            keep_firing_for=sat.keep_firing_for,
        ),
        Alert(
            "KpimonCsatBelowTargetNpsOnTarget",
            "kpimon-satisfaction",
            f"({k.breach('kpimon_csat_ratio', 'csat', w, 'min')})\n"
            f"and {SEGMENT_JOIN}\n({k.meets('kpimon_nps_score', 'nps', w, 'min')})\n"
            f"and {SEGMENT_JOIN}\n{csat_n}\nand {SEGMENT_JOIN}\n{nps_n}",
            sat.for_divergence,
            "info",
            "CSAT below target while NPS meets its target",
            where.replace("{kpi}", "CSAT") + " is {value}, below its target of {target}, while NPS meets its"
            " target: recent interactions disappoint users who still recommend the product.",
            "percent",
            k.target_query("csat", "min"),
            k.aligned_target("kpimon_csat_ratio", "csat", w, "min"),
            interval_kpi="csat",
        ),
        Alert(
            "KpimonNpsBelowTargetCsatOnTarget",
            "kpimon-satisfaction",
            f"({k.breach('kpimon_nps_score', 'nps', w, 'min')})\n"
            f"and {SEGMENT_JOIN}\n({k.meets('kpimon_csat_ratio', 'csat', w, 'min')})\n"
            f"and {SEGMENT_JOIN}\n{nps_n}\nand {SEGMENT_JOIN}\n{csat_n}",
            sat.for_divergence,
            "info",
            "NPS below target while CSAT meets its target",
            where.replace("{kpi}", "NPS") + " is {value}, below its target of {target}, while CSAT meets its"
            " target: users are satisfied with interactions but would not recommend the product.",
            "decimal",
            k.target_query("nps", "min"),
            k.aligned_target("kpimon_nps_score", "nps", w, "min"),
            interval_kpi="nps",
        ),
    )

    rate = f"rate{pipe.rate_window}"
    pipeline = (
        Alert(
            "KpimonNoEvents",
            "kpimon-pipeline",
            # Silence where the same window a week ago carried traffic: `and`, not `unless` on a quiet
            # week, so that without a week of history (a new deployment, or a gap a week ago) silence
            # alone does not page (the alert back-test: 5 pages in the first 3 nights of a small product).
            f"sum by (job) (increase({selector('kpimon_events_total', job)}[{pipe.no_events_window}])) == 0\n"
            f"and on (job)\nsum by (job) (increase({selector('kpimon_events_total', job)}"
            f"[{pipe.no_events_window}] offset 7d)) >= {pipe.no_events_min_last_week}",
            "0s",
            "critical",
            "No input events",
            "The workers of job {job} processed {value} input messages (any topic, any outcome) in the last"
            f" {pipe.no_events_window}.",
            "count",
        ),
        Alert(
            "KpimonDeadLetterRatioHigh",
            "kpimon-pipeline",
            f"topic:kpimon_dead_letters:ratio_{rate} > {number(pipe.dead_letter_max_ratio)}",
            pipe.for_dead_letters,
            "warning",
            "Many input messages dead-lettered",
            "{value} of the messages on topic {topic} were dead-lettered over the last"
            f" {pipe.rate_window} (alert above {number(pipe.dead_letter_max_ratio * 100)}%).",
            "percent",
        ),
        Alert(
            "KpimonConsumerLagGrowing",
            "kpimon-pipeline",
            f"topic:kpimon_consumer_lag_messages:sum > {pipe.lag_min_messages}\n"
            f"and deriv(topic:kpimon_consumer_lag_messages:sum[{pipe.lag_growth_window}]) > 0",
            pipe.for_lag,
            "warning",
            "Consumer lag growing",
            "Consumer lag on topic {topic} is {value} messages and has been growing"
            f" over the last {pipe.lag_growth_window}.",
            "count",
        ),
        Alert(
            "KpimonSnapshotStale",
            "kpimon-pipeline",
            f"time() - job:kpimon_last_snapshot_timestamp_seconds:max{{{job}}}"
            f" > {pipe.snapshot_max_age_seconds}",
            pipe.for_snapshot,
            "critical",
            "KPI snapshot stale",
            "The newest KPI snapshot of job {job} is {value} old"
            f" (alert above {pipe.snapshot_max_age_seconds}s).",
            "duration",
        ),
        Alert(
            "KpimonWorkerDown",
            "kpimon-pipeline",
            f"{selector('up', job)} == 0",
            pipe.for_worker_down,
            "warning",
            "kpimon worker down",
            "Prometheus cannot scrape worker {instance} of job {job} (up = {value}).",
            "count",
        ),
        Alert(
            "KpimonKafkaUnreachable",
            "kpimon-pipeline",
            f"{selector('kpimon_kafka_reachable', job)} == 0",
            pipe.for_kafka_unreachable,
            "critical",
            "kpimon worker cannot reach Kafka",
            "Worker {instance} of job {job} reaches no Kafka broker (kpimon_kafka_reachable = {value}).",
            "count",
        ),
    )
    return (
        RuleGroup("kpimon-engagement", engagement),
        RuleGroup("kpimon-satisfaction", satisfaction),
        RuleGroup("kpimon-pipeline", pipeline),
    )


def alerts(config: MonitoringConfig) -> list[Alert]:
    """Every alert of every group."""
    return [rule for group in alert_groups(config) for rule in group.rules if isinstance(rule, Alert)]


_PROMETHEUS_VALUE: dict[str, str] = {
    "percent": "humanizePercentage",
    "decimal": 'printf "%.1f"',
    "count": 'printf "%.0f"',
    "duration": "humanizeDuration",
}


def _labels(text: str, value: str, target: str) -> str:
    """Replace {value}/{target} and turn every other {label} into a Go template label reference."""
    out = text.replace("{value}", "\0V").replace("{target}", "\0T")
    out = out.replace("{", "{{ $labels.").replace("}", " }}")
    return out.replace("\0V", value).replace("\0T", target)


def _query_value(query: str, labels: tuple[str, ...], fmt: str) -> str:
    """A Go template running `query` (a printf format of `labels`) and printing its first value with `fmt`."""
    args = " ".join(f"$labels.{label}" for label in labels)
    return f"{{{{ with printf `{query}` {args} | query }}}}{{{{ . | first | value | {fmt} }}}}{{{{ end }}}}"


def prometheus_value(alert: Alert) -> str:
    """The alert's value as its description prints it."""
    return f"{{{{ $value | {_PROMETHEUS_VALUE[alert.value_format]} }}}}"


def prometheus_target(alert: Alert) -> str:
    """The alert's target (a query of the normalised target series), or "" for an alert without one."""
    if not alert.target_query:
        return ""
    return _query_value(alert.target_query, ("window",), _PROMETHEUS_VALUE[alert.value_format])


#: The value format of a KPI's own scale (its interval's), whatever the alert's value is (a change, a ratio).
_KPI_FORMAT: dict[str, ValueFormat] = {
    "nps": "decimal",
    "csat": "percent",
    "churn_rate": "percent",
    "retention_rate": "percent",
}


def prometheus_interval(alert: Alert) -> str:
    """ "<low> to <high>": the 95 % interval of the alert's KPI now, for its segment; "" without one."""
    if not alert.interval_kpi:
        return ""
    fmt = _PROMETHEUS_VALUE[_KPI_FORMAT[alert.interval_kpi]]
    # The alert's own day: retention alerts on the `previous` cohort.
    args = "$labels.window $labels.day $labels.dimension $labels.segment"
    low, high = (
        selector(kpi(m), kpi=alert.interval_kpi, window="%s", day="%s", dimension="%s", segment="%s")
        for m in CI_GAUGES
    )
    # Both bounds or nothing: the high bound's query runs inside the low bound's `with`.
    return (
        f"{{{{ with printf `{low}` {args} | query }}}}{{{{ $low := . | first | value }}}}"
        f"{{{{ with printf `{high}` {args} | query }}}}"
        f"{{{{ $low | {fmt} }}}} to {{{{ . | first | value | {fmt} }}}}{{{{ end }}}}{{{{ end }}}}"
    )


def prometheus_description(alert: Alert) -> str:
    """The description in Prometheus' template language (`$value`, `$labels`, `query` for the target)."""
    return _labels(alert.description, prometheus_value(alert), prometheus_target(alert))


def grafana_description(alert: Alert) -> str:
    """The description in Grafana's template language (`$values.A` is the value, `$values.B` the target)."""
    fmt = _PROMETHEUS_VALUE[alert.value_format]
    value = f"{{{{ {fmt} $values.A.Value }}}}"
    target = (
        f'{{{{ with index $values "B" }}}}{{{{ {fmt} .Value }}}}{{{{ end }}}}' if alert.target_expr else ""
    )
    return _labels(alert.description, value, target)


def grafana_interval_exprs(alert: Alert) -> tuple[str, str]:
    """Queries D and E of a Grafana rule: the 95 % interval bounds of the alert's KPI with the labels of the
    alerting series (window, day, dimension, segment; `kpi` aggregated away), matched to it by Grafana."""
    # Both days: Grafana matches each bound to the alerting series by its labels, `day` included.
    low, high = (f"max without (kpi) ({selector(kpi(m), kpi=alert.interval_kpi)})" for m in CI_GAUGES)
    return low, high


def grafana_values(alert: Alert, config: MonitoringConfig) -> dict[str, str]:
    """value, target, interval and drivers of a Grafana-managed rule: the Prometheus annotations' content,
    read from the rule's own queries (A the alert, B the target, D and E the interval bounds).

    Grafana's templates cannot run a query, and no value can carry a segment's name, so `drivers` names the
    dashboard panel with the split instead of the segments.
    """
    fmt = _PROMETHEUS_VALUE[alert.value_format]
    out = {"value": f"{{{{ {fmt} $values.A.Value }}}}"}
    if alert.target_expr:
        out["target"] = f'{{{{ with index $values "B" }}}}{{{{ {fmt} .Value }}}}{{{{ end }}}}'
    if alert.interval_kpi:
        kpi_fmt = _PROMETHEUS_VALUE[_KPI_FORMAT[alert.interval_kpi]]
        out["interval"] = (
            '{{ with index $values "D" }}{{ $low := .Value }}{{ with index $values "E" }}'
            f"{{{{ {kpi_fmt} $low }}}} to {{{{ {kpi_fmt} .Value }}}}{{{{ end }}}}{{{{ end }}}}"
        )
    if alert.drivers:
        out["drivers"] = (
            '{{ if eq $labels.dimension "all" }}Which segments drove the change, split into rate and mix:'
            f' the panel "{panel_title(alert.drivers)}" on {dashboard_url(alert, config)}{{{{ end }}}}'
        )
    return out


def dashboard_url(alert: Alert, config: MonitoringConfig) -> str:
    """The alert's dashboard (its group's name is the dashboard's uid), opened on the alert's segment.

    A KPI alert carries `dimension` and `segment` (and `window`); the dashboard's variables of the same
    names select them. The label references are Go templates, expanded by Prometheus and by Grafana alike.
    """
    url = f"{config.grafana_url}/d/{alert.group}"
    if alert.group == "kpimon-pipeline":
        return url
    return url + "?var-dimension={{ $labels.dimension }}&var-segment={{ $labels.segment }}"


def alert_labels(alert: Alert, config: MonitoringConfig) -> dict[str, str]:
    """severity (critical pages, warning tickets, info informs) and the owning team: what routing reads."""
    return {"severity": alert.severity, "team": config.team(alert.group)}


def alert_annotations(alert: Alert, config: MonitoringConfig, description: str) -> dict[str, str]:
    """summary, description, runbook_url (docs/runbooks/<alert>.md), dashboard_url."""
    return {
        "summary": alert.summary,
        "description": description,
        "runbook_url": config.runbook_url(alert.name),
        "dashboard_url": dashboard_url(alert, config),
    }


def prometheus_values(alert: Alert) -> dict[str, str]:
    """value, and where the alert has them, target and interval: what a receiver shows without parsing."""
    out = {"value": prometheus_value(alert)}
    if alert.target_query:
        out["target"] = prometheus_target(alert)
    if alert.interval_kpi:
        out["interval"] = prometheus_interval(alert)
    if alert.drivers:
        out["drivers"] = drivers_template(alert.drivers)
    return out


def prometheus_rule_files(config: MonitoringConfig) -> dict[str, dict[str, object]]:
    """File name under deploy/prometheus/rules/ -> its document."""

    def recording(groups: list[RuleGroup]) -> dict[str, object]:
        return {
            "groups": [
                {
                    "name": g.name,
                    "rules": [
                        {"record": r.record, "expr": r.expr} for r in g.rules if isinstance(r, RecordingRule)
                    ],
                }
                for g in groups
            ]
        }

    groups = recording_rules(config)
    alerting: dict[str, object] = {
        "groups": [
            {
                "name": g.name,
                "rules": [
                    {
                        "alert": a.name,
                        "expr": a.expr,
                        **({"for": a.for_} if a.for_ not in ("0s", "0m", "") else {}),
                        **({"keep_firing_for": a.keep_firing_for} if a.keep_firing_for else {}),
                        "labels": alert_labels(a, config),
                        "annotations": {
                            **alert_annotations(a, config, prometheus_description(a)),
                            **prometheus_values(a),
                        },
                    }
                    for a in g.rules
                    if isinstance(a, Alert)
                ],
            }
            for g in alert_groups(config)
        ]
    }
    return {
        "kpimon-recording.yaml": recording([g for g in groups if g.name != SHIFT_SHARE_GROUP]),
        SHIFT_SHARE_FILE: recording([g for g in groups if g.name == SHIFT_SHARE_GROUP]),
        "kpimon-alerts.yaml": alerting,
    }
