"""Property: whatever the bytes, validation answers Accepted or Rejected with a reason; it never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpimon.streams.validation import Accepted, Policy, Reason, Rejected, validate
from tests.hostile import NOW_MS, hostile_values

#: A small size limit, so the generated huge strings and deep nestings also exercise `too_large`.
POLICY = Policy(max_lateness_days=30, max_message_bytes=4096)

keys = st.one_of(st.none(), st.sampled_from([b"u1", b"u2", b"\xff\xfe", b""]), st.binary(max_size=20))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind_and_value=st.sampled_from(["clicks", "surveys"]).flatmap(
        lambda kind: st.tuples(st.just(kind), hostile_values(kind))
    ),
    key=keys,
)
def test_every_message_is_accepted_or_rejected_with_a_reason(
    kind_and_value: tuple[str, bytes], key: bytes | None
) -> None:
    kind, value = kind_and_value
    verdict = validate(kind, key, value, NOW_MS, POLICY)  # type: ignore[arg-type]
    assert isinstance(verdict, Accepted | Rejected)
    if isinstance(verdict, Rejected):
        assert verdict.reason in set(Reason) - {Reason.INTERNAL_ERROR}
        assert verdict.detail
        if len(value) > POLICY.max_message_bytes:
            assert verdict.reason == Reason.TOO_LARGE
    else:
        # An accepted event is one the engine can place: a day within the lateness bound, not in the future.
        assert len(value) <= POLICY.max_message_bytes
        assert verdict.ts_ms <= NOW_MS + POLICY.max_future_ms
        assert verdict.day >= NOW_MS // 86_400_000 - POLICY.max_lateness_days
        assert key is None or key.decode() == verdict.event.user_id
