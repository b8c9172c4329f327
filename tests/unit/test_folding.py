"""Segment folding: personal data and values beyond the cap count as `other`, exactly as the SQL reference
folds them, and the folds are counted in kpimon_segment_values_folded_total."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from kpimon.agents.exporter.folding_collector import FoldedCollector
from kpimon.agents.pipeline.folding import CAP, OTHER, PERSONAL, SegmentFolder
from kpimon.reference.load import load, sql_text
from kpimon.streams.validation import Policy

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

#: Values of every kind: products, e-mail addresses in several shapes, near misses, the reserved words.
VALUES = [
    "ios",
    "web",
    "tv",
    "pro",
    "dave.seg@example.com",
    "Zed@Example.CO.UK",
    "x+tag@sub.mail.example.org",
    "name <joe@example.de>",  # an address inside a value
    "joe@localhost",  # no dot after the @
    "@example.com",  # nothing before the @
    "joe@.",  # nothing around the dot
    "a b@c.d",  # whitespace: "b@c.d" is still an address
    "tab\t@c.d",
    "two@@c.d",
    "cust-0042",
    "cust-x",
    "other",
    "unknown",
]
PATTERNS = ["", r"^cust-[0-9]+$", r"[0-9]{3}", r"(?i)^TV$"]


@pytest.mark.parametrize(
    ("value", "personal"),
    [
        ("dave.seg@example.com", True),
        ("name <joe@example.de>", True),
        ("a b@c.d", True),
        ("joe@localhost", False),
        ("@example.com", False),
        ("joe@.", False),
        ("ios", False),
    ],
)
def test_e_mail_addresses_fold_into_other(value: str, personal: bool) -> None:
    folder = SegmentFolder(max_values=10)
    assert folder.fold("plan", value) == (OTHER if personal else value)
    assert folder.folded == ({("plan", PERSONAL): 1} if personal else {})


def test_a_configured_pattern_folds_too_and_personal_values_take_no_place() -> None:
    folder = SegmentFolder(max_values=2, personal_pattern=r"^cust-[0-9]+$")
    folded = [folder.fold("plan", v) for v in ["cust-1", "a@b.io", "free", "cust-2", "pro", "team", "free"]]
    assert folded == [OTHER, OTHER, "free", OTHER, "pro", OTHER, "free"]
    assert folder.folded == {("plan", PERSONAL): 3, ("plan", CAP): 1}
    registry = CollectorRegistry()
    registry.register(FoldedCollector(folder))
    sample = registry.get_sample_value
    assert sample("kpimon_segment_values_folded_total", {"dimension": "plan", "reason": "personal"}) == 3
    assert sample("kpimon_segment_values_folded_total", {"dimension": "plan", "reason": "cap"}) == 1
    assert sample("kpimon_segment_values_folded_total", {"dimension": "platform", "reason": "cap"}) == 0


def test_a_bad_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="segment_personal_pattern"):
        SegmentFolder(5, personal_pattern="(")


def reference_segments(
    tmp_path: Path, events: list[tuple[str | None, str | None]], max_values: int, pattern: str
) -> list[tuple[str, str]]:
    """(platform, plan) of each click as reference/sql/10_prepare.sql attributes it."""
    lines = []
    for i, (platform, plan) in enumerate(events):
        event: dict[str, Any] = {
            "event_id": f"e{i}",
            "user_id": f"u{i % 3}",
            "ts": NOW_MS - 1000,
            "type": "c",
        }
        if platform is not None:
            event["platform"] = platform
        if plan is not None:
            event["plan"] = plan
        lines.append(json.dumps(event))
    clicks, surveys = tmp_path / "clicks.jsonl", tmp_path / "surveys.jsonl"
    clicks.write_text("".join(line + "\n" for line in lines))
    surveys.write_text("")
    con = duckdb.connect(":memory:")
    try:
        load(con, clicks, surveys, NOW_MS, Policy(), (), max_values, pattern)
        con.execute(sql_text("10_prepare.sql"))
        rows = con.execute(
            "SELECT seq, dimension, segment FROM event_segments WHERE dimension IN ('platform', 'plan')"
        ).fetchall()
    finally:
        con.close()
    by_seq: dict[int, dict[str, str]] = {}
    for seq, dimension, segment in rows:
        by_seq.setdefault(seq, {})[dimension] = segment
    return [(by_seq[i]["platform"], by_seq[i]["plan"]) for i in range(len(events))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(st.none() | st.sampled_from(VALUES), st.none() | st.sampled_from(VALUES)), max_size=25
    ),
    max_values=st.integers(1, 4),
    pattern=st.sampled_from(PATTERNS),
)
def test_the_worker_folds_exactly_as_the_reference(
    tmp_path: Path, events: list[tuple[str | None, str | None]], max_values: int, pattern: str
) -> None:
    """In one worker's arrival order (file order here), the folder and the SQL agree on every event."""
    folder = SegmentFolder(max_values, pattern)
    streamed = [
        (folder.fold("platform", platform) or "unknown", folder.fold("plan", plan) or "unknown")
        for platform, plan in events
    ]
    assert streamed == reference_segments(tmp_path, events, max_values, pattern)
