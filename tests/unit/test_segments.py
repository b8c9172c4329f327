"""Segment extraction and the derived lifecycle stage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kpimon.streams.events import ClickEvent, SurveyEvent
from kpimon.streams.segments import (
    ALL,
    SegmentKey,
    Stage,
    event_stage,
    segments_for,
    segments_of,
    signup_day_of,
    stage_of,
)

D0 = 20_000


@pytest.mark.parametrize(
    ("days_after_signup", "stage"),
    [
        (-3, "onboarding"),  # a signup after the event: less than 14 days after it
        (0, "onboarding"),
        (13, "onboarding"),
        (14, "established"),
        (400, "established"),
    ],
)
def test_stage_boundary(days_after_signup: int, stage: str) -> None:
    assert stage_of(D0 + days_after_signup, D0) == stage


@pytest.mark.parametrize(
    ("signup_day", "first_seen", "stage"),
    [
        (D0, D0 - 100, "onboarding"),  # the event's own signup wins over the fallback
        (D0 - 14, D0, "established"),
        (None, D0, "onboarding"),  # the user's first event without signup_ts
        (None, D0 - 13, "onboarding"),
        (None, D0 - 14, "established"),
    ],
)
def test_event_stage_falls_back_to_first_seen_day(
    signup_day: int | None, first_seen: int, stage: str
) -> None:
    assert event_stage(D0, signup_day, first_seen) == stage


@pytest.mark.parametrize(
    ("signup_ts", "day"),
    [
        (None, None),
        (0, 0),
        (86_399_999, 0),
        (86_400_000, 1),
        (-1, -1),
        (datetime(2024, 10, 4, 23, 59, tzinfo=UTC), D0),
        (datetime.fromisoformat("2024-10-05T01:00:00+02:00"), D0),  # 2024-10-04T23:00Z
    ],
)
def test_signup_day_of(signup_ts: datetime | int | None, day: int | None) -> None:
    assert signup_day_of(signup_ts) == day


@pytest.mark.parametrize(
    ("platform", "plan", "stage", "expected"),
    [
        (
            "ios",
            "pro",
            "onboarding",
            (ALL, ("platform", "ios"), ("plan", "pro"), ("stage", "onboarding")),
        ),
        (
            None,
            None,
            "established",
            (ALL, ("platform", "unknown"), ("plan", "unknown"), ("stage", "established")),
        ),
        (
            "web",
            None,
            "established",
            (ALL, ("platform", "web"), ("plan", "unknown"), ("stage", "established")),
        ),
    ],
)
def test_segments_of_a_click(
    platform: str | None, plan: str | None, stage: Stage, expected: tuple[SegmentKey, ...]
) -> None:
    event = ClickEvent(event_id="e", user_id="u", ts=0, type="click", platform=platform, plan=plan)
    assert segments_of(event, stage) == expected


def test_segments_of_a_survey() -> None:
    event = SurveyEvent(event_id="e", user_id="u", ts=0, survey="nps", action="shown", plan="free")
    assert segments_of(event, "onboarding") == (
        ALL,
        ("platform", "unknown"),
        ("plan", "free"),
        ("stage", "onboarding"),
    )


def test_segments_for_folded_values() -> None:
    assert segments_for("other", None, "established") == (
        ALL,
        ("platform", "other"),
        ("plan", "unknown"),
        ("stage", "established"),
    )
