"""The Grafana dashboards, built with grafana-foundation-sdk (pinned in pyproject.toml).

Three dashboards: engagement, satisfaction, pipeline health. KPI panels read the `dimension_segment:*`
recording rules (no `instance` label, so a KPI group moving between workers draws one line), pipeline panels
the `topic*:*` rules. Targets are drawn from `kpi_window:kpimon_kpi_target:max` as dashed red series named
`target ...`. Variables: data source, dimension, segment (multi, with All), and window / topic where useful.

Intervals: the ratio KPIs with a 95 % interval (NPS, CSAT, churn rate, response rates) also get a panel per
segment (`repeat` on the segment variable, so each copy shows one segment) with the interval drawn as a
band: the `ci_high` series fills down to the `ci_low` series (`custom.fillBelowTo`, which names one series by
its display name; with a multi-valued segment in one panel there would be one name per segment). `bands()`
lists each band's series names and queries for the tests.

`panel_queries()` lists every (dashboard, panel title, PromQL) so tests (and a later end-to-end test
against a real Prometheus) can check each expression; `monitoring.promql.substitute_variables` fills in the
Grafana variables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, prometheus
from grafana_foundation_sdk.models import dashboard as models

from monitoring.config import MonitoringConfig
from monitoring.rules import CI_GAUGES, TARGET, kpi
from monitoring.shiftshare import NAMES, mix_effect, overlap_effect, panel_title, rate_effect

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The segment selector of KPI panels (segment is multi-valued with All = ".*").
SEGMENT = 'dimension="$dimension", segment=~"$segment"'
Query = tuple[str, str]  # (PromQL, legend)
#: Windows of the churn KPIs (docs/output.md, "KPIs and windows"); each gets its own band.
CHURN_WINDOWS = ("7d", "30d")
#: Offsets of the retention KPIs (their windows).
RETENTION_WINDOWS = ("1d", "7d", "30d")
#: Fill of an interval band (percent): visible behind the line, light enough to read lines through it.
BAND_FILL_OPACITY = 20


@dataclass(frozen=True)
class Band:
    """A KPI line and its 95 % interval: three queries whose legends are fixed names (no `{{label}}`), so
    the band's `fillBelowTo` can name the lower series. Fixed names need exactly one series per query: the
    panel repeats per segment, and window and labels are single-valued."""

    name: str  # legend of the KPI line, e.g. "NPS"
    kpi: str  # the `kpi` label of its interval series, e.g. "nps"
    metric: str  # the KPI gauge, e.g. "kpimon_nps_score"
    matchers: str  # selector of the three queries: segment, window, day
    color: str  # the line's and the band's colour
    own: str = ""  # matchers of the KPI gauge only (its own labels, e.g. 'survey="nps"')

    @property
    def value(self) -> str:
        """PromQL of the KPI line."""
        return f"{kpi(self.metric)}{{{', '.join(m for m in (self.matchers, self.own) if m)}}}"

    @property
    def low_name(self) -> str:
        """Legend of the lower bound."""
        return f"{self.name} 95 % low"

    @property
    def high_name(self) -> str:
        """Legend of the upper bound: the series that fills down to the lower one."""
        return f"{self.name} 95 % high"

    def bound(self, gauge: str) -> str:
        """PromQL of one bound (`gauge` from CI_GAUGES): the interval series of the same segment and day."""
        return f'{kpi(gauge)}{{kpi="{self.kpi}", {self.matchers}}}'


@dataclass(frozen=True)
class PanelQuery:
    """One panel query: which dashboard and panel it belongs to, and its PromQL (with Grafana variables)."""

    dashboard: str
    panel: str
    expr: str


def _targets(panel: cog_builder.Builder[models.Panel], queries: Sequence[Query]) -> None:
    for index, (expr, legend) in enumerate(queries):
        query = prometheus_builders.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + index))
        panel.with_target(query)  # type: ignore[attr-defined]  # every panel builder has with_target


def _thresholds(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for value, color in steps])
    )


def _bottom_legend() -> common_builders.VizLegendOptions:
    """The legend of every time series panel: a list below the graph."""
    return (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
    )


def _target_line(*extra: models.DynamicConfigValue) -> list[models.DynamicConfigValue]:
    """Overrides of the `target...` series of a panel: a dashed red line, plus the panel's own `extra`."""
    return [
        models.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
        models.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"}),
        *extra,
    ]


