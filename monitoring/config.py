"""The one monitoring config: thresholds, `for` durations, selectors and names.

Alerts, recording rules, dashboards and Grafana alerting are all generated from a `MonitoringConfig`, so a
threshold changes in one place (`DEFAULT` below, then `make generate`). KPI *targets* are not here: the
workers publish them as `kpimon_kpi_target{kpi,direction,window,...}` (deploy/targets.example.toml), and
the alert rules compare each KPI against that series.

Durations are Prometheus duration strings ("90s", "15m", "1h"); they are used verbatim in rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChurnAlerts:
    """Churn: the rate above its target, or up week over week."""

    window: str = "30d"
    #: Ratio points: 0.02 alerts when the churn rate is more than 2 percentage points above last week's.
    max_rise_week_over_week: float = 0.02
    #: Below this many users in the churn base the rate is too noisy to alert on.
    min_base_users: int = 100
    for_above_target: str = "1h"
    for_rise: str = "1h"
    #: Hysteresis of both churn alerts (Prometheus' `keep_firing_for`), one week: the week-over-week rise
    #: compares with 7 days ago, so a rise that dips under its limit and returns within the week is the same
    #: rise, not a new ticket (the alert back-test, docs/alerts.md: the 30-day churn filling up after a
    #: deployment opened 3-5 tickets in days 37-57, now 1). It delays the resolution only, never the opening.
    keep_firing_for: str = "7d"


@dataclass(frozen=True)
class RetentionAlerts:
    """Retention of the newest cohort measured on a whole day (the newest matured cohort's seventh day is
    today) below its target; detractors churning more than promoters."""

    #: The retention offset alerted on (the window of kpimon_retention_ratio): D7.
    window: str = "7d"
    #: Cohorts of fewer new users are not alerted on (a handful of signups is noise).
    min_cohort_users: int = 30
    for_below_target: str = "1h"
    #: Churn window of the detractor / promoter comparison (dimension nps_group).
    nps_churn_window: str = "30d"
    #: Detractors and promoters each need at least this many users in their churn base.
    nps_churn_min_base_users: int = 30
    for_detractor_churn: str = "6h"


@dataclass(frozen=True)
class SatisfactionAlerts:
    """NPS and CSAT: below target, falling week over week, and diverging from each other."""

    window: str = "7d"
    #: NPS points: 10 alerts when NPS is more than 10 points below the same day last week.
    nps_max_drop_week_over_week: float = 10.0
    #: Ratio points: 0.05 alerts when CSAT is more than 5 percentage points below the same day last week.
    csat_max_drop_week_over_week: float = 0.05
    #: Fewer answers than this in the window and the score is not alerted on (a small sample is noise).
    min_responses: int = 30
    for_below_target: str = "1h"
    for_drop: str = "1h"
    for_divergence: str = "3h"
    #: Hysteresis of the below-target and week-over-week alerts (Prometheus' `keep_firing_for`): once
    #: firing, an alert stays firing this long after its condition last held, so a 7-day KPI whose interval
    #: touches its target for a few days does not resolve and open a new ticket. One window (7 days): a
    #: recovery counts once a whole window of answers no longer shows the problem (the alert back-test,
    #: docs/alerts.md: 13 NPS/CSAT tickets in 90 days without a change with 2 days, 9 with 7, at hourly
    #: snapshots). It delays the resolution only, never the opening.
    keep_firing_for: str = "7d"


@dataclass(frozen=True)
class EngagementAlerts:
    """DAU against the same time of the same weekday (median of 4 weeks); stickiness against its target."""

    #: 0.2 alerts when DAU is more than 20 % below the median of the same time of the same weekday in the
    #: previous 4 weeks.
    dau_max_drop_ratio: float = 0.2
    #: That median must be at least this for the drop to count (early in the day both numbers are small
    #: and a drop of a few users is a large percentage).
    dau_min_users: int = 100
    #: Stickiness (DAU/MAU) is alerted on only when MAU is at least this.
    stickiness_min_mau: int = 100
    for_dau_drop: str = "30m"
    for_stickiness: str = "1h"


@dataclass(frozen=True)
class PipelineAlerts:
    """Health of the workers and their input."""

    #: No input message at all (any topic, any outcome) for this long ...
    no_events_window: str = "10m"
    #: ... where the same window a week ago held at least this many messages: a quiet hour (a small product
    #: at night) has silent 10-minute spells that are no outage (the alert back-test, docs/alerts.md). With
    #: no data a week ago (a new deployment, its first week) it does not fire: silence alone never pages.
    no_events_min_last_week: int = 60
    #: Share of input messages dead-lettered, per topic, over `rate_window`.
    dead_letter_max_ratio: float = 0.01
    rate_window: str = "5m"
    for_dead_letters: str = "10m"
    #: Consumer lag (messages, summed over partitions) growing over this window ...
    lag_growth_window: str = "15m"
    #: ... and above this many messages (a small lag going up and down is normal).
    lag_min_messages: int = 1000
    for_lag: str = "15m"
    #: Newest KPI snapshot of any worker older than this many seconds.
    snapshot_max_age_seconds: int = 120
    for_snapshot: str = "1m"
    for_worker_down: str = "2m"
    #: A worker reaching no Kafka broker (kpimon_kafka_reachable 0) this long pages: longer than a broker
    #: restart, shorter than what the input can wait before the lag matters.
    for_kafka_unreachable: str = "3m"


@dataclass(frozen=True)
class AlertRouting:
    """Alertmanager's timing (deploy/alertmanager/alertmanager.yml, monitoring/alertmanager.py)."""

    #: Wait this long for more alerts of a new group before the first notification ...
    group_wait: str = "30s"
    #: ... but a page goes out sooner.
    page_group_wait: str = "10s"
    #: A group that changed (an alert added or resolved) is notified again after this.
    group_interval: str = "5m"
    #: An unchanged, still firing group is notified again after: a page, a ticket, an info.
    page_repeat: str = "1h"
    ticket_repeat: str = "24h"
    info_repeat: str = "168h"


