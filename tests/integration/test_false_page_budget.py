"""The false-page budget (issue #18): the generated alert rules back-tested on a simulated history.

One history (monitoring/backtest.py, `budget_config`): `NO_CHANGE_DAYS` (90) days with no true change, then
three true changes on the whole population, one after the other: an NPS drop, a DAU drop, and a churn wave
of the team plan (`CHANGES`). The worker's own KPI math turns it into the series the exporter would have
exposed, a real Prometheus evaluates the rule files of deploy/prometheus/rules/ over it, and `for:` is
applied as Prometheus applies it.

Asserted, and printed (docs/alerts.md, "The false-page budget"):
- no change: the page-severity (`critical`) alerts together open at most `PAGE_BUDGET` (1) episode per 30
  days, on at least 20 segments;
- each change: each of its required alerts opens on all/all within its stated bound of the change's start;
- no change: the ticket-level (`warning`) KPI alerts, what product people get, stay within the rate measured
  on this history (a rule made noisier fails), printed beside their budget of one a fortnight.

The test's history is the full measurement's (`make alert-budget`) at a coarser KPI step (6 hours instead of
1): the figures it measures are docs/alerts.md's "test" column; the step changes when a KPI condition is
seen, not the traffic.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.backtest import (
    CHANGES,
    NO_CHANGE_DAYS,
    Budget,
    Change,
    Result,
    budget_config,
    budget_report,
    measure,
    run,
    summary,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

#: A history of 3000 users (about 600 a day): the default of `kpimon simulate` and of `make alert-budget`.
USERS, SEED = 3000, 1
END_DAY = 20_786  # 2026-11-29
#: KPI snapshots every 6 hours (`make alert-budget`: every hour): intraday values, at a test's cost.
KPI_STEP = 6 * 3600
#: Ticket-level KPI episodes per 30 days without a change, at most: the rate measured on this history
#: (docs/alerts.md), above the budget of 2 (`TICKET_BUDGET`): NPS and CSAT of the whole population sit
#: near their example targets.
MAX_KPI_TICKETS_PER_30_DAYS = 11.4


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Result:
    """The back-test of the history, once for the module."""
    config = budget_config(users=USERS, seed=SEED, end_day=END_DAY)
    work: Path = tmp_path_factory.mktemp("backtest")
    outcome = run(config, work, kpi_step=KPI_STEP, log=print)
    print(summary(outcome))
    print(f"timings: { {k: round(v) for k, v in outcome.timings.items()} } s")
    return outcome


@pytest.fixture(scope="module")
def budget(result: Result) -> Budget:
    """The budget's figures of the history."""
    figures = measure(result, END_DAY)
    print(budget_report(figures))
    return figures


def test_the_history_has_at_least_20_segments(result: Result) -> None:
    print(f"segments: {sorted(result.replay.segments)}")
    assert len(result.replay.segments) >= 20


def test_page_alerts_open_at_most_one_episode_per_30_days_without_a_change(budget: Budget) -> None:
    rate = budget.rate(budget.pages)
    print(f"no change, {NO_CHANGE_DAYS} days: {len(budget.pages)} page episodes, {rate:.2f} per 30 days")
    for episode in budget.pages:
        print(f"  {episode}")
    assert rate <= 1.0


def test_ticket_level_kpi_alerts_stay_within_the_measured_rate_without_a_change(budget: Budget) -> None:
    rate = budget.rate(budget.tickets)
    print(f"no change: {len(budget.tickets)} ticket-level KPI episodes, {rate:.2f} per 30 days")
    assert rate <= MAX_KPI_TICKETS_PER_30_DAYS


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.scenario)
def test_a_true_change_opens_its_alerts_in_time(budget: Budget, change: Change) -> None:
    opened = budget.detection[change.scenario]
    for alert, bound in change.bounds.items():
        took = opened[alert]
        shown = "never" if took is None else f"{took / 3600:.1f} h"
        limit = "not required" if bound is None else f"bound {bound / 3600:g} h"
        print(f"{change.scenario}: {alert} opened after {shown} ({limit})")
    for alert, bound in change.bounds.items():
        took = opened[alert]
        if bound is not None:
            assert took is not None, f"{change.scenario}: {alert} never opened"
            assert took <= bound, f"{change.scenario}: {alert} opened after {took / 3600:.1f} h"
