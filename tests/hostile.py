"""Hypothesis strategies for hostile input messages: random bytes, wrong types, absurd values.

Shared by the property test of the validation path and by the integration test that sends a generated
batch to a running worker.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

from tests import events

#: A fixed wall clock for generated timestamps (2026-11-24T12:00:00Z).
NOW_MS = 1_795_521_600_000
DAY_MS = 86_400_000

# Text that stresses decoders: lone surrogates (escaped as \ud800 in JSON), NUL, bidi marks, emoji,
# combining marks and huge strings.
_edge_chars = st.sampled_from(["\ud800", "\udfff", "\x00", "\u202e", "\ufeff", "😀", "e\u0301", "\uffff"])
hostile_text = st.one_of(
    st.text(max_size=20),
    st.lists(_edge_chars, min_size=1, max_size=5).map("".join),
    st.integers(129, 5000).map(lambda n: "x" * n),
)
absurd_numbers = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
absurd_timestamps = st.one_of(
    st.integers(-(2**66), 2**66),
    st.sampled_from(
        [
            0,
            -1,
            10**18,
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-24T12:00:00",  # no offset
            "2026-02-30T00:00:00Z",
            "2026-11-24T12:00:00+25:00",
            "",
        ]
    ),
    hostile_text,
    absurd_numbers,
)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"a": [value]}
    return value


def _nested_bytes(depth: int) -> bytes:
    """`depth` levels of objects in lists, written directly (json.dumps would hit the recursion limit)."""
    return b'{"a":[' * depth + b'"deep"' + b"]}" * depth


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), absurd_numbers, hostile_text),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
field_values = st.one_of(json_values, absurd_timestamps, st.integers(1, 300).map(_nested))

CLICK_FIELDS = (
    "event_id",
    "user_id",
    "ts",
    "type",
    "session_id",
    "signup_ts",
    "platform",
    "plan",
    "properties",
)
SURVEY_FIELDS = ("event_id", "user_id", "ts", "survey", "action", "score", "comment", "signup_ts", "platform")


def base_event(kind: str, user: str, ts_ms: int) -> dict[str, Any]:
    """A valid event of `kind` for `user` at `ts_ms` (epoch milliseconds)."""
    if kind == "clicks":
        return events.click(user_id=user, ts=ts_ms, event_id=f"e-{user}-{ts_ms}")
    return events.survey(user_id=user, ts=ts_ms, event_id=f"s-{user}-{ts_ms}", score=7)


@st.composite
def mutated_event(draw: st.DrawFn, kind: str, now_ms: int) -> bytes:
    """A valid event of the day before `now_ms`, a few fields hostile or dropped, as JSON bytes."""
    user = draw(st.sampled_from(["u1", "u2", "u3"]))
    event = base_event(kind, user, now_ms - draw(st.integers(60_000, DAY_MS)))
    names = CLICK_FIELDS if kind == "clicks" else SURVEY_FIELDS
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(field_values)
    # NaN and Infinity are not JSON; Python writes them anyway, as producers in the wild do.
    return json.dumps(event, allow_nan=True).encode("utf-8", "surrogatepass")


def hostile_values(kind: str, now_ms: int = NOW_MS) -> st.SearchStrategy[bytes]:
    """Message values of every hostile shape for a topic of `kind`, events around wall clock `now_ms`."""
    return st.one_of(
        st.binary(max_size=200),
        mutated_event(kind, now_ms),
        json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
        st.integers(1, 5000).map(_nested_bytes),
        st.integers(1, 5000).map(lambda depth: b"[" * depth),
    )
