"""Property: a redacted dead letter holds none of the personal data its message carried, whatever the reason.

For every rejection reason, a message is built that the validator really rejects for that reason, with a
generated personal-looking value (an e-mail address, a name, a phone number, an IP address) in every place a
producer could put it: the key, the user id, the ids and labels, the comment, the properties, an unknown
field's name and value, and the offending value itself (so the validator's detail quotes it). The redacted
copy (key, value, every header) must contain the value in no form.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kpimon.agents.pipeline.deadletters import REDACTED_DETAIL, REDACTED_HEADER, Redactor, dead_letter_headers
from kpimon.streams.validation import Accepted, Kind, Policy, Reason, Rejected, validate

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000
POLICY = Policy(max_message_bytes=4096)

_word = st.from_regex(r"[a-z]{3,10}", fullmatch=True)
_Name = st.from_regex(r"[A-Z][a-z]{2,9} [A-Z][a-z]{2,11}", fullmatch=True)
personal = st.one_of(
    st.builds(
        lambda a, b, d, t: f"{a}.{b}@{d}.{t}", _word, _word, _word, st.sampled_from(["com", "de", "io"])
    ),
    st.emails().filter(lambda e: 6 <= len(e) <= 60),
    _Name,
    st.from_regex(r"\+[1-9][0-9]{1,2} [0-9]{3} [0-9]{6,8}", fullmatch=True),  # a phone number
    st.from_regex(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}", fullmatch=True).filter(lambda ip: len(ip) >= 9),
    st.from_regex(r"[A-Z]{2}[0-9]{2} [0-9]{4} [0-9]{4} [0-9]{4}", fullmatch=True),  # an IBAN
)


def base(kind: Kind, pv: str, other: str) -> dict[str, Any]:
    """A valid message of `kind` with the personal value wherever a producer could put one."""
    common: dict[str, Any] = {
        "event_id": f"e-{pv}",
        "user_id": pv,
        "ts": NOW_MS - 1000,
        "platform": pv[:64],
        "plan": other[:64],
        pv: pv,  # a field the schema does not know: its name is input too
    }
    if kind == "clicks":
        return {**common, "type": pv[:64], "session_id": pv, "properties": {pv: other, "email": pv}}
    return {
        **common,
        "survey": "nps",
        "action": "answered",
        "score": 9,
        "comment": f"I am {pv}, call {other}",
    }


def message(reason: Reason, pv: str, other: str) -> tuple[Kind, bytes | None, bytes | None, Rejected]:
    """(kind, key, value, verdict): a message the validator rejects for `reason`, carrying `pv`."""
    kind: Kind = "clicks" if reason in (Reason.WRONG_TYPE, Reason.INVALID_TIMESTAMP) else "surveys"
    doc = base(kind, pv, other)
    key: bytes | None = pv.encode()
    raw: bytes | None = None
    if reason is Reason.TOO_LARGE:
        doc["comment"] = " ".join([pv] * (POLICY.max_message_bytes // len(pv) + 1))
    elif reason is Reason.INVALID_JSON:
        raw = json.dumps(doc).encode()[:-3] + b", oops"
    elif reason is Reason.NOT_AN_OBJECT:
        raw = json.dumps([pv, doc]).encode()
    elif reason is Reason.MISSING_FIELD:
        del doc["ts"]
    elif reason is Reason.WRONG_TYPE:
        doc["type"] = [pv]
    elif reason is Reason.INVALID_VALUE:
        doc["survey"] = pv  # not nps or csat: the detail quotes it
    elif reason is Reason.INVALID_TIMESTAMP:
        doc["ts"] = pv
    elif reason is Reason.SCORE_MISSING:
        del doc["score"]
    elif reason is Reason.SCORE_FORBIDDEN:
        doc["action"] = "shown"
    elif reason is Reason.SCORE_OUT_OF_RANGE:
        doc["score"] = 11
    elif reason is Reason.KEY_MISMATCH:
        key = other.encode()
    elif reason is Reason.FUTURE_TIMESTAMP:
        doc["ts"] = NOW_MS + DAY_MS
    elif reason is Reason.TOO_LATE:
        doc["ts"] = NOW_MS - 30 * DAY_MS
    value = raw if raw is not None else json.dumps(doc).encode()
    if reason is Reason.INTERNAL_ERROR:
        # Not a validation result: a bug while processing a valid event; its detail is the exception text.
        assert isinstance(validate(kind, key, value, NOW_MS, POLICY), Accepted)
        return kind, key, value, Rejected(Reason.INTERNAL_ERROR, f"KeyError: {pv!r}")
    verdict = validate(kind, key, value, NOW_MS, POLICY)
    assert isinstance(verdict, Rejected) and verdict.reason is reason, (reason, verdict)
    return kind, key, value, verdict


def forms(pv: str) -> list[bytes]:
    """The ways a value could appear in bytes: raw UTF-8 and as the inside of a JSON string."""
    return [pv.encode(), msgspec.json.encode(pv)[1:-1], json.dumps(pv)[1:-1].encode()]


@pytest.mark.parametrize("reason", list(Reason), ids=str)
@settings(max_examples=15, deadline=None)
@given(pv=personal, other=personal)
def test_no_personal_value_survives_redaction(reason: Reason, pv: str, other: str) -> None:
    assume(pv != other)  # two people: key_mismatch needs a key that is not the user id
    kind, key, value, verdict = message(reason, pv, other)
    headers = dead_letter_headers(verdict, kind, 3, 17, NOW_MS)
    new_key, new_value, new_headers = Redactor(b"k3y").redact(key, value, headers)
    blob = b"\n".join([new_key or b"", new_value or b"", *(n.encode() + b"=" + v for n, v in new_headers)])
    for secret in (pv, other):
        for form in forms(secret):
            assert form not in blob, (reason, secret, blob[:400])
    names = [n for n, _ in new_headers]
    assert dict(new_headers)["kpimon-reason"] == reason.value.encode()
    assert dict(new_headers)["kpimon-detail"] == REDACTED_DETAIL[reason].encode()
    assert names.count(REDACTED_HEADER) == 1


def test_the_unredacted_dead_letter_does_hold_them() -> None:
    """The builder is not vacuous: without redaction every message carries the value, and each detail
    that quotes input (invalid_value, internal_error) does too."""
    pv, other = "dave.seg@example.com", "Zed Quux"
    for reason in Reason:
        _, key, value, _ = message(reason, pv, other)
        assert pv.encode() in (key or b"") + (value or b""), reason
    for reason in (Reason.INVALID_VALUE, Reason.INTERNAL_ERROR):
        assert pv in message(reason, pv, other)[3].detail, reason


def test_closed_set_values_stay_readable() -> None:
    value = json.dumps(
        {
            "user_id": "u",
            "ts": "2026-01-01T00:00:00+01:00",
            "signup_ts": 1_700_000_000_000,
            "survey": "csat",
            "action": "answered",
            "score": 42,
            "platform": None,
        }
    ).encode()
    _, redacted, _ = Redactor(b"k3y").redact(b"u", value, [])
    document = json.loads(redacted or b"")
    assert {k: v for k, v in document.items() if k != "user_id"} == {
        "ts": "2026-01-01T00:00:00+01:00",
        "signup_ts": 1_700_000_000_000,
        "survey": "csat",
        "action": "answered",
        "score": 42,
        "platform": None,
    }
    # A long number is not a score anyone needs to read; it may be a phone number.
    _, redacted, _ = Redactor(b"k3y").redact(None, b'{"score": 4477009001234}', [])
    assert json.loads(redacted or b"")["score"].startswith("hmac-sha256:")
