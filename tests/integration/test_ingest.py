"""Foundation, end to end: a real broker, a real worker process, valid and invalid input."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from kpimon.agents.config.topics import TopicSpec, ensure_topics
from tests import events
from tests.helpers import free_port, wait_until
from tests.kafka_io import produce, read_all
from tests.security import Access
from tests.workers import running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N_CLICKS, N_SURVEYS = 1000, 200


def valid_clicks(now_ms: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(N_CLICKS):
        user = f"user-{i % 97}"
        segments = (
            {"platform": "ios", "plan": "pro", "signup_ts": "2026-01-01T00:00:00Z"} if i % 3 == 0 else {}
        )
        event = events.click(user_id=user, ts=now_ms - 1000 * (i % 50), event_id=f"c{i}", **segments)
        out.append((user.encode(), events.message(event)))
    return out


def valid_surveys(now_ms: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(N_SURVEYS):
        user = f"user-{i % 53}"
        kind, action = ("nps", "csat")[i % 2], ("shown", "answered", "dismissed")[i % 3]
        score = {"score": i % 11 if kind == "nps" else 1 + i % 5} if action == "answered" else {}
        event = events.survey(
            user_id=user, ts=now_ms - 500, event_id=f"s{i}", survey=kind, action=action, **score
        )
        out.append((user.encode(), events.message(event)))
    return out


def invalid_messages(now_ms: int) -> list[tuple[str, bytes | None, bytes, str]]:
    """150 bad messages of mixed kinds: (topic kind, key, value, expected reason); every value unique."""
    templates: list[tuple[str, str]] = [
        ("clicks", "invalid_json"),
        ("clicks", "not_an_object"),
        ("clicks", "missing_field"),
        ("clicks", "wrong_type"),
        ("clicks", "key_mismatch"),
        ("clicks", "future_timestamp"),
        ("clicks", "too_late"),
        ("surveys", "score_out_of_range"),
        ("surveys", "score_missing"),
        ("surveys", "score_forbidden"),
        ("surveys", "invalid_value"),
        ("surveys", "invalid_timestamp"),
        ("surveys", "not_an_object"),
        ("surveys", "invalid_json"),
        ("clicks", "invalid_json"),  # non-UTF-8
    ]
    out: list[tuple[str, bytes | None, bytes, str]] = []
    for i in range(150):
        kind, reason = templates[i % len(templates)]
        uid = f"bad-{i}"
        click = events.click(user_id=uid, ts=now_ms, event_id=f"x{i}", type="click")
        survey = events.survey(user_id=uid, ts=now_ms, event_id=f"y{i}", score=5)
        key: bytes | None = uid.encode()
        value: bytes
        if reason == "invalid_json" and i % len(templates) == 14:
            value, key = b"\xff\xfe" + str(i).encode() + b"\x80", None
        elif reason == "invalid_json":
            value, key = b"{oops " + str(i).encode(), None
        elif reason == "not_an_object":
            value, key = json.dumps([i, "array"] if kind == "clicks" else i).encode(), None
        elif reason == "missing_field":
            value = json.dumps({k: v for k, v in click.items() if k != "type"}).encode()
        elif reason == "wrong_type":
            value = json.dumps({**click, "type": 12}).encode()
        elif reason == "key_mismatch":
            value, key = json.dumps(click).encode(), b"somebody-else"
        elif reason == "future_timestamp":
            value = json.dumps({**click, "ts": now_ms + 3_600_000}).encode()
        elif reason == "too_late":
            value = json.dumps({**click, "ts": now_ms - 30 * 86_400_000}).encode()
        elif reason == "score_out_of_range":
            value = json.dumps({**survey, "score": 11}).encode()
        elif reason == "score_missing":
            value = json.dumps({k: v for k, v in survey.items() if k != "score"}).encode()
        elif reason == "score_forbidden":
            value = json.dumps({**survey, "action": "shown"}).encode()
        elif reason == "invalid_value":
            value = json.dumps({**survey, "survey": "ces"}).encode()
        else:  # invalid_timestamp
            value = json.dumps({**survey, "ts": "2026-11-24 10:00"}).encode()
        out.append((kind, key, value, reason))
    return out


async def test_worker_counts_valid_and_dead_letters_invalid(
    kafka_access: Access, unique_prefix: str, tmp_path: Path
) -> None:
    """Over PLAINTEXT, SASL_SSL (SCRAM-SHA-512) and mutual TLS alike: the test's clients and the worker
    connect as `kafka_access` says."""
    kafka_bootstrap, options = kafka_access.bootstrap, kafka_access.options
    now_ms = int(time.time() * 1000)
    clicks_topic, surveys_topic, dlq = (
        f"{unique_prefix}{n}" for n in ("clicks", "surveys", "kpimon-dead-letters")
    )
    await ensure_topics(
        kafka_bootstrap, [TopicSpec(clicks_topic, 4), TopicSpec(surveys_topic, 4)], options=options
    )
    bad = invalid_messages(now_ms)
    await produce(
        kafka_bootstrap,
        clicks_topic,
        [*valid_clicks(now_ms), *[(k, v) for t, k, v, _ in bad if t == "clicks"]],
        options,
    )
    await produce(
        kafka_bootstrap,
        surveys_topic,
        [*valid_surveys(now_ms), *[(k, v) for t, k, v, _ in bad if t == "surveys"]],
        options,
    )

    flags = list(kafka_access.flags)
    with running_worker(kafka_bootstrap, unique_prefix, free_port(), tmp_path, flags) as worker:

        def count(outcome: str) -> float:
            samples = worker.samples()
            return sum(
                v
                for (name, labels), v in samples.items()
                if name == "kpimon_events_total" and ("outcome", outcome) in labels
            )

        def settled() -> bool:
            """1,350 events counted and no lag: the worker has processed every message up to the end of
            each partition, so a message counted twice would already show in the counts asserted next."""
            samples = worker.samples()
            lag = sum(v for (name, _), v in samples.items() if name == "kpimon_consumer_lag_messages")
            return count("accepted") + count("rejected") >= 1350 and lag == 0

        await wait_until(settled, 120, 0.5, "1,350 processed events and no consumer lag")
        samples = worker.samples()
        assert count("accepted") == N_CLICKS + N_SURVEYS
        assert count("rejected") == 150
        assert (
            samples[("kpimon_events_total", frozenset({("topic", clicks_topic), ("outcome", "accepted")}))]
            == N_CLICKS
        )
        by_reason = Counter()
        for (name, labels), value in samples.items():
            if name == "kpimon_dead_letters_total":
                by_reason[(dict(labels)["topic"], dict(labels)["reason"])] += int(value)
        expected = Counter((clicks_topic if t == "clicks" else surveys_topic, r) for t, _, _, r in bad)
        assert by_reason == expected

        records = await read_all(kafka_bootstrap, dlq, 150, options=options)
        assert len(records) == 150
        expected_by_value = {v: (t, k, r) for t, k, v, r in bad}
        assert len(expected_by_value) == 150
        for record in records:
            headers = {k: v.decode() for k, v in record.headers}
            kind, key, reason = expected_by_value[record.value]  # the original bytes, untouched
            assert headers["kpimon-reason"] == reason, (record.value[:80], headers)
            assert headers["kpimon-source-topic"] == (clicks_topic if kind == "clicks" else surveys_topic)
            assert int(headers["kpimon-source-partition"]) >= 0
            assert int(headers["kpimon-source-offset"]) >= 0
            assert headers["kpimon-detail"]
            assert record.key == key

        # Still alive and serving.
        assert worker.get("/live")[0] == 200
        assert worker.get("/metrics")[0] == 200
        assert worker.proc.poll() is None