def _series(
    title: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    span: int = 12,
    description: str = "",
    stacking: common.StackingMode | None = None,
    bars: bool = False,
    threshold: float | None = None,
    interval: str = "",
) -> timeseries.Panel:
    """A time series panel; series whose legend starts with `target` are dashed red lines."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(8)
        .line_width(1)
        .fill_opacity(60 if bars else 10)
        .legend(_bottom_legend())
        .override_by_regexp(
            "^target.*",
            _target_line(
                models.DynamicConfigValue("custom.fillOpacity", 0),
                models.DynamicConfigValue("custom.stacking", {"mode": "none", "group": "A"}),
            ),
        )
    )
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS)
    if stacking is not None:
        panel = panel.stacking(common_builders.StackingConfig().mode(stacking))
    if threshold is not None:
        panel = panel.thresholds(_thresholds((None, "green"), (threshold, "red"))).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    if interval:
        panel = panel.interval(interval)
    _targets(panel, queries)
    return panel


def _band_series(
    title: str,
    bands: Sequence[Band],
    *,
    unit: str = "short",
    description: str = "",
    extra: Sequence[Query] = (),
) -> timeseries.Panel:
    """A time series panel, repeated per segment, of KPI lines with their 95 % intervals as bands.

    `extra` are further queries (targets: dashed red like in `_series`). Each band: the line in its
    colour; the upper bound without a line, filled down to the lower bound (`custom.fillBelowTo`, by display
    name); the lower bound without a line or fill. Both bounds stay in the tooltip and out of the legend.
    """
    hidden = {"legend": True, "tooltip": False, "viz": False}
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(8)
        .height(8)
        .line_width(2)
        .fill_opacity(0)
        .repeat("segment")
        .repeat_direction("h")
        .max_per_row(3)
        .legend(_bottom_legend())
        .override_by_regexp(
            "^target.*",
            _target_line(models.DynamicConfigValue("custom.lineWidth", 1)),
        )
    )
    queries: list[Query] = []
    for band in bands:
        low, high = (band.bound(gauge) for gauge in CI_GAUGES)
        queries += [(band.value, band.name), (low, band.low_name), (high, band.high_name)]
        color = models.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": band.color})
        panel = (
            panel.override_by_name(band.name, [color])
            .override_by_name(
                band.high_name,
                [
                    color,
                    models.DynamicConfigValue("custom.lineWidth", 0),
                    models.DynamicConfigValue("custom.fillOpacity", BAND_FILL_OPACITY),
                    models.DynamicConfigValue("custom.fillBelowTo", band.low_name),
                    models.DynamicConfigValue("custom.hideFrom", hidden),
                ],
            )
            .override_by_name(
                band.low_name,
                [
                    color,
                    models.DynamicConfigValue("custom.lineWidth", 0),
                    models.DynamicConfigValue("custom.hideFrom", hidden),
                ],
            )
        )
    _targets(panel, [*queries, *extra])
    return panel


def _stat(
    title: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    span: int = 6,
    decimals: int = 0,
    description: str = "",
) -> stat.Panel:
    """A stat panel of the last value."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .decimals(decimals)
        .span(span)
        .height(4)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common.BigValueGraphMode.AREA)
    )
    _targets(panel, queries)
    return panel


def _bars(
    title: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    span: int = 12,
    decimals: int = 0,
    description: str = "",
) -> bargauge.Panel:
    """A horizontal bar gauge of the last value per series (a segment comparison)."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .decimals(decimals)
        .span(span)
        .height(8)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    _targets(panel, queries)
    return panel


def _shift_share(
    metric: str, window: str, alert: str, *, unit: str = "short", decimals: int = 1
) -> bargauge.Panel:
    """The split of the all/all week-over-week change of `metric` (monitoring/shiftshare.py): each segment's
    rate and mix effect, every dimension, and each dimension's overlap."""
    where = f'{window}, day="current"'
    return _bars(
        panel_title(metric),
        [
            (f"{rate_effect(metric)}{{{where}}}", "{{dimension}}={{segment}} rate"),
            (f"{mix_effect(metric)}{{{where}}}", "{{dimension}}={{segment}} mix"),
            (f"{overlap_effect(metric)}{{{where}}}", "{{dimension}} overlap"),
        ],
        unit=unit,
        decimals=decimals,
        description=f"The all/all {NAMES[metric]} change since the same day last week, split within "
        "each dimension: rate = the segment's own change x its mean weight of both weeks, mix = the change "
        "of its weight x its mean value (a count such as DAU has no mix). Within a dimension the segments' "
        "rate and mix plus the overlap (units counted in several segments; 0 when every unit is in one "
        "segment) add up to the all/all change exactly. A segment's share of the change, named by "
        f"{alert}'s `drivers` annotation, is its rate + mix over that change (docs/alerts.md, Shift-share).",
    )


