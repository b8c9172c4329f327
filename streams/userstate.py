"""The per-user state the ingest agent keeps (one value per user_id), and its compact bytes.

docs/architecture.md, "Exact per-user state with day bitmaps": per (user, segment) a bitmap of active
days, per user the facts that decide its lifecycle "new" days and its stage fallback. All bitmaps of a
user share one base day, so they combine without shifting. `streams.engagement` reads and updates it;
nothing here knows the KPIs.
"""

from __future__ import annotations

import msgspec

from kpimon.streams import activity
from kpimon.streams.segments import DIMENSIONS, SegmentKey

#: A remembered survey (streams.satisfaction.SurveyFact): (day, survey, action, score or -1, platform,
#: plan, stage).
SurveyFact = tuple[int, str, str, int, str, str, str]

_DIMENSION_CODES = {name: code for code, name in enumerate(DIMENSIONS)}
_FORMAT = 1


class UserState:
    """Everything kpimon remembers about one user. Mutable; the agent writes it back when it changed.

    Bit i of every bitmap stands for UTC day `base + i`.
    """

    __slots__ = (
        "base",
        "explicit_new",
        "first_active",
        "first_active_unsigned",
        "first_seen",
        "last_seen",
        "partition",
        "segments",
        "surveys",
    )

    def __init__(self) -> None:
        self.base = 0
        #: Active days per segment the user was ever active in (a segment whose bits all expired is dropped).
        self.segments: dict[SegmentKey, int] = {}
        #: Days with an active click whose own signup_ts falls on that day (new days by explicit signup).
        self.explicit_new = 0
        #: The user's first active day over all active clicks; never expires (it decides "new" for good).
        self.first_active: int | None = None
        #: Whether an active click on `first_active` had no signup_ts (that makes `first_active` a new day).
        self.first_active_unsigned = False
        #: The earliest event day of any accepted event (clicks of any type, surveys): stage fallback.
        self.first_seen: int | None = None
        #: The newest event day of any accepted event: restores a partition's current day after a restart.
        self.last_seen: int | None = None
        #: The source partition the user's events arrive on (-1: not yet known). Counters are rebuilt per
        #: partition from the states, and the key alone does not tell the partition (producers' partitioners
        #: differ), so the state remembers it.
        self.partition = -1
        #: The user's surveys of the days that can still change: event_id -> (day, survey, action,
        #: score or -1, platform, plan, stage). Exact de-duplication by event_id, and what rebuilds the
        #: satisfaction counters after a restart. The engagement code neither reads nor writes it.
        self.surveys: dict[str, SurveyFact] = {}

    def note_seen(self, day: int) -> bool:
        """Record that an accepted event of this user happened on `day`; True when first/last seen moved."""
        changed = False
        if self.first_seen is None or day < self.first_seen:
            self.first_seen = day
            changed = True
        if self.last_seen is None or day > self.last_seen:
            self.last_seen = day
            changed = True
        return changed

    def make_room(self, day: int) -> int:
        """Offset of `day` in the bitmaps, moving the base down first when `day` is before it."""
        if not self.segments and not self.explicit_new:
            self.base = day  # nothing stored: any base will do, and this keeps the ints small
            return 0
        shift = self.base - day
        if shift > 0:
            self.segments = {key: bits << shift for key, bits in self.segments.items()}
            self.explicit_new <<= shift
            self.base = day
            return 0
        return -shift

    def expire(self, cutoff: int) -> bool:
        """Forget the days before `cutoff`: bits and surveys (first_active, first_seen and last_seen stay).

        A survey older than the cutoff is older than the lateness bound, so a duplicate of it would be
        rejected as too late anyway: de-duplication stays exact.

        What stays exact (see streams.engagement.expiry_cutoff): every delta that engagement later computes
        for a day >= cutoff + 59, because such a day's contribution only looks at days >= cutoff. Counters
        of days < cutoff + 59 may go wrong if later events still touch them, so the agent only expires
        below the lateness bound. Returns True when anything was dropped (the state must be written).
        """
        old_surveys = [event_id for event_id, fact in self.surveys.items() if fact[0] < cutoff]
        for event_id in old_surveys:
            del self.surveys[event_id]
        shift = cutoff - self.base
        if shift <= 0:
            return bool(old_surveys)
        changed = bool(self.explicit_new & ((1 << shift) - 1)) or bool(old_surveys)
        kept: dict[SegmentKey, int] = {}
        for key, bits in self.segments.items():
            if bits & ((1 << shift) - 1):
                changed = True
            if bits >> shift:
                kept[key] = bits >> shift
        self.segments = kept
        self.explicit_new >>= shift
        self.base = cutoff
        return changed

    def active_days(self, segment: SegmentKey) -> list[int]:
        """The remembered active days of a segment, ascending (for tests and debugging)."""
        return [self.base + i for i in activity.offsets(self.segments.get(segment, 0))]

    def to_bytes(self) -> bytes:
        """Compact msgpack bytes (a few dozen for a typical user); `from_bytes` reads them back."""
        return _encoder.encode(
            _Wire(
                _FORMAT,
                self.base,
                [
                    (_DIMENSION_CODES[dim], seg, activity.to_bytes(bits))
                    for (dim, seg), bits in self.segments.items()
                ],
                activity.to_bytes(self.explicit_new),
                self.first_active,
                self.first_active_unsigned,
                self.first_seen,
                self.surveys,
                self.last_seen,
                self.partition,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        """The state that `to_bytes` wrote."""
        wire = _decoder.decode(data)
        if wire.format != _FORMAT:
            raise ValueError(f"unknown user state format {wire.format}")
        # This runs for every event when the table lives in RocksDB: skip __init__, reuse segment keys.
        state = cls.__new__(cls)
        state.base = wire.base
        state.segments = {
            _segment_key(dim, seg): int.from_bytes(bits, "little") for dim, seg, bits in wire.segments
        }
        state.explicit_new = int.from_bytes(wire.explicit_new, "little")
        state.first_active = wire.first_active
        state.first_active_unsigned = wire.first_active_unsigned
        state.first_seen = wire.first_seen
        state.surveys = wire.surveys
        state.last_seen = wire.last_seen
        state.partition = wire.partition
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserState):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"UserState({fields})"


class _Wire(msgspec.Struct, array_like=True, gc=False):
    """The serialized form: positional msgpack array; new fields go at the end, with defaults."""

    format: int
    base: int
    # (dimension code, segment value, little-endian bitmap): bitmaps exceed 64 bits, msgpack ints do not.
    segments: list[tuple[int, str, bytes]]
    explicit_new: bytes
    first_active: int | None
    first_active_unsigned: bool
    first_seen: int | None
    surveys: dict[str, SurveyFact] = msgspec.field(default_factory=dict)
    last_seen: int | None = None
    partition: int = -1


def _segment_key(dimension: int, segment: str) -> SegmentKey:
    # Interned keys: decoding allocates no tuple for a segment seen before, and dict lookups hit the
    # identity fast path. Bounded, since segment values are only bounded after folding into `other`.
    known = _KEYS[dimension]
    key = known.get(segment)
    if key is None:
        key = (DIMENSIONS[dimension], segment)
        if len(known) < _MAX_KEYS:
            known[segment] = key
    return key


_KEYS: list[dict[str, SegmentKey]] = [{} for _ in DIMENSIONS]
_MAX_KEYS = 10_000
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)
