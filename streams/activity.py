"""Sets of UTC days as Python int bitmaps, and the window queries the engagement KPIs need.

A bitmap is an `int` whose bit `i` stands for day `base + i`; the base day is kept by the owner (one base is
shared by all bitmaps of a user, so they combine with plain `&` and `|`). Python ints are arbitrary
precision, so a bitmap covering a few months is a two- or three-digit int: set operations on a whole
window are a handful of C-level operations instead of a Python loop over days.
"""

from __future__ import annotations

from collections.abc import Iterator


def spread(bits: int, width: int) -> int:
    """Days whose trailing window of `width` days holds a set day: bit i set when any of i-width+1..i is.

    So `spread(active, 7)` is the set of days on which the user counts in a 7-day active-users window.
    Computed by doubling (log2(width) shift-or steps), not by `width` shifts.
    """
    covered = 1
    out = bits
    while covered * 2 <= width:
        out |= out << covered
        covered *= 2
    if covered < width:
        # `out` covers shifts 0..covered-1; one more shift by width-covered (< covered) reaches width-1.
        out |= out << (width - covered)
    return out


def any_in(bits: int, first: int, last: int) -> bool:
    """Whether a bit in the offset range [first, last] (inclusive; first >= 0) is set."""
    if last < first:
        return False
    return (bits >> first) & ((1 << (last - first + 1)) - 1) != 0


def offsets(bits: int) -> list[int]:
    """Offsets of the set bits, ascending."""
    return [start + i for start, length in runs(bits) for i in range(length)]


def runs(bits: int) -> Iterator[tuple[int, int]]:
    """Maximal runs of consecutive set bits as (first offset, length), ascending.

    Changes of window counts come in runs (a new active day enters 30 consecutive 30-day windows), so
    walking runs costs a few int operations per run rather than per day.
    """
    while bits:
        start = (bits & -bits).bit_length() - 1
        rest = bits >> start
        # ~rest & (rest + 1) isolates the lowest clear bit of rest: its index counts the trailing ones.
        length = (~rest & (rest + 1)).bit_length() - 1
        yield start, length
        bits ^= ((1 << length) - 1) << start


def to_bytes(bits: int) -> bytes:
    """Minimal little-endian bytes of a (non-negative) bitmap; b"" for the empty set."""
    return bits.to_bytes((bits.bit_length() + 7) >> 3, "little")


def from_bytes(data: bytes) -> int:
    """The bitmap that `to_bytes` wrote."""
    return int.from_bytes(data, "little")
