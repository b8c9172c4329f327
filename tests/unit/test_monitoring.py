"""Monitoring as code: the generated Prometheus rules and config, the promtool unit tests, the dashboards.

promtool comes from Debian's `prometheus` package (`make system-deps` installs it); without it these tests
fail rather than skip, so a machine that cannot check the rules never looks green.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from kpimon.agents.app import create_app
from kpimon.agents.config.settings import Settings
from kpimon.agents.exporter.kpi_collector import COHORT, KPI_METRICS
from monitoring import grafana
from monitoring.config import DEFAULT, MonitoringConfig, PipelineAlerts
from monitoring.dashboards import PanelQuery, bands, dashboards, panel_queries, variable_queries
from monitoring.generate import GENERATED_DIRS, PROMETHEUS_DIR, RULES_DIR, generated_files
from monitoring.promql import metric_names, substitute_variables
from monitoring.render import to_yaml
from monitoring.rules import (
    KPI_GAUGES,
    RecordingRule,
    alert_groups,
    alerts,
    kpi,
    prometheus_rule_files,
    prometheus_values,
    recording_rules,
)
from monitoring.shiftshare import panel_title
from scripts.generate import ROOT

TESTS_DIR = ROOT / PROMETHEUS_DIR / "tests"
RULE_TESTS = sorted(TESTS_DIR.glob("*.yaml"))

#: Metrics the rules and dashboards use that a colleague is adding right now (name -> where it will live).
#: Once exported, the name is found in the code and this entry is merely redundant.
PENDING_METRICS = {"kpimon_consumer_lag_messages": "consumer lag gauge per topic/partition (agents/)"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """Path of promtool, or a failure that says how to get it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `make system-deps` (installs Debian's prometheus package)")
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=300)


def exported_families(tmp_path: Path) -> set[str]:
    """Every metric a worker exports, as docs/metrics.md names it (counters with _total)."""
    registry = CollectorRegistry()
    create_app(Settings(data_dir=tmp_path), registry)
    return {f"{f.name}_total" if f.type == "counter" else f.name for f in registry.collect()}


