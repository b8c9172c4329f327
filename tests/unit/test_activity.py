"""Day bitmaps: window spreading, range queries, runs and bytes, against plain set arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpimon.streams.activity import any_in, from_bytes, offsets, runs, spread, to_bytes

DAY_SETS = st.sets(st.integers(0, 150), max_size=40)


def bitmap(days: set[int]) -> int:
    return sum(1 << d for d in days)


@pytest.mark.parametrize(
    ("days", "width", "covered"),
    [
        (set(), 7, set()),
        ({0}, 1, {0}),
        ({0}, 7, set(range(7))),
        ({3}, 30, set(range(3, 33))),
        ({0, 10}, 7, set(range(7)) | set(range(10, 17))),
        ({0, 5}, 7, set(range(12))),
    ],
)
def test_spread_known(days: set[int], width: int, covered: set[int]) -> None:
    assert spread(bitmap(days), width) == bitmap(covered)


@given(DAY_SETS, st.integers(1, 70))
def test_spread_marks_the_days_whose_trailing_window_holds_a_day(days: set[int], width: int) -> None:
    expected = {d for d in range(0, 150 + width) if any(d - k in days for k in range(width))}
    assert spread(bitmap(days), width) == bitmap(expected)


@pytest.mark.parametrize(
    ("days", "first", "last", "expected"),
    [
        (set(), 0, 100, False),
        ({5}, 0, 4, False),
        ({5}, 5, 5, True),
        ({5}, 6, 100, False),
        ({5, 90}, 6, 100, True),
        ({5}, 6, 5, False),  # empty range
    ],
)
def test_any_in(days: set[int], first: int, last: int, expected: bool) -> None:
    assert any_in(bitmap(days), first, last) is expected


@given(DAY_SETS, st.integers(0, 160), st.integers(0, 160))
def test_any_in_matches_sets(days: set[int], first: int, last: int) -> None:
    assert any_in(bitmap(days), first, last) == any(first <= d <= last for d in days)


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (set(), []),
        ({0}, [(0, 1)]),
        ({1, 2, 3, 7, 9, 10}, [(1, 3), (7, 1), (9, 2)]),
        (set(range(64, 130)), [(64, 66)]),
    ],
)
def test_runs(days: set[int], expected: list[tuple[int, int]]) -> None:
    assert list(runs(bitmap(days))) == expected


@given(DAY_SETS)
def test_offsets_and_bytes_round_trip(days: set[int]) -> None:
    bits = bitmap(days)
    assert offsets(bits) == sorted(days)
    raw = to_bytes(bits)
    assert len(raw) == (max(days, default=-1) + 8) // 8
    assert from_bytes(raw) == bits


def test_empty_bitmap_is_empty_bytes() -> None:
    assert to_bytes(0) == b""
    assert from_bytes(b"") == 0