def _datasource_variable() -> dashboard_builders.DatasourceVariable:
    return dashboard_builders.DatasourceVariable("datasource").label("Data source").type("prometheus")


def _segment_variables(metric: str) -> list[cog_builder.Builder[models.VariableModel]]:
    """dimension (single, default all) and segment (multi, All = every segment of the dimension)."""
    dimension = (
        dashboard_builders.QueryVariable("dimension")
        .label("Dimension")
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, dimension)")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .current(models.VariableOption(selected=True, text="all", value="all"))
    )
    segment = (
        dashboard_builders.QueryVariable("segment")
        .label("Segment")
        .datasource(DATASOURCE)
        .query(f'label_values({metric}{{dimension="$dimension"}}, segment)')
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    return [dimension, segment]


def _window_variable(windows: Sequence[str]) -> dashboard_builders.CustomVariable:
    return (
        dashboard_builders.CustomVariable("window")
        .label("Window")
        .values(",".join(windows))
        .current(models.VariableOption(selected=True, text=windows[0], value=windows[0]))
    )


def _dashboard(uid: str, title: str, description: str, time_from: str) -> dashboard_builders.Dashboard:
    return (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["kpimon"])
        .editable()
        .refresh("1m")
        .time(time_from, "now")
        .timezone("utc")
        .link(
            dashboard_builders.DashboardLink("kpimon")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(["kpimon"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def _current(metric: str, *extra: str, window: str = "") -> str:
    """The current-day recorded series of a KPI for the selected segments."""
    matchers = [SEGMENT, *extra, f'window="{window}"' if window else "", 'day="current"']
    return f"{kpi(metric)}{{{', '.join(m for m in matchers if m)}}}"


def engagement(config: MonitoringConfig) -> dashboard_builders.Dashboard:
    """DAU/WAU/MAU, stickiness, lifecycle, churn."""
    users = kpi("kpimon_active_users")
    drop = config.engagement.dau_max_drop_ratio
    board = _dashboard(
        "kpimon-engagement",
        "kpimon / Engagement",
        "Active users, stickiness, lifecycle and churn of the current (UTC, event-time) day, by segment.",
        "now-7d",
    )
    for variable in [_datasource_variable(), *_segment_variables(users)]:
        board = board.with_variable(variable)
    return (
        board.with_row(dashboard_builders.Row("Active users"))
        .with_panel(
            _stat("DAU (today so far)", [(_current("kpimon_active_users", window="1d"), "{{segment}}")])
        )
        .with_panel(_stat("WAU", [(_current("kpimon_active_users", window="7d"), "{{segment}}")]))
        .with_panel(_stat("MAU", [(_current("kpimon_active_users", window="30d"), "{{segment}}")]))
        .with_panel(
            _stat(
                "DAU yesterday (final)",
                [(f'{users}{{{SEGMENT}, window="1d", day="previous"}}', "{{segment}}")],
            )
        )
        .with_panel(
            _series(
                "Active users by window (DAU, WAU, MAU)",
                [(_current("kpimon_active_users"), "{{window}} {{segment}}")],
                description="Distinct active users in the window ending on the current day (the 1d line "
                "grows during the day and starts again at 00:00 UTC).",
            )
        )
        .with_panel(
            _series(
                "DAU against the same time last week",
                [
                    (
                        f'dimension_segment:kpimon_active_users:relchange7d{{{SEGMENT}, window="1d", '
                        'day="current"}',
                        "{{segment}} vs last week",
                    ),
                    (
                        f'dimension_segment:kpimon_active_users:max{{{SEGMENT}, window="1d", day="current"}}'
                        f' / dimension_segment:kpimon_active_users:median4w{{{SEGMENT}, window="1d", '
                        'day="current"} - 1',
                        "{{segment}} vs 4-week median",
                    ),
                ],
                unit="percentunit",
                threshold=-drop,
                description="DAU / DAU at the same time of the same weekday last week - 1, and DAU / the "
                "median of the same time of the same weekday in the previous 4 weeks - 1. The dashed line is "
                "the alert threshold of the second (KpimonDauDroppedWeekOverWeek).",
            )
        )
        .with_panel(
            _shift_share("kpimon_active_users", 'window="1d"', "KpimonDauDroppedWeekOverWeek", decimals=0)
        )
        .with_row(dashboard_builders.Row("Stickiness and lifecycle"))
        .with_panel(
            _series(
                "Stickiness (DAU / MAU)",
                [
                    (_current("kpimon_stickiness_ratio", window="30d"), "{{segment}}"),
                    (f'{TARGET}{{kpi="stickiness", window="30d"}}', "target ({{direction}})"),
                ],
                unit="percentunit",
            )
        )
        .with_panel(
            _series(
                "Lifecycle of the current day",
                [
                    (
                        _current("kpimon_lifecycle_users", 'status!="dormant"', window="1d"),
                        "{{status}} {{segment}}",
                    ),
                    (
                        "-" + _current("kpimon_lifecycle_users", 'status="dormant"', window="1d"),
                        "dormant {{segment}}",
                    ),
                ],
                bars=True,
                stacking=common.StackingMode.NORMAL,
                interval="1h",
                description="New, returning and resurrecting users of the day up, users gone dormant "
                "(active yesterday, not today) down.",
            )
        )
        .with_panel(
            _bars(
                "Lifecycle yesterday (final)",
                [
                    (
                        f'{kpi("kpimon_lifecycle_users")}{{{SEGMENT}, window="1d", day="previous"}}',
                        "{{status}} {{segment}}",
                    )
                ],
            )
        )
        .with_panel(
            _series(
                "Lifecycle yesterday over time",
                [
                    (
                        f'{kpi("kpimon_lifecycle_users")}{{{SEGMENT}, window="1d", day="previous"}}',
                        "{{status}} {{segment}}",
                    )
                ],
                stacking=common.StackingMode.NORMAL,
                bars=True,
                interval="1h",
            )
        )
        .with_row(dashboard_builders.Row("Churn"))
        .with_panel(
            _series(
                "Churn rate",
                [
                    (_current("kpimon_churn_ratio"), "{{window}} {{segment}}"),
                    (f'{TARGET}{{kpi="churn_rate"}}', "target {{window}} ({{direction}})"),
                ],
                unit="percentunit",
                description="Churned / base: users active in the previous W days who were not active in "
                "the last W days.",
            )
        )
        .with_panel(
            _series(
                "Churn base and churned users",
                [
                    (_current("kpimon_churn_base_users"), "base {{window}} {{segment}}"),
                    (_current("kpimon_churned_users"), "churned {{window}} {{segment}}"),
                ],
            )
        )
        .with_panel(
            _series(
                "Churn rate against the same day last week",
                [
                    (
                        f'dimension_segment:kpimon_churn_ratio:delta7d{{{SEGMENT}, day="current"}}',
                        "{{window}} {{segment}}",
                    )
                ],
                unit="percentunit",
                threshold=config.churn.max_rise_week_over_week,
                description="Churn rate minus the churn rate of the same day last week (ratio points).",
            )
        )
        .with_panel(
            _shift_share(
                "kpimon_churn_ratio",
                f'window="{config.churn.window}"',
                "KpimonChurnRoseWeekOverWeek",
                unit="percentunit",
                decimals=2,
            )
        )
        .with_panel(
            _band_series(
                "Churn rate with its 95 % interval: $segment",
                [
                    Band(
                        f"churn {window}",
                        "churn_rate",
                        "kpimon_churn_ratio",
                        f'{SEGMENT}, window="{window}", day="current"',
                        color,
                    )
                    for window, color in zip(CHURN_WINDOWS, ("orange", "purple"), strict=True)
                ],
                unit="percentunit",
                extra=[(f'{TARGET}{{kpi="churn_rate"}}', "target {{window}} ({{direction}})")],
                description="One panel per selected segment. The band is the 95 % (Wilson) interval of the "
                "churn rate: the alerts need all of it above the target, and a week-over-week rise beyond "
                "both weeks' intervals. A wide band means a small churn base.",
            )
        )
        .with_panel(
            _series(
                "Churn rate by NPS group",
                [
                    (
                        f'{kpi("kpimon_churn_ratio")}{{dimension="nps_group", day="current"}}',
                        "{{window}} {{segment}}",
                    )
                ],
                unit="percentunit",
                description="Churn of the whole population cut by the NPS group of each base user's latest "
                "NPS answer in the base period (none: no answer). Do detractors churn more than promoters? "
                "KpimonDetractorsChurnMore fires when the two intervals no longer overlap.",
            )
        )
        .with_panel(
            _series(
                "Churn base by NPS group",
                [
                    (
                        f'{kpi("kpimon_churn_base_users")}{{dimension="nps_group", day="current"}}',
                        "{{window}} {{segment}}",
                    )
                ],
                description="How many base users each NPS group has: a rate of a small group is noisy.",
            )
        )
        .with_row(dashboard_builders.Row("Retention"))
        .with_panel(
            _band_series(
                "D1, D7 and D30 retention with 95 % intervals: $segment",
                [
                    Band(
                        f"D{window.removesuffix('d')}",
                        "retention_rate",
                        "kpimon_retention_ratio",
                        f'{SEGMENT}, window="{window}", day="current"',
                        color,
                    )
                    for window, color in zip(RETENTION_WINDOWS, ("green", "blue", "purple"), strict=True)
                ],
                unit="percentunit",
                extra=[(f'{TARGET}{{kpi="retention_rate"}}', "target {{window}} ({{direction}})")],
                description="One panel per selected segment (dimensions all, platform, plan). At each time, "
                "Dk is the retention of the newest cohort that has matured for offset k: the users new on "
                "the current day minus k who were active again exactly k days later. The band is its 95 % "
                "(Wilson) interval; KpimonRetentionBelowTarget needs all of it below the target.",
            )
        )
        .with_panel(
            _series(
                "Matured cohorts and retained users",
                [
                    (_current("kpimon_retention_cohort_users"), "cohort {{window}} {{segment}}"),
                    (_current("kpimon_retained_users"), "retained {{window}} {{segment}}"),
                ],
                description="Size of the newest matured cohort per offset (window) and how many of it "
                "came back on cohort day + k.",
            )
        )
    )


def satisfaction(config: MonitoringConfig) -> dashboard_builders.Dashboard:
    """NPS (with its split), CSAT, response rates, targets; by stage and segment."""
    sat = config.satisfaction
    responses = kpi("kpimon_survey_responses")
    board = _dashboard(
        "kpimon-satisfaction",
        "kpimon / Satisfaction",
        "NPS and CSAT over the 7d or 30d window ending on the current (UTC, event-time) day, by segment.",
        "now-14d",
    )
    for variable in [_datasource_variable(), *_segment_variables(responses), _window_variable(("7d", "30d"))]:
        board = board.with_variable(variable)
    w = 'window="$window"'
    current = f'{SEGMENT}, {w}, day="current"'
    nps_split = 'survey="nps", bucket=~"promoters|passives|detractors"'
    return (
        board.with_row(dashboard_builders.Row("Now"))
        .with_panel(_stat("NPS", [(_current("kpimon_nps_score", w), "{{segment}}")], decimals=1))
        .with_panel(
            _stat("CSAT", [(_current("kpimon_csat_ratio", w), "{{segment}}")], unit="percentunit", decimals=1)
        )
        .with_panel(
            _stat(
                "NPS answers",
                [
                    (
                        _current("kpimon_survey_responses", w, 'survey="nps"', 'bucket="responses"'),
                        "{{segment}}",
                    )
                ],
            )
        )
        .with_panel(
            _stat(
                "CSAT answers",
                [
                    (
                        _current("kpimon_survey_responses", w, 'survey="csat"', 'bucket="responses"'),
                        "{{segment}}",
                    )
                ],
            )
        )
        .with_row(dashboard_builders.Row("NPS"))
        .with_panel(
            _series(
                "NPS",
                [
                    (_current("kpimon_nps_score", w), "{{segment}}"),
                    (f'{TARGET}{{kpi="nps", {w}}}', "target ({{direction}})"),
                ],
                description="100 x (promoters - detractors) / answers; no point without answers.",
            )
        )
        .with_panel(
            _series(
                "NPS answers: promoters, passives, detractors",
                [(_current("kpimon_survey_responses", w, nps_split), "{{bucket}} {{segment}}")],
                unit="percent",
                stacking=common.StackingMode.PERCENT,
                description="Share of each bucket among the NPS answers of the window.",
            )
        )
        .with_panel(
            _series(
                "NPS against the same day last week",
                [
                    (
                        f'dimension_segment:kpimon_nps_score:delta7d{{{SEGMENT}, {w}, day="current"}}',
                        "{{segment}}",
                    )
                ],
                threshold=-sat.nps_max_drop_week_over_week,
                description="NPS minus NPS of the same day last week (points); the dashed line is the "
                "alert threshold (KpimonNpsDroppedWeekOverWeek).",
            )
        )
        .with_panel(_shift_share("kpimon_nps_score", w, "KpimonNpsDroppedWeekOverWeek"))
        .with_panel(
            _series(
                "NPS by stage",
                [
                    (f'{kpi("kpimon_nps_score")}{{dimension="stage", {w}, day="current"}}', "{{segment}}"),
                    (f'{TARGET}{{kpi="nps", {w}}}', "target ({{direction}})"),
                ],
            )
        )
        .with_row(dashboard_builders.Row("CSAT"))
        .with_panel(
            _series(
                "CSAT (satisfied share)",
                [
                    (_current("kpimon_csat_ratio", w), "{{segment}}"),
                    (f'{TARGET}{{kpi="csat", {w}}}', "target ({{direction}})"),
                ],
                unit="percentunit",
                description="Answers 4 or 5 / answers.",
            )
        )
        .with_panel(
            _series(
                "CSAT mean score",
                [(_current("kpimon_csat_score_mean", w), "{{segment}}")],
                description="Mean CSAT answer, 1..5.",
            )
        )
        .with_panel(
            _series(
                "CSAT against the same day last week",
                [
                    (
                        f'dimension_segment:kpimon_csat_ratio:delta7d{{{SEGMENT}, {w}, day="current"}}',
                        "{{segment}}",
                    )
                ],
                unit="percentunit",
                threshold=-sat.csat_max_drop_week_over_week,
                description="CSAT minus CSAT of the same day last week (ratio points).",
            )
        )
        .with_panel(
            _shift_share(
                "kpimon_csat_ratio",
                w,
                "KpimonCsatDroppedWeekOverWeek",
                unit="percentunit",
                decimals=2,
            )
        )
        .with_panel(
            _series(
                "CSAT by stage",
                [
                    (f'{kpi("kpimon_csat_ratio")}{{dimension="stage", {w}, day="current"}}', "{{segment}}"),
                    (f'{TARGET}{{kpi="csat", {w}}}', "target ({{direction}})"),
                ],
                unit="percentunit",
            )
        )
        .with_row(dashboard_builders.Row("Response rates"))
        .with_panel(
            _series(
                "Response rate",
                [(_current("kpimon_survey_response_ratio", w), "{{survey}} {{segment}}")],
                unit="percentunit",
                description="Answered / shown surveys in the window (dismissed ones count on neither side).",
            )
        )
        .with_panel(
            _series(
                "Surveys shown, answered, dismissed",
                [
                    (
                        _current("kpimon_survey_responses", w, 'bucket=~"shown|responses|dismissed"'),
                        "{{survey}} {{bucket}} {{segment}}",
                    )
                ],
            )
        )
        .with_row(dashboard_builders.Row("95 % intervals (one panel per selected segment)"))
        .with_panel(
            _band_series(
                "NPS with its 95 % interval: $segment",
                [Band("NPS", "nps", "kpimon_nps_score", current, "blue")],
                extra=[(f'{TARGET}{{kpi="nps", {w}}}', "target ({{direction}})")],
                description="The band is the 95 % interval of NPS. KpimonNpsBelowTarget needs all of it "
                "below the target (and enough answers); KpimonNpsDroppedWeekOverWeek a drop beyond both "
                "weeks' intervals. A wide band means few answers: a swing inside it can be chance.",
            )
        )
        .with_panel(
            _band_series(
                "CSAT with its 95 % interval: $segment",
                [Band("CSAT", "csat", "kpimon_csat_ratio", current, "green")],
                unit="percentunit",
                extra=[(f'{TARGET}{{kpi="csat", {w}}}', "target ({{direction}})")],
                description="The band is the 95 % (Wilson) interval of the satisfied share; the CSAT "
                "alerts use it like the NPS alerts use theirs.",
            )
        )
        .with_panel(
            _band_series(
                "Response rates with their 95 % intervals: $segment",
                [
                    Band(
                        f"{survey.upper()} response rate",
                        f"{survey}_response_rate",
                        "kpimon_survey_response_ratio",
                        current,
                        color,
                        f'survey="{survey}"',
                    )
                    for survey, color in (("nps", "purple"), ("csat", "orange"))
                ],
                unit="percentunit",
                description="Answered / shown surveys with 95 % (Wilson) intervals. A falling response rate "
                "means a more self-selected sample.",
            )
        )
        .with_row(dashboard_builders.Row("By engagement of the respondent"))
        .with_panel(
            _series(
                "NPS by engagement level",
                [(f'{kpi("kpimon_nps_score")}{{dimension="engagement", {w}, day="current"}}', "{{segment}}")],
                description="NPS of the answers in the window, by the respondent's active days in the 28 "
                "days up to the survey: none 0, light 1-4, regular 5-14, heavy 15-28.",
            )
        )
        .with_panel(
            _series(
                "CSAT by engagement level",
                [
                    (
                        f'{kpi("kpimon_csat_ratio")}{{dimension="engagement", {w}, day="current"}}',
                        "{{segment}}",
                    )
                ],
                unit="percentunit",
                description="CSAT by the respondent's active days in the 28 days up to the survey.",
            )
        )
        .with_panel(
            _series(
                "Answers by engagement level",
                [
                    (
                        f'{kpi("kpimon_survey_responses")}{{dimension="engagement", {w}, day="current", '
                        'bucket="responses"}',
                        "{{survey}} {{segment}}",
                    )
                ],
                description="Heavy users answer more often: the levels' samples differ in size.",
            )
        )
        .with_row(dashboard_builders.Row("By segment"))
        .with_panel(
            _bars(
                "NPS by segment of the dimension",
                [(f'{kpi("kpimon_nps_score")}{{dimension="$dimension", {w}, day="current"}}', "{{segment}}")],
                decimals=1,
            )
        )
        .with_panel(
            _bars(
                "CSAT by segment of the dimension",
                [
                    (
                        f'{kpi("kpimon_csat_ratio")}{{dimension="$dimension", {w}, day="current"}}',
                        "{{segment}}",
                    )
                ],
                unit="percentunit",
                decimals=1,
            )
        )
    )


def pipeline(config: MonitoringConfig) -> dashboard_builders.Dashboard:
    """Rates, dead letters by reason, lag, delay histogram, snapshot age, workers and their Kafka."""
    pipe = config.pipeline
    rate = f"rate{pipe.rate_window}"
    job = f'job="{config.job}"'
    topic = 'topic=~"$topic"'
    board = _dashboard(
        "kpimon-pipeline",
        "kpimon / Pipeline health",
        "Input rates and outcomes, dead letters, consumer lag, event delay and worker health.",
        "now-6h",
    )
    topics = (
        dashboard_builders.QueryVariable("topic")
        .label("Topic")
        .datasource(DATASOURCE)
        .query(f"label_values(topic:kpimon_events:{rate}, topic)")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    board = board.with_variable(_datasource_variable()).with_variable(topics)
    buckets = f"topic_le:kpimon_event_delay_seconds_bucket:{rate}{{{topic}}}"
    return (
        board.with_row(dashboard_builders.Row("Workers"))
        .with_panel(_stat("Workers up", [(f"sum({selector_up(job)})", "up")]))
        .with_panel(
            _stat(
                "Newest KPI snapshot age",
                [(f"time() - job:kpimon_last_snapshot_timestamp_seconds:max{{{job}}}", "age")],
                unit="s",
            ).thresholds(_thresholds((None, "green"), (float(pipe.snapshot_max_age_seconds), "red")))
        )
        .with_panel(
            _stat(
                "Input messages / s",
                [(f"sum(topic:kpimon_events:{rate}{{{topic}}})", "all")],
                unit="ops",
                decimals=1,
            )
        )
        .with_panel(
            _stat(
                "Dead-letter share",
                [(f"max(topic:kpimon_dead_letters:ratio_{rate}{{{topic}}})", "max")],
                unit="percentunit",
                decimals=2,
            )
        )
        .with_panel(_series("Scrape status by worker", [(selector_up(job), "{{instance}}")]))
        .with_panel(
            _series(
                "Kafka reachable by worker",
                [(f"kpimon_kafka_reachable{{{job}}}", "{{instance}}")],
                description="1 while a Kafka broker answers the worker's probe (every 5 s), 0 during an "
                f"outage; KpimonKafkaUnreachable pages once it stays 0 for {pipe.for_kafka_unreachable}.",
            )
        )
        .with_row(dashboard_builders.Row("Input"))
        .with_panel(
            _series(
                "Messages by topic and outcome",
                [(f"topic_outcome:kpimon_events:{rate}{{{topic}}}", "{{topic}} {{outcome}}")],
                unit="ops",
                description="accepted, rejected (dead-lettered) and duplicate messages per second.",
            )
        )
        .with_panel(
            _series(
                "Dead letters by reason",
                [(f"topic_reason:kpimon_dead_letters:{rate}{{{topic}}}", "{{topic}} {{reason}}")],
                unit="ops",
                stacking=common.StackingMode.NORMAL,
            )
        )
        .with_panel(
            _series(
                "Dead-letter share by topic",
                [(f"topic:kpimon_dead_letters:ratio_{rate}{{{topic}}}", "{{topic}}")],
                unit="percentunit",
                threshold=pipe.dead_letter_max_ratio,
                description="Dead-lettered / all messages of the topic; the dashed line is the alert "
                "threshold.",
            )
        )
        .with_row(dashboard_builders.Row("Lag and delay"))
        .with_panel(
            _series(
                "Consumer lag by topic",
                [(f"topic:kpimon_consumer_lag_messages:sum{{{topic}}}", "{{topic}}")],
                threshold=float(pipe.lag_min_messages),
            )
        )
        .with_panel(
            _series(
                "Consumer lag by partition",
                [(f"topic_partition:kpimon_consumer_lag_messages:max{{{topic}}}", "{{topic}}/{{partition}}")],
            )
        )
        .with_panel(_delay_heatmap(f"sum by (le) ({buckets})"))
        .with_panel(
            _series(
                "Event delay quantiles",
                [
                    (
                        f"histogram_quantile({q}, sum by (topic, le) ({buckets}))",
                        f"p{round(q * 100)} {{{{topic}}}}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                unit="s",
                description="Processing time minus event time of accepted events.",
            )
        )
    )


def selector_up(job: str) -> str:
    """`up` of the workers."""
    return f"up{{{job}}}"


def _delay_heatmap(expr: str) -> heatmap.Panel:
    """The event delay histogram: one cell per bucket and time step."""
    panel = (
        heatmap.Panel()
        .title("Event delay histogram")
        .description("Accepted events per second by delay bucket (processing time minus event time).")
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .calculate(False)
        .unit("s")
    )
    query = (
        prometheus_builders.Dataquery()
        .expr(expr)
        .legend_format("{{le}}")
        .format(prometheus.PromQueryFormat.HEATMAP)
        .ref_id("A")
    )
    return panel.with_target(query)


def dashboards(config: MonitoringConfig) -> dict[str, dict[str, object]]:
    """File name under grafana/dashboards/ -> dashboard JSON document (panel ids numbered in order)."""
    out: dict[str, dict[str, object]] = {}
    for build in (engagement, satisfaction, pipeline):
        document: dict[str, object] = json.loads(json.dumps(build(config).build(), cls=JSONEncoder))
        panels = document.get("panels")
        assert isinstance(panels, list)
        for number, panel in enumerate(panels, start=1):
            panel["id"] = number
        out[f"{document['uid']}.json"] = document
    return out


def _walk_panels(document: dict[str, object]) -> Iterator[dict[str, object]]:
    panels = document.get("panels")
    for panel in panels if isinstance(panels, list) else []:
        yield panel
        yield from _walk_panels(panel)  # panels of collapsed rows


def panel_queries(config: MonitoringConfig) -> list[PanelQuery]:
    """Every panel query of every dashboard: (dashboard uid, panel title, PromQL with Grafana variables)."""
    out: list[PanelQuery] = []
    for document in dashboards(config).values():
        for panel in _walk_panels(document):
            for target in panel.get("targets") or []:  # type: ignore[attr-defined]
                out.append(PanelQuery(str(document["uid"]), str(panel["title"]), str(target["expr"])))
    return out


@dataclass(frozen=True)
class DrawnBand:
    """A band as the generated JSON draws it: the panel, the upper series filled down to the lower one,
    and every target of the panel as legend -> PromQL."""

    dashboard: str
    panel: dict[str, object]
    high: str  # display name of the series with `custom.fillBelowTo`
    low: str  # the display name it fills to
    targets: dict[str, str]


def bands(config: MonitoringConfig) -> list[DrawnBand]:
    """Every `fillBelowTo` override of every dashboard, read back from the generated JSON."""
    out: list[DrawnBand] = []
    for document in dashboards(config).values():
        for panel in _walk_panels(document):
            field_config = panel.get("fieldConfig")
            overrides = field_config.get("overrides", []) if isinstance(field_config, dict) else []
            targets = {str(t["legendFormat"]): str(t["expr"]) for t in panel.get("targets") or []}  # type: ignore[attr-defined]
            for override in overrides:
                for prop in override.get("properties", []):
                    if prop.get("id") == "custom.fillBelowTo":
                        high = str(override["matcher"]["options"])
                        out.append(DrawnBand(str(document["uid"]), panel, high, str(prop["value"]), targets))
    return out


def variable_queries(config: MonitoringConfig) -> list[PanelQuery]:
    """Every query variable (`label_values(...)`), for the check that it names exported series."""
    out: list[PanelQuery] = []
    for document in dashboards(config).values():
        templating = document.get("templating")
        variables = templating.get("list", []) if isinstance(templating, dict) else []
        for variable in variables:
            if variable.get("type") == "query":
                out.append(PanelQuery(str(document["uid"]), f"${variable['name']}", str(variable["query"])))
    return out
