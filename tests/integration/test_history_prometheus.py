"""History in Grafana (issue #20): a replayed 30-day history, exported by `kpimon history` as OpenMetrics,
loaded with `promtool tsdb create-blocks-from openmetrics` into the real Prometheus, and read back by the
dashboards' own queries: each day's value equals the reference's.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from kpimon.streams.output import KpiRecord, day_name, day_number
from monitoring.config import DEFAULT
from monitoring.dashboards import panel_queries
from monitoring.promql import substitute_variables
from tests.helpers import KPIMON, free_port
from tests.pipeline import History, processed, replay, simulate_history, wait_for_equality
from tests.prometheus import binary, running_prometheus, write_setup
from tests.workers import running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(1200)]

USERS, DAYS, SEED = 400, 30, 5
LATENESS = DAYS + 5

#: (dashboard panel title, KPI, window, dimension, segment): dashboard queries checked day by day.
PANELS = [
    ("DAU (today so far)", "active_users", "1d", "all", "all"),
    ("MAU", "active_users", "30d", "all", "all"),
    ("Stickiness (DAU / MAU)", "stickiness", "30d", "platform", "ios"),
    ("NPS", "nps", "30d", "all", "all"),
    ("CSAT", "csat", "7d", "plan", "pro"),
]


def panel_expr(title: str, window: str, dimension: str, segment: str) -> str:
    """The first query of the dashboard panel `title`, with the dashboard's variables set."""
    expr = next(q.expr for q in panel_queries(DEFAULT) if q.panel == title)
    values = {"$dimension": dimension, "$segment": segment, "$window": window}
    return substitute_variables(expr, values)


def test_a_replayed_history_reaches_the_dashboards_day_by_day(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    history: History = simulate_history(tmp_path / "sim", USERS, DAYS, SEED, LATENESS)
    extra = ["--max-lateness-days", str(LATENESS)]
    with running_worker(kafka_bootstrap, unique_prefix, free_port(), tmp_path / "w", extra) as worker:
        replay(history, kafka_bootstrap, unique_prefix, 4)
        deadline = time.monotonic() + 600
        while processed([worker]) < history.messages:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(2)
        wait_for_equality(kafka_bootstrap, unique_prefix, tmp_path, history.expected, timeout=180)

    today = max(day_number(r.day) for r in history.expected)
    first, last = today - DAYS + 1, today - 1
    storage = tmp_path / "tsdb"
    started = time.monotonic()
    exported = subprocess.run(
        [
            *(KPIMON, "history", "--broker", kafka_bootstrap, "--topic-prefix", unique_prefix, "--quiet"),
            *("--from", day_name(first), "--to", day_name(last), "--load-into", str(storage)),
            *("--promtool", binary("promtool")),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    assert f"loaded into {storage}" in exported.stderr
    print(f"kpimon history --load-into: {time.monotonic() - started:.1f} s; {exported.stderr.strip()}")

    reference = {r.key: r for r in history.expected}
    config = write_setup(tmp_path / "prometheus", DEFAULT)
    with running_prometheus(config, storage, retention="90d") as prometheus:
        for title, kpi, window, dimension, segment in PANELS:
            expr = panel_expr(title, window, dimension, segment)
            # One point per day, at noon: what a Grafana panel over the month asks for with a 1d step.
            data = prometheus.api(
                "query_range",
                {
                    "query": expr,
                    "start": str(first * 86_400 + 43_200),
                    "end": str(last * 86_400 + 43_200),
                    "step": "86400",
                },
            )
            results = [r for r in data["result"] if r["metric"].get("segment") == segment]
            assert len(results) == 1, (title, data["result"])
            got = {int(float(t)) // 86_400: float(v) for t, v in results[0]["values"]}
            expected: dict[int, float] = {}
            for day in range(first, last + 1):
                record: KpiRecord | None = reference.get(
                    f"{kpi}/{window}/{dimension}/{segment}/{day_name(day)}"
                )
                if record is not None and record.value is not None:
                    expected[day] = float(record.value)
            assert len(expected) >= DAYS - 8, (title, len(expected))  # the panel has a month of history
            assert got.keys() == expected.keys(), (title, sorted(got.keys() ^ expected.keys()))
            for day, value in expected.items():
                assert got[day] == pytest.approx(value, rel=1e-12, abs=1e-12), (title, day_name(day))