def exported_metrics(tmp_path: Path) -> set[str]:
    """Every sample name a worker exports (counters with _total, histograms with their series).

    Read from the registry of a real worker app (built, not started): its pipeline metrics, the snapshot
    timestamp, and the KPI and lag collectors, whose families exist even while they have no samples.
    """
    registry = CollectorRegistry()
    create_app(Settings(data_dir=tmp_path), registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def all_expressions(config: MonitoringConfig = DEFAULT) -> list[tuple[str, str]]:
    """(where, PromQL) of every rule, Grafana alert query, dashboard panel and variable."""
    out = [
        (f"record {r.record}", r.expr)
        for g in recording_rules(config)
        for r in g.rules
        if isinstance(r, RecordingRule)
    ]
    out += [(f"alert {a.name}", a.expr) for a in alerts(config)]
    out += [(f"grafana alert {title}", expr) for title, expr in grafana_alert_queries(config)]
    out += [(f"{q.dashboard} / {q.panel}", q.expr) for q in panel_queries(config) + variable_queries(config)]
    return out


# --- promtool -------------------------------------------------------------------------------------------


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    files = sorted(str(p) for p in (ROOT / RULES_DIR).glob("*.yaml"))
    assert files
    result = run(promtool, "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml", cwd=ROOT / PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


#: Seconds all rule-test files together may take (they run side by side). The slowest took 3 minutes alone
#: at load 7 on 2 cores before the 4-week tests moved to hourly steps; the bound is for a far busier machine.
RULE_TESTS_TIMEOUT = 1200


@pytest.fixture(scope="module")
def rule_test_runs(promtool: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """`promtool test rules` of every file of RULE_TESTS, all started at once: file name -> its run.

    promtool evaluates every rule at every step up to a test's last eval_time, one test after the other:
    a file of week-long tests is minutes of CPU on a busy machine. The files are independent, so they run
    side by side and the module waits for the slowest one, not for the sum (393 s in series at load 6-8).
    """
    procs = {
        path.name: subprocess.Popen(
            [promtool, "test", "rules", path.name],
            cwd=TESTS_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in RULE_TESTS
    }
    deadline = time.monotonic() + RULE_TESTS_TIMEOUT
    runs: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            runs[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():  # after a timeout: none left running
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return runs


@pytest.mark.timeout(RULE_TESTS_TIMEOUT + 60)
@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(
    rule_test_runs: dict[str, subprocess.CompletedProcess[str]], test_file: Path
) -> None:
    result = rule_test_runs[test_file.name]
    assert result.returncode == 0, result.stdout + result.stderr


def _rule_tests() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULE_TESTS:
        groups.extend(yaml.safe_load(path.read_text())["tests"])
    return groups


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in _rule_tests():
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a.name for a in alerts(DEFAULT)}
    assert names - firing == set(), "alerts without a test where they fire"
    assert names - quiet == set(), "alerts without a test where they stay quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_recording_rule_is_tested() -> None:
    """Directly (promql_expr_test) or through an alert that a test sees firing."""
    tested: set[str] = set()
    exprs = {a.name: a.expr for a in alerts(DEFAULT)}
    for group in _rule_tests():
        for case in group.get("promql_expr_test", []):
            tested |= metric_names(case["expr"])
        for case in group.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                tested |= metric_names(exprs[case["alertname"]])
    recorded = {r.record for g in recording_rules(DEFAULT) for r in g.rules if isinstance(r, RecordingRule)}
    # A rule used only by another rule counts through it (e.g. the rate behind the dead-letter ratio).
    by_name = {
        r.record: r.expr for g in recording_rules(DEFAULT) for r in g.rules if isinstance(r, RecordingRule)
    }
    for name in list(tested):
        tested |= metric_names(by_name.get(name, ""))
    assert recorded - tested == set()


def grafana_alert_queries(config: MonitoringConfig = DEFAULT) -> list[tuple[str, str]]:
    """(rule title, PromQL) of every Prometheus query of the Grafana alert rules."""
    groups = grafana.alert_rules(config)["groups"]
    assert isinstance(groups, list)
    return [
        (rule["title"], query["model"]["expr"])
        for group in groups
        for rule in group["rules"]
        for query in rule["data"]
        if query["datasourceUid"] == config.datasource_uid
    ]


def test_dashboard_and_grafana_alert_expressions_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every panel query (variables filled in) and every Grafana alert query must parse: promtool checks
    them as recording rules."""
    queries = panel_queries(DEFAULT) + [
        PanelQuery("grafana-alerting", t, e) for t, e in grafana_alert_queries()
    ]
    assert len(queries) > 50
    document = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"kpimon_check:panel_{i}:expr", "expr": substitute_variables(q.expr)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboards.yaml"
    path.write_text(to_yaml(document))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    for query in queries:
        assert "$" not in substitute_variables(query.expr), query


def test_the_promql_check_catches_a_bad_expression(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        to_yaml({"groups": [{"name": "g", "rules": [{"record": "a:b:c", "expr": "sum(rate(x[5m])"}]}]})
    )
    assert run(promtool, "check", "rules", str(path)).returncode != 0


# --- metrics ----------------------------------------------------------------------------------------------


def test_metric_names_ignores_labels_functions_and_strings() -> None:
    expr = (
        'sum by (topic) (rate(kpimon_events_total{job="kpimon", kpi="kpimon_fake"}[5m]))'
        " / topic:kpimon_events:rate5m and on (window) up"
    )
    assert metric_names(expr) == {"kpimon_events_total", "topic:kpimon_events:rate5m", "up"}


def test_every_metric_used_is_exported_or_recorded(tmp_path: Path) -> None:
    exported = exported_metrics(tmp_path)
    assert {"kpimon_active_users", "kpimon_events_total", "kpimon_event_delay_seconds_bucket"} <= exported
    assert {"kpimon_last_snapshot_timestamp_seconds", "kpimon_consumer_lag_messages"} <= exported
    recorded = {r.record for g in recording_rules(DEFAULT) for r in g.rules if isinstance(r, RecordingRule)}
    known = exported | recorded | set(PENDING_METRICS) | {"up"}
    unknown = {(where, name) for where, expr in all_expressions() for name in metric_names(expr) - known}
    assert unknown == set()


def test_every_exported_metric_is_documented_and_every_documented_one_exported(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `((?:kpimon|process|python)_\w+)`", text, flags=re.MULTILINE))
    exported = exported_families(tmp_path)
    assert {"kpimon_build_info", "kpimon_rebalances_total", "process_cpu_seconds_total"} <= exported
    assert exported - documented == set(), "exported but not in docs/metrics.md"
    assert documented - exported == set(), "in docs/metrics.md but not exported"


def test_every_recorded_series_is_used() -> None:
    recorded = {r.record for g in recording_rules(DEFAULT) for r in g.rules if isinstance(r, RecordingRule)}
    used = {name for _, expr in all_expressions() for name in metric_names(expr)}
    # ... or by the queries of an annotation template (the `drivers` annotation reads the shares).
    templates = [t for a in alerts(DEFAULT) for t in prometheus_values(a).values()]
    used |= {name for t in templates for query in re.findall(r"`([^`]*)`", t) for name in metric_names(query)}
    assert recorded - used == set()


# --- alerts -----------------------------------------------------------------------------------------------


def test_alerts_follow_the_conventions() -> None:
    for alert in alerts(DEFAULT):
        assert re.fullmatch(r"Kpimon[A-Z][A-Za-z]+", alert.name), alert.name
        assert alert.severity in ("critical", "warning", "info")
        assert alert.summary and "{value}" in alert.description, alert.name
        assert ("{target}" in alert.description) == bool(alert.target_query), alert.name
    names = [a.name for a in alerts(DEFAULT)]
    assert len(names) == len(set(names))


#: The sections every runbook has, in this order (docs/runbooks/README.md says what goes in each).
RUNBOOK_SECTIONS = (
    "What it means",
    "Confirm it on the dashboards",
    "First three things to check",
    "When it is not a problem",
)


def runbook_path(url: str) -> Path:
    """The file in this repository a (default, repository-relative) runbook_url points to."""
    return ROOT / url


def test_every_alert_has_its_runbook() -> None:
    """Every generated alert (Prometheus and Grafana) links a runbook file that exists and is complete."""
    document = yaml.safe_load(generated_files(DEFAULT)[RULES_DIR / "kpimon-alerts.yaml"])
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == {a.name for a in alerts(DEFAULT)}
    for rule in rules:
        name, url = rule["alert"], rule["annotations"]["runbook_url"]
        assert url == f"docs/runbooks/{name}.md", name
        path = runbook_path(url)
        assert path.is_file(), f"{name} has no runbook: {url} does not exist"
        text = path.read_text()
        assert text.startswith(f"# {name}\n"), f"{url} is not titled {name}"
        headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
        assert [h for h in headings if h in RUNBOOK_SECTIONS] == list(RUNBOOK_SECTIONS), (url, headings)
        checks = text.split("## First three things to check", 1)[1].split("\n## ", 1)[0]
        assert re.findall(r"^(\d)\. ", checks, flags=re.MULTILINE) == ["1", "2", "3"], f"{url}: three checks"
        assert f"`{rule['labels']['severity']}`" in text.split("\n## ", 1)[0], f"{url}: severity in the intro"
    grafana_rules = [r for g in grafana.alert_rules(DEFAULT)["groups"] for r in g["rules"]]  # type: ignore[attr-defined]
    for grafana_rule in grafana_rules:
        assert runbook_path(grafana_rule["annotations"]["runbook_url"]).is_file(), grafana_rule["title"]


def test_no_runbook_without_its_alert() -> None:
    """A runbook of an alert that no longer exists is stale (renamed or removed alert)."""
    runbooks = {p.stem for p in (ROOT / "docs" / "runbooks").glob("Kpimon*.md")}
    assert runbooks == {a.name for a in alerts(DEFAULT)}


def test_a_missing_runbook_fails_the_check(tmp_path: Path) -> None:
    """The check above cannot pass vacuously: a config pointing at an empty directory finds no runbook."""
    config = MonitoringConfig(runbook_base_url=str(tmp_path))
    missing = [a.name for a in alerts(config) if not Path(config.runbook_url(a.name)).is_file()]
    assert missing == [a.name for a in alerts(config)]


def test_kpi_alerts_compare_against_the_published_target() -> None:
    for alert in alerts(DEFAULT):
        if alert.target_query:
            assert "group_left kpi_window:kpimon_kpi_target:max{" in alert.expr
            assert "on (window)" in alert.expr


def test_thresholds_and_selector_come_from_the_config() -> None:
    config = MonitoringConfig(
        kpi_alert_selector='dimension=~"all|plan"',
        pipeline=PipelineAlerts(dead_letter_max_ratio=0.05, rate_window="10m", for_worker_down="7m"),
    )
    by_name = {a.name: a for a in alerts(config)}
    assert by_name["KpimonDeadLetterRatioHigh"].expr == "topic:kpimon_dead_letters:ratio_rate10m > 0.05"
    assert by_name["KpimonWorkerDown"].for_ == "7m"
    assert 'dimension=~"all|plan"' in by_name["KpimonNpsBelowTarget"].expr
    files = generated_files(config)
    assert "ratio_rate10m" in files[RULES_DIR / "kpimon-recording.yaml"]
    assert "ratio_rate10m" in files[Path("grafana/dashboards/kpimon-pipeline.json")]


def test_grafana_alerts_are_the_prometheus_alerts() -> None:
    document = grafana.alert_rules(DEFAULT)
    groups = document["groups"]
    assert isinstance(groups, list)
    rules = {rule["title"]: rule for group in groups for rule in group["rules"]}
    prometheus = {a.name: a for a in alerts(DEFAULT)}
    assert set(rules) == set(prometheus)
    prometheus_annotations = {
        a["alert"]: a["annotations"]
        for g in prometheus_rule_files(DEFAULT)["kpimon-alerts.yaml"]["groups"]  # type: ignore[attr-defined]
        for a in g["rules"]
    }
    for name, alert in prometheus.items():
        rule = rules[name]
        queries = {q["refId"]: q for q in rule["data"]}
        assert queries["A"]["model"]["expr"] == grafana.grafana_query(alert)
        assert queries["A"]["model"]["instant"] is True
        assert queries["C"]["model"] == {
            "expression": "$A == $A",
            "refId": "C",
            "type": "math",
            "datasource": {"type": "__expr__", "uid": "__expr__"},
        }
        assert ("B" in queries) == bool(alert.target_expr)
        assert rule["condition"] == "C" and rule["noDataState"] == "OK"
        assert rule["for"] == alert.for_
        assert rule["labels"] == {"severity": alert.severity, "team": DEFAULT.team(alert.group)}
        assert rule["annotations"]["dashboard_url"].startswith(f"{DEFAULT.grafana_url}/d/{alert.group}")
        assert rule["annotations"]["summary"] == alert.summary
        assert rule["annotations"]["runbook_url"] == DEFAULT.runbook_url(name)
        assert "$values.A.Value" in rule["annotations"]["description"]
        assert len(rule["uid"]) <= 40
        # The same annotations as the Prometheus rule, read from the rule's own queries.
        assert set(rule["annotations"]) == set(prometheus_annotations[name]), name
        assert "$values.A.Value" in rule["annotations"]["value"]
        assert ("target" in rule["annotations"]) == ("B" in queries)
        assert ({"D", "E"} <= set(queries)) == bool(alert.interval_kpi) == ("interval" in rule["annotations"])
        if alert.interval_kpi:
            assert f'kpi="{alert.interval_kpi}"' in queries["D"]["model"]["expr"]
            assert "kpimon_kpi_ci_low" in queries["D"]["model"]["expr"]
            assert "kpimon_kpi_ci_high" in queries["E"]["model"]["expr"]
        if alert.drivers:
            assert panel_title(alert.drivers) in rule["annotations"]["drivers"]
    assert len({rule["uid"] for rule in rules.values()}) == len(rules)
    assert [g["name"] for g in groups] == [g.name for g in alert_groups(DEFAULT)]


# --- dashboards -------------------------------------------------------------------------------------------


def test_dashboards_have_variables_ids_and_the_datasource() -> None:
    boards = dashboards(DEFAULT)
    assert set(boards) == {"kpimon-engagement.json", "kpimon-satisfaction.json", "kpimon-pipeline.json"}
    for name, board in boards.items():
        variables = {v["name"] for v in board["templating"]["list"]}  # type: ignore[index]
        assert "datasource" in variables
        if name != "kpimon-pipeline.json":
            assert {"dimension", "segment"} <= variables
        panels = board["panels"]
        assert isinstance(panels, list)
        assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
        for panel in panels:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
                assert panel["targets"], panel["title"]
                assert all(t["refId"] for t in panel["targets"])


def test_kpi_panels_follow_the_selected_segment() -> None:
    for query in panel_queries(DEFAULT):
        # stage, engagement (of respondents) and nps_group (of churn base users) panels fix their dimension
        fixed = ('dimension="stage"', 'dimension="engagement"', 'dimension="nps_group"')
        # The shift-share panels split the all/all change into every dimension's segments at once.
        split = any(part in query.expr for part in (":rate_effect7d", ":mix_effect7d", ":overlap_effect7d"))
        if "dimension_segment:" in query.expr and not any(d in query.expr for d in fixed) and not split:
            assert 'dimension="$dimension"' in query.expr, query


def test_satisfaction_dashboard_draws_targets_and_the_nps_split() -> None:
    exprs = [q.expr for q in panel_queries(DEFAULT) if q.dashboard == "kpimon-satisfaction"]
    assert any('kpi="nps"' in e for e in exprs) and any('kpi="csat"' in e for e in exprs)
    assert any('bucket=~"promoters|passives|detractors"' in e for e in exprs)
    assert any('dimension="stage"' in e for e in exprs)


# --- interval bands ---------------------------------------------------------------------------------------

#: Every KPI with an interval (docs/definitions.md, "Uncertainty"); each must be drawn with its band.
INTERVAL_KPIS = {"nps", "csat", "churn_rate", "retention_rate", "nps_response_rate", "csat_response_rate"}


def matchers(expr: str) -> set[tuple[str, str, str]]:
    """(label, operator, value) of the one selector of a plain `metric{...}` expression."""
    assert re.fullmatch(r"[\w:]+\{[^{}]*\}", expr), expr
    return set(re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', expr))


def properties(panel: dict[str, Any], name: str) -> dict[str, Any]:
    """The override properties (id -> value) of the series named `name` (matched by name)."""
    found = [
        o for o in panel["fieldConfig"]["overrides"] if o["matcher"] == {"id": "byName", "options": name}
    ]
    assert len(found) == 1, (panel["title"], name)
    return {prop["id"]: prop["value"] for prop in found[0]["properties"]}


def test_every_interval_kpi_is_drawn_with_its_band() -> None:
    drawn = bands(DEFAULT)
    kpis = [dict((m[0], m[2]) for m in matchers(band.targets[band.high]))["kpi"] for band in drawn]
    assert set(kpis) == INTERVAL_KPIS
    assert len({(band.dashboard, band.high) for band in drawn}) == len(drawn)  # churn: one per window


def test_each_band_fills_from_its_upper_to_its_lower_bound_of_the_same_series() -> None:
    """fillBelowTo names a series by display name: both names must be literal legends of the panel's
    queries, each query one series (the panel repeats per segment; every other label is single-valued),
    and the bounds must be the interval of the KPI line they surround."""
    for band in bands(DEFAULT):
        panel, where = band.panel, band.panel["title"]
        targets = panel["targets"]
        assert isinstance(targets, list)
        legends = [t["legendFormat"] for t in targets]
        assert len(set(legends)) == len(legends), where
        assert [t["refId"] for t in targets] == [chr(ord("A") + i) for i in range(len(targets))], where
        assert band.high in band.targets and band.low in band.targets, where
        assert "{{" not in band.high + band.low, where
        assert panel["repeat"] == "segment" and panel["repeatDirection"] == "h", where

        high, low = band.targets[band.high], band.targets[band.low]
        line_name = band.high.removesuffix(" 95 % high")
        assert band.low == f"{line_name} 95 % low" and line_name in band.targets, where
        line = band.targets[line_name]
        assert high.startswith(kpi("kpimon_kpi_ci_high") + "{"), where
        assert low == high.replace("kpimon_kpi_ci_high", "kpimon_kpi_ci_low"), where
        bound = matchers(high)
        assert ("segment", "=~", "$segment") in bound and ("dimension", "=", "$dimension") in bound
        assert ("day", "=", "current") in bound
        # Every other label fixed, or a single-valued variable ($dimension, $window), never a regex.
        assert all(op == "=" for label, op, _ in bound if label != "segment"), where
        assert {label for label, _, _ in bound} == {"kpi", "window", "day", "dimension", "segment"}, where
        # The line: the same segment, window and day; its own labels (survey) single-valued too.
        shared = {m for m in bound if m[0] != "kpi"}
        assert shared <= matchers(line), where
        assert all(op == "=" for label, op, _ in matchers(line) - shared), where

        upper, lower = properties(panel, band.high), properties(panel, band.low)
        assert upper["custom.fillBelowTo"] == band.low and upper["custom.fillOpacity"] > 0
        assert upper["custom.lineWidth"] == 0 and lower["custom.lineWidth"] == 0
        assert "custom.fillBelowTo" not in lower
        assert upper["color"] == lower["color"] == properties(panel, line_name)["color"], where


# --- drift ------------------------------------------------------------------------------------------------


def test_committed_files_are_what_the_code_generates(tmp_path: Path) -> None:
    """Regenerate into a tmp dir and compare file by file; a stale extra file in a generated dir fails too."""
    files = generated_files()
    for path, text in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for path in files:
        committed = ROOT / path
        assert committed.exists(), f"{path} missing: run `make generate`"
        assert committed.read_text() == (tmp_path / path).read_text(), f"{path} is stale: run `make generate`"
    for directory in GENERATED_DIRS:
        on_disk = {p.relative_to(ROOT) for p in (ROOT / directory).rglob("*") if p.is_file()}
        assert on_disk - set(files) == set(), f"files in {directory} that the code does not generate"


def test_generated_files_are_registered_with_make_generate() -> None:
    from scripts.generate import generated_files as all_generated

    assert set(generated_files()) <= set(all_generated())


def test_every_kpi_gauge_of_the_code_is_recorded_with_its_labels() -> None:
    """monitoring.rules.KPI_GAUGES mirrors agents/exporter/kpi_collector.py (metric -> its own labels)."""
    specs = [*KPI_METRICS.values(), COHORT]
    code = {spec.metric: tuple(name for name, _ in spec.extra_labels) for spec in specs}
    assert code == KPI_GAUGES
