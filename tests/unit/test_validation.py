"""One row per rejection reason of docs/events.md, plus the hostile shapes the foundation issue lists."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from kpimon.streams.events import ClickEvent, SurveyEvent, day_of
from kpimon.streams.validation import MAX_NESTING, Accepted, Policy, Reason, Rejected, validate
from tests import events
from tests.events import DROP

NOW = 1_795_500_000_000  # 2026-11-24T...Z, a fixed wall clock
DAY_MS = 86_400_000
POLICY = Policy()


#: A valid click and survey of user u1 a second before NOW; keyword arguments change or DROP fields.
click = functools.partial(events.click, ts=NOW - 1000)
survey = functools.partial(events.survey, ts=NOW - 1000)
raw = events.message


def check(kind: Any, value: bytes, key: bytes | None = b"u1", policy: Policy = POLICY) -> Accepted | Rejected:
    return validate(kind, key, value, NOW, policy)


VALID = [
    ("clicks", raw(click())),
    ("clicks", raw(click(ts="2026-11-24T01:00:00+01:00", signup_ts="2026-11-01T00:00:00Z"))),
    ("clicks", raw(click(platform="ios", plan="pro", session_id="s", properties={"a": [1, {"b": None}]}))),
    ("clicks", raw(click(extra_field="ignored, for forward compatibility"))),
    ("surveys", raw(survey())),
    ("surveys", raw(survey(survey="csat", score=1))),
    ("surveys", raw(survey(survey="csat", score=5, comment="x" * 2000))),
    ("surveys", raw(survey(action="shown", score=DROP))),
    ("surveys", raw(survey(action="dismissed", score=None))),
    ("surveys", raw(survey(survey="nps", score=0))),
    ("surveys", raw(survey(survey="nps", score=10))),
    ("clicks", raw(click(ts=NOW + 299_000))),  # inside the 5 minutes of allowed clock skew
    ("clicks", raw(click(ts=(day_of(NOW) - 7) * DAY_MS))),  # first millisecond of the oldest day accepted
]


@pytest.mark.parametrize(("kind", "value"), VALID)
def test_valid_events_are_accepted(kind: Any, value: bytes) -> None:
    verdict = check(kind, value)
    assert isinstance(verdict, Accepted), verdict
    assert isinstance(verdict.event, ClickEvent if kind == "clicks" else SurveyEvent)
    assert verdict.day == day_of(verdict.ts_ms)


def test_rfc3339_offset_is_resolved_to_utc() -> None:
    verdict = check("clicks", raw(click(ts="2026-11-24T01:00:00+01:00")))
    assert isinstance(verdict, Accepted)
    assert verdict.ts_ms == 1_795_478_400_000  # 2026-11-24T00:00:00Z


INVALID = [
    # One row per rejection reason of docs/events.md ...
    ("not JSON", "clicks", b"{not json", Reason.INVALID_JSON),
    ("missing field", "clicks", raw(click(type=DROP)), Reason.MISSING_FIELD),
    ("missing user_id", "surveys", raw(survey(user_id=DROP)), Reason.MISSING_FIELD),
    ("wrong type", "clicks", raw(click(user_id=42)), Reason.WRONG_TYPE),
    ("float score", "surveys", raw(survey(score=9.0)), Reason.WRONG_TYPE),
    ("bool ts", "clicks", raw(click(ts=True)), Reason.WRONG_TYPE),
    ("properties not an object", "clicks", raw(click(properties=[1])), Reason.WRONG_TYPE),
    ("empty user_id", "clicks", raw(click(user_id="")), Reason.INVALID_VALUE),
    ("user_id of 129 chars", "clicks", raw(click(user_id="u" * 129)), Reason.INVALID_VALUE),
    ("type of 65 chars", "clicks", raw(click(type="t" * 65)), Reason.INVALID_VALUE),
    ("unknown survey", "surveys", raw(survey(survey="ces")), Reason.INVALID_VALUE),
    ("unknown action", "surveys", raw(survey(action="clicked")), Reason.INVALID_VALUE),
    ("comment of 2001 chars", "surveys", raw(survey(comment="x" * 2001)), Reason.INVALID_VALUE),
    ("ts without offset", "clicks", raw(click(ts="2026-11-24T00:00:00")), Reason.INVALID_TIMESTAMP),
    ("ts not a date", "clicks", raw(click(ts="yesterday")), Reason.INVALID_TIMESTAMP),
    ("signup_ts garbage", "clicks", raw(click(signup_ts="2026-13-01T00:00:00Z")), Reason.INVALID_TIMESTAMP),
    ("NPS 11", "surveys", raw(survey(score=11)), Reason.SCORE_OUT_OF_RANGE),
    ("NPS -1", "surveys", raw(survey(score=-1)), Reason.SCORE_OUT_OF_RANGE),
    ("CSAT 0", "surveys", raw(survey(survey="csat", score=0)), Reason.SCORE_OUT_OF_RANGE),
    ("CSAT 6", "surveys", raw(survey(survey="csat", score=6)), Reason.SCORE_OUT_OF_RANGE),
    ("answered without score", "surveys", raw(survey(score=DROP)), Reason.SCORE_MISSING),
    ("answered with null score", "surveys", raw(survey(score=None)), Reason.SCORE_MISSING),
    ("shown with a score", "surveys", raw(survey(action="shown", score=7)), Reason.SCORE_FORBIDDEN),
    ("dismissed with a score", "surveys", raw(survey(action="dismissed", score=7)), Reason.SCORE_FORBIDDEN),
    ("6 minutes ahead", "clicks", raw(click(ts=NOW + 360_000)), Reason.FUTURE_TIMESTAMP),
    ("8 days old", "clicks", raw(click(ts=(day_of(NOW) - 7) * DAY_MS - 1)), Reason.TOO_LATE),
    ("negative epoch", "clicks", raw(click(ts=-5)), Reason.TOO_LATE),
    ("absurd epoch", "clicks", raw(click(ts=10**30)), Reason.FUTURE_TIMESTAMP),
    # ... and the hostile shapes.
    ("non-UTF-8 bytes", "clicks", b"\xff\xfe\x00garbage", Reason.INVALID_JSON),
    ("non-UTF-8 inside a string", "clicks", b'{"event_id":"\xff","user_id":"u1"}', Reason.INVALID_JSON),
    ("JSON array", "clicks", b"[1, 2, 3]", Reason.NOT_AN_OBJECT),
    ("JSON number", "surveys", b"42", Reason.NOT_AN_OBJECT),
    ("JSON string", "clicks", b'"hello"', Reason.NOT_AN_OBJECT),
    ("JSON null", "clicks", b"null", Reason.NOT_AN_OBJECT),
    ("NaN", "surveys", b'{"event_id":"s","user_id":"u1","ts":NaN}', Reason.INVALID_JSON),
    ("empty message", "clicks", b"", Reason.INVALID_JSON),
    ("1 MB of garbage", "clicks", bytes(range(256)) * 4096, Reason.INVALID_JSON),
    ("over the size limit", "clicks", b" " * (1024 * 1024 + 1), Reason.TOO_LARGE),
]


@pytest.mark.parametrize(("name", "kind", "value", "reason"), INVALID, ids=[row[0] for row in INVALID])
def test_invalid_messages_are_rejected_with_their_reason(
    name: str, kind: Any, value: bytes, reason: Reason
) -> None:
    verdict = check(kind, value)
    assert isinstance(verdict, Rejected), f"{name}: {verdict}"
    assert verdict.reason == reason, f"{name}: {verdict}"
    assert verdict.detail


def test_every_reason_has_a_row() -> None:
    covered = {row[3] for row in INVALID} | {Reason.KEY_MISMATCH}
    assert covered == set(Reason) - {Reason.INTERNAL_ERROR}  # not a validation outcome


@pytest.mark.parametrize("key", [b"u2", b"\xff", b""])
def test_key_that_contradicts_user_id_is_rejected(key: bytes) -> None:
    verdict = check("clicks", raw(click()), key=key)
    assert isinstance(verdict, Rejected)
    assert verdict.reason == Reason.KEY_MISMATCH


def test_unkeyed_message_is_accepted() -> None:
    assert isinstance(check("clicks", raw(click()), key=None), Accepted)


def test_null_value_is_rejected() -> None:
    verdict = validate("clicks", b"u1", None, NOW, POLICY)
    assert isinstance(verdict, Rejected)
    assert verdict.reason == Reason.INVALID_JSON


@pytest.mark.parametrize(("depth", "accepted"), [(100, True), (100_000, False)])
def test_deep_nesting_never_raises(depth: int, accepted: bool) -> None:
    head = b'{"event_id":"e","user_id":"u1","ts":%d,"type":"t","properties":' % (NOW - 1)
    deep = head + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    verdict = check("clicks", deep)
    assert isinstance(verdict, Accepted) is accepted
    if not accepted:
        assert isinstance(verdict, Rejected)
        assert verdict.reason == Reason.INVALID_JSON


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """A valid click whose `properties` nest `depth` levels (objects in lists); the message one more."""
    head = b'{"event_id":"e","user_id":"u1","ts":%d,"type":"t","properties":' % (NOW - 1)
    levels = depth
    return (
        head
        + b'{"a":[' * (levels // 2)
        + b'{"a":' * (levels % 2)
        + inner
        + b"}" * (levels % 2)
        + b"]}" * (levels // 2)
        + b"}"
    )


@pytest.mark.parametrize(("depth", "accepted"), [(MAX_NESTING - 1, True), (MAX_NESTING, False), (400, False)])
def test_nesting_is_bounded_by_a_fixed_limit(depth: int, accepted: bool) -> None:
    verdict = check("clicks", nested(depth))
    assert isinstance(verdict, Accepted) is accepted, verdict
    if not accepted:
        assert verdict == Rejected(Reason.INVALID_JSON, f"nested deeper than {MAX_NESTING} levels")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert isinstance(check("clicks", nested(3, json.dumps("[{" * 500).encode())), Accepted)


def test_the_verdict_does_not_depend_on_the_callers_stack_depth() -> None:
    """A worker validates deeper in the stack than a test: msgspec's recursion limit must not decide."""

    def deep_in_the_stack(frames: int, value: bytes) -> Accepted | Rejected:
        if frames:
            return deep_in_the_stack(frames - 1, value)
        return check("clicks", value)

    for depth in (MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 50, 300, 450):
        value = nested(depth)
        assert deep_in_the_stack(700, value) == check("clicks", value), depth


def test_lateness_bound_is_a_setting() -> None:
    old = raw(click(ts=NOW - 30 * DAY_MS))
    assert isinstance(check("clicks", old), Rejected)
    assert isinstance(check("clicks", old, policy=Policy(max_lateness_days=90)), Accepted)


def test_duplicate_event_id_is_valid_twice() -> None:
    # Validation judges one message; duplicates are recognised by the user's state (a set of active days,
    # and the survey event ids already counted), so both copies pass validation.
    message = raw(survey())
    first, second = check("surveys", message), check("surveys", message)
    assert isinstance(first, Accepted)
    assert first == second


def test_wrong_field_is_named() -> None:
    verdict = check("surveys", raw(survey(score="nine")))
    assert isinstance(verdict, Rejected)
    assert verdict.field == "score"
