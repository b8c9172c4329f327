"""deploy/alertmanager/alertmanager.yml: who gets which kpimon alert, grouped how, how often, and when not.

Routing reads two labels every alert carries (monitoring/rules.py): `team` (the rule group's owner,
`MonitoringConfig.teams`) and `severity`. Each team has three receivers, one per severity:

- `<team>-page` for `critical`: someone is woken up (short group_wait, repeated every `page_repeat`);
- `<team>-ticket` for `warning`: a ticket for the next working day (repeated daily while it fires);
- `<team>-info` for `info`: a channel read in the weekly review (repeated weekly).

Notifications are grouped by alert and segment (`alertname`, `dimension`, `segment`): one notification says
one thing about one segment, and a flapping segment does not hold back the others. Pipeline alerts have no
segment, so they group by alert.

Inhibitions: while a pipeline alert says there is no data (`KpimonNoEvents`), the KPIs are frozen
(`KpimonSnapshotStale`), a worker is down (`KpimonWorkerDown`, its KPI groups missing until the rebalance
ends) or reaches no Kafka broker (`KpimonKafkaUnreachable`), the KPI alerts are held back: their values
describe the pipeline, not the users. A KPI alert carries no `job` or `instance` (the recording rules drop
them), so the inhibition matches any KPI alert: run one Alertmanager (or one `team` naming) per kpimon
deployment.

The receivers are webhooks to `MonitoringConfig.alert_webhook_url/<receiver>`: placeholders for the
organisation's pager, ticket and chat integrations, marked `PLACEHOLDER` in the generated file
(`alertmanager_yaml`) and in docs/alerts.md ("Replace the placeholder receivers"). Replace them
(pagerduty_configs, email_configs, slack_configs, ...) keeping the receiver names, and the routing stays as
tested.
"""

from __future__ import annotations

from monitoring.config import MonitoringConfig
from monitoring.render import to_yaml
from monitoring.rules import Alert, alert_groups

#: severity -> receiver suffix.
RECEIVER_KINDS = {"critical": "page", "warning": "ticket", "info": "info"}
#: Pipeline alerts that make the KPI alerts meaningless while they fire.
PIPELINE_OUTAGE_ALERTS = (
    "KpimonNoEvents",
    "KpimonSnapshotStale",
    "KpimonWorkerDown",
    "KpimonKafkaUnreachable",
)
#: What each kind of receiver should become: the comment above each placeholder receiver.
REPLACE_BY = {
    "page": "a pager that wakes someone (pagerduty_configs, opsgenie_configs, ...)",
    "ticket": "a ticket queue read the next working day (webhook_configs to its API, email_configs, ...)",
    "info": "a chat channel read in the weekly review (slack_configs, msteams_configs, ...)",
}
PLACEHOLDER = "PLACEHOLDER"
#: Notification grouping: one alert, one segment.
GROUP_BY = ("alertname", "dimension", "segment")


def teams(config: MonitoringConfig) -> list[str]:
    """Every team owning a rule group, in the config's order, once."""
    return list(dict.fromkeys(team for _, team in config.teams))


def receiver(team: str, severity: str) -> str:
    """The receiver of a team's alerts of one severity."""
    return f"{team}-{RECEIVER_KINDS[severity]}"


def kpi_alert_names(config: MonitoringConfig) -> list[str]:
    """The KPI alerts: every alert outside the pipeline group."""
    return [
        rule.name
        for group in alert_groups(config)
        if group.name != "kpimon-pipeline"
        for rule in group.rules
        if isinstance(rule, Alert)
    ]


def alertmanager_config(config: MonitoringConfig) -> dict[str, object]:
    """The Alertmanager configuration for `config`'s teams, intervals and webhook."""
    routing = config.routing
    per_severity = {
        "critical": {"group_wait": routing.page_group_wait, "repeat_interval": routing.page_repeat},
        "warning": {"repeat_interval": routing.ticket_repeat},
        "info": {"repeat_interval": routing.info_repeat},
    }
    routes = [
        {
            "matchers": [f'team="{team}"'],
            "receiver": receiver(team, "warning"),
            "routes": [
                {"matchers": [f'severity="{severity}"'], "receiver": receiver(team, severity), **timing}
                for severity, timing in per_severity.items()
            ],
        }
        for team in teams(config)
    ]
    names = [receiver(team, severity) for team in teams(config) for severity in RECEIVER_KINDS]
    return {
        "route": {
            # An alert of no known team (a rule added without a group in `teams`) still reaches a person.
            "receiver": receiver(teams(config)[0], "warning"),
            "group_by": list(GROUP_BY),
            "group_wait": routing.group_wait,
            "group_interval": routing.group_interval,
            "repeat_interval": routing.ticket_repeat,
            "routes": routes,
        },
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname=~"{"|".join(PIPELINE_OUTAGE_ALERTS)}"'],
                "target_matchers": [f'alertname=~"{"|".join(kpi_alert_names(config))}"'],
            }
        ],
        "receivers": [
            {
                "name": name,
                "webhook_configs": [
                    {"url": f"{config.alert_webhook_url}/{name}", "send_resolved": True, "max_alerts": 0}
                ],
            }
            for name in names
        ],
    }


def alertmanager_yaml(config: MonitoringConfig, header: str = "") -> str:
    """The configuration as YAML text, each receiver preceded by a comment that marks it as a placeholder and
    says what to replace it with (the webhook URL leads nowhere outside the end-to-end test)."""
    text = to_yaml(alertmanager_config(config), header)
    names = {
        receiver(team, severity): kind for team in teams(config) for severity, kind in RECEIVER_KINDS.items()
    }
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if line == "receivers:\n":
            out.append(
                f"# {PLACEHOLDER} receivers: webhooks to {config.alert_webhook_url}/<receiver>, stand-ins."
                " Replace each by\n# your integration, keeping its name (the routes above name it);"
                ' docs/alerts.md, "Replace the placeholder receivers".\n'
            )
        name = line.removeprefix("  - name: ").rstrip("\n")
        if line.startswith("  - name: ") and name in names:
            out.append(f"  # {PLACEHOLDER}: replace by {REPLACE_BY[names[name]]}.\n")
        out.append(line)
    return "".join(out)
