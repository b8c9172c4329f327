"""No silent drops (issue #20): replay's lateness check, the rejection log summary, dead-letter display."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kpimon.agents.cli.deadletters import DeadLetter, as_json, excerpt, format_line, matches, parse
from kpimon.agents.cli.replay import describe, event_days, lateness
from kpimon.agents.pipeline.deadletters import dead_letter_headers
from kpimon.agents.pipeline.metrics import PipelineMetrics, rejection_summary
from kpimon.streams.events import day_of
from kpimon.streams.output import day_number
from kpimon.streams.validation import Policy, Reason, Rejected, validate
from tests import events

TODAY = day_number("2026-12-02")
DAY_MS = 86_400_000


def test_event_days_counts_lines_and_readable_days(tmp_path: Path) -> None:
    path = tmp_path / "clicks.jsonl"
    path.write_bytes(
        b'{"ts": "2026-11-30T10:00:00Z", "user_id": "u1"}\n'
        b'{"ts": "2026-12-01T23:30:00-02:00"}\n'  # 2026-12-02 in UTC
        b"not json\n"
        b'{"ts": "2026-12-01T10:00:00"}\n'  # no offset: the worker rejects it, not a day here
        b'{"ts": 5}'  # no final newline; epoch milliseconds, as the worker reads them
    )
    lines, days = event_days(path)
    assert lines == 5
    assert days == Counter({day_number("2026-11-30"): 1, day_number("2026-12-02"): 1, 0: 1})


@given(
    days=st.dictionaries(st.integers(TODAY - 100, TODAY), st.integers(1, 50), min_size=1),
    bound=st.integers(0, 120),
)
def test_lateness_agrees_with_the_validation_rule(days: dict[int, int], bound: int) -> None:
    """Brute force: the count is exactly what validate() rejects as too_late; the advised bound keeps all."""
    now_ms = TODAY * DAY_MS + 12 * 3_600_000
    found = lateness(Counter(days), day_of(now_ms), bound)

    def rejected_late(day: int, max_days: int) -> bool:
        value = events.message(events.click(user_id="u", ts=day * DAY_MS, type="view"))
        verdict = validate("clicks", None, value, now_ms, Policy(max_lateness_days=max_days))
        return isinstance(verdict, Rejected) and verdict.reason is Reason.TOO_LATE

    assert found.too_late == sum(n for day, n in days.items() if rejected_late(day, bound))
    assert found.events == sum(days.values())
    assert not any(rejected_late(day, found.needed_days) for day in days)
    # ... and keeps them even if the replay runs into the next day.
    assert found.needed_days >= bound
    assert found.needed_days >= TODAY + 1 - min(days)


def test_replay_warning_names_the_flag_and_the_value() -> None:
    days = Counter({TODAY - 75: 880, TODAY - 3: 120})
    found = lateness(days, TODAY, 7)
    summary, warning = describe("clicks.jsonl", found, 7)
    assert summary == "clicks.jsonl: 1,000 events from 2026-09-18 to 2026-11-29"
    assert warning is not None
    assert "880 of 1,000 events (88 %)" in warning
    assert "--max-lateness-days 76" in warning
    assert "KPIMON_MAX_LATENESS_DAYS=76" in warning
    assert describe("clicks.jsonl", lateness(days, TODAY, 80), 80)[1] is None


def test_replay_of_a_file_without_timestamps_says_so() -> None:
    assert describe("x.jsonl", lateness(Counter(), TODAY, 7), 7) == (
        "x.jsonl: no event with a readable ts",
        None,
    )


def test_rejection_summary_counts_only_new_rejections_by_reason() -> None:
    from prometheus_client import CollectorRegistry

    metrics = PipelineMetrics(CollectorRegistry(), ("clicks", "surveys"))
    assert rejection_summary({}, metrics.rejections, 7) is None
    for _ in range(3):
        metrics.rejected("clicks", Reason.TOO_LATE)
    metrics.rejected("surveys", Reason.TOO_LATE)
    metrics.rejected("surveys", Reason.INVALID_JSON)
    first = dict(metrics.rejections)
    line = rejection_summary({}, first, 7)
    assert line is not None
    assert line.startswith("rejected 5 messages to the dead-letter topic: ")
    assert "too_late 4 (clicks, surveys); invalid_json 1 (surveys)" in line
    assert "--max-lateness-days" in line and "(7 days)" in line
    assert rejection_summary(first, dict(metrics.rejections), 7) is None  # nothing new: no line
    metrics.rejected("clicks", Reason.KEY_MISMATCH)
    second = rejection_summary(first, dict(metrics.rejections), 7)
    assert second is not None
    assert "rejected 1 messages" in second and "key_mismatch 1 (clicks)" in second
    assert "max-lateness" not in second


def _letter(
    value: bytes | None, reason: Reason = Reason.INVALID_JSON, redacted: bytes | None = None
) -> DeadLetter:
    headers = dead_letter_headers(Rejected(reason, "bad bytes", "ts"), "clicks", 2, 41, 1_795_500_000_000)
    if redacted is not None:
        headers.append(("kpimon-redacted", redacted))
    return parse(1_795_500_000_000, 1, 7, b"u1", value, headers)


def test_parse_reads_the_headers_the_worker_writes() -> None:
    letter = _letter(b'{"user_id": "u1"}', Reason.TOO_LATE)
    assert letter.reason == "too_late"
    assert letter.source == "clicks[2]@41"
    assert letter.field == "ts"
    assert letter.key == "u1"
    assert letter.redacted is None
    assert matches(letter, ["too_late", "invalid_json"])
    assert matches(letter, [])
    assert not matches(letter, ["invalid_json"])


def test_parse_without_headers_does_not_raise() -> None:
    letter = parse(0, 0, 0, None, b"x", [("kpimon-source-offset", b"not a number")])
    assert (letter.reason, letter.source, letter.source_offset) == ("?", "?", None)


def test_excerpt_is_one_line_and_short() -> None:
    assert excerpt(None) == "(null value)"
    assert excerpt(b"") == "(empty)"
    assert excerpt(b'{"a":\n1}\x00') == '{"a":\\n1}\\x00'
    assert excerpt(b"\xff\xfeok") == "\\xff\\xfeok"
    long = excerpt(b"x" * 1_000_000, 40)
    assert len(long) == 40 and long.endswith("…")
    assert excerpt(b"y" * 40, 40) == "y" * 40


def test_format_line_and_json() -> None:
    line = format_line(_letter(b'{"user_id": "u1"}'))
    assert line.startswith("2026-11-24T")
    assert "invalid_json" in line and "clicks[2]@41" in line and "bad bytes [ts]" in line
    assert line.endswith('{"user_id": "u1"}')
    assert "\n" not in format_line(_letter(b"a\nb"))
    redacted = format_line(_letter(b"", redacted=b"payload-dropped"))
    assert "(redacted: payload-dropped) (empty)" in redacted
    document = json.loads(as_json(_letter(b"\xffx")))
    assert document["value"] == "\\xffx"
    assert document["source"] == "clicks[2]@41"
    assert document["reason"] == "invalid_json"