@dataclass(frozen=True)
class MonitoringConfig:
    """Everything the generated monitoring files depend on."""

    #: Prometheus job of the workers; every rule selects `job="<job>"`.
    job: str = "kpimon"
    #: Worker /metrics endpoints (host:web_port) in the generated prometheus.yml.
    worker_targets: tuple[str, ...] = ("127.0.0.1:6066",)
    scrape_interval: str = "15s"
    evaluation_interval: str = "1m"
    #: Extra matchers of the KPI alerts: by default only the whole population (`dimension="all"`);
    #: e.g. 'dimension=~"all|plan"' also alerts per plan. Dashboards show every segment regardless.
    kpi_alert_selector: str = 'dimension="all"'
    #: Where docs/runbooks/ is served; runbook_url = f"{runbook_base_url}/{alertname}.md". The default is
    #: the path in this repository; a deployment sets the URL its people can open (e.g. the repository's
    #: web view of docs/runbooks).
    runbook_base_url: str = "docs/runbooks"
    #: Grafana's address as people open it; dashboard_url = f"{grafana_url}/d/{dashboard uid}?...".
    grafana_url: str = "http://localhost:3000"
    #: The `team` label of the alerts of each rule group: Alertmanager routes on it (deploy/alertmanager/).
    teams: tuple[tuple[str, str], ...] = (
        ("kpimon-engagement", "product-analytics"),
        ("kpimon-satisfaction", "product-analytics"),
        ("kpimon-pipeline", "data-platform"),
    )
    #: Alertmanager (host:port) that Prometheus sends alerts to.
    alertmanager_targets: tuple[str, ...] = ("127.0.0.1:9093",)
    #: Base URL of the notification webhooks; each receiver posts to f"{alert_webhook_url}/{receiver}"
    #: (monitoring/alertmanager.py). A stand-in: replace the receivers by your pager, ticket and chat ones.
    alert_webhook_url: str = "http://127.0.0.1:9095/alerts"
    routing: AlertRouting = field(default_factory=AlertRouting)
    churn: ChurnAlerts = field(default_factory=ChurnAlerts)
    retention: RetentionAlerts = field(default_factory=RetentionAlerts)
    satisfaction: SatisfactionAlerts = field(default_factory=SatisfactionAlerts)
    engagement: EngagementAlerts = field(default_factory=EngagementAlerts)
    pipeline: PipelineAlerts = field(default_factory=PipelineAlerts)
    #: Grafana: the provisioned Prometheus data source and where the dashboards are mounted.
    datasource_uid: str = "kpimon-prometheus"
    datasource_name: str = "Prometheus (kpimon)"
    prometheus_url: str = "http://localhost:9090"
    grafana_folder: str = "kpimon"
    grafana_dashboards_path: str = "/var/lib/grafana/dashboards/kpimon"

    def runbook_url(self, alert: str) -> str:
        """The runbook of an alert: docs/runbooks/<alert>.md under `runbook_base_url`."""
        return f"{self.runbook_base_url}/{alert}.md"

    def team(self, group: str) -> str:
        """The team owning the alerts of a rule group (`teams`; an unlisted group: the KPI team)."""
        return dict(self.teams).get(group, self.teams[0][1])


DEFAULT = MonitoringConfig()
