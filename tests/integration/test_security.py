"""Security, end to end (docs/security.md): refused clients fail fast with one clear line; a worker with web
TLS and basic auth serves /metrics only to who knows the password; user ids stay out of metrics, INFO logs,
kpimon-kpis and (with redaction) the dead letters.

Delivery over SASL_SSL and mutual TLS is tests/integration/test_ingest.py, parametrized by `kafka_access`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from kpimon.agents.config.topics import TopicSpec, ensure_topics
from kpimon.agents.pipeline.core import ENV as CORE_ENV
from kpimon.agents.pipeline.core import CoreName
from tests import events as factory
from tests.certs import make_pki
from tests.helpers import KPIMON, free_port, wait_until
from tests.integration.test_ingest import produce, read_all
from tests.security import SCRAM_PASSWORD, SCRAM_USER, Access, SecureKafka
from tests.workers import core_params, running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WEB_USER, WEB_PASSWORD = "prometheus", "web-Pa55-for-tests"
REDACT_KEY = "dead-letter-hmac-key-for-tests"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")}


# --- refused clients ---------------------------------------------------------------------------------------


async def test_a_client_without_credentials_is_refused(secure_kafka: SecureKafka) -> None:
    for bootstrap in (secure_kafka.broker.sasl_ssl_bootstrap, secure_kafka.broker.ssl_bootstrap):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        with pytest.raises(KafkaConnectionError):
            await producer.start()
        await producer.stop()


REFUSALS = {
    "no credentials": (
        "sasl",
        [],
        "with PLAINTEXT: the broker closed the connection during the handshake",
    ),
    "wrong password": (
        "sasl",
        ["--security-protocol=SASL_SSL", f"--sasl-username={SCRAM_USER}", "--sasl-password-file={wrong}"],
        f"with SASL_SSL (SCRAM-SHA-512 as {SCRAM_USER}): SASL authentication failed",
    ),
    "unknown user": (
        "sasl",
        ["--security-protocol=SASL_SSL", "--sasl-username=nobody", "--sasl-password-file={password}"],
        "SASL authentication failed",
    ),
    "mtls without a client certificate": (
        "ssl",
        ["--security-protocol=SSL"],
        "with SSL: the broker refused the TLS handshake",
    ),
    "untrusted broker certificate": (
        "sasl",
        [
            "--security-protocol=SASL_SSL",
            f"--sasl-username={SCRAM_USER}",
            "--sasl-password-file={password}",
            "--ssl-ca-file={other_ca}",
        ],
        "TLS certificate verification failed",
    ),
}


@pytest.mark.parametrize("command", ["worker", "kpis", "simulate"])
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_access_fails_fast_with_one_clear_line(
    secure_kafka: SecureKafka, tmp_path: Path, case: str, command: str
) -> None:
    listener, flags, expected = REFUSALS[case]
    broker = secure_kafka.broker
    bootstrap = broker.sasl_ssl_bootstrap if listener == "sasl" else broker.ssl_bootstrap
    files = {
        "wrong": secure_kafka.wrong_password_file,
        "password": secure_kafka.password_file,
        "other_ca": secure_kafka.pki.other_ca,
    }
    # The CA is right unless the case says otherwise.
    args = [flag.format(**files) for flag in flags]
    if flags and not any(a.startswith("--ssl-ca-file") for a in args):
        args.append(f"--ssl-ca-file={secure_kafka.pki.ca}")
    extra = {
        "worker": ["--data-dir", str(tmp_path / "state"), "--web-port", str(free_port())],
        "simulate": ["--users", "5", "--days", "1"],
    }.get(command, [])
    started = time.monotonic()
    result = subprocess.run(
        [KPIMON, command, "--broker", bootstrap, *args, *extra],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert elapsed < 30, f"took {elapsed:.1f} s"
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert errors[0].startswith(f"Error: cannot authenticate to Kafka at {bootstrap} "), output
    assert expected in errors[0], output
    assert "Traceback" not in output
    assert SCRAM_PASSWORD not in output


def test_replay_and_kpis_connect_over_each_protocol(
    kafka_access: Access, unique_prefix: str, tmp_path: Path
) -> None:
    lines = [json.dumps(factory.click(user_id=f"u{i}", ts=1, type="x")) for i in range(10)]
    (tmp_path / "clicks.jsonl").write_text("\n".join(lines) + "\n")
    common = ["--broker", kafka_access.bootstrap, "--topic-prefix", unique_prefix, *kafka_access.flags]

    def kpimon(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KPIMON, *args, *common], env=clean_env(), capture_output=True, text=True, timeout=60, check=False
        )

    replayed = kpimon("replay", "--clicks", str(tmp_path / "clicks.jsonl"), "--quiet")
    assert replayed.returncode == 0, replayed.stderr
    assert f"sent 10 messages to {unique_prefix}clicks" in replayed.stderr
    records = asyncio.run(
        read_all(kafka_access.bootstrap, f"{unique_prefix}clicks", 10, options=kafka_access.options)
    )
    assert sorted(r.value for r in records) == sorted(line.encode() for line in lines)
    # Authenticated, it gets as far as the missing output topic.
    read = kpimon("kpis")
    assert read.returncode == 1 and f"topic {unique_prefix}kpimon-kpis does not exist" in read.stderr, (
        read.stderr
    )


# --- a secured worker: web TLS and basic auth, no user ids where they do not belong -------------------------


def events(run: str, now_ms: int) -> tuple[list[str], list[tuple[str, bytes | None, bytes]]]:
    """User ids unique to this run, and (kind, key, value) messages of them, valid and invalid."""
    users = [f"pii-{run}-{i:03d}" for i in range(40)]
    out: list[tuple[str, bytes | None, bytes]] = []
    for i, user in enumerate(users):
        click = factory.click(user_id=user, ts=now_ms - 1000, event_id=f"c-{run}-{i}", platform="ios")
        survey = factory.survey(
            user_id=user,
            ts=now_ms - 1000,
            event_id=f"s-{run}-{i}",
            score=i % 11,
            comment=f"call me, I am {user}",
        )
        out.append(("clicks", user.encode(), factory.message(click)))
        out.append(("surveys", user.encode(), factory.message(survey)))
    # Invalid ones: they carry user ids into the dead letters.
    bad_survey = {**json.loads(out[1][2]), "score": 42}
    out.append(("surveys", users[0].encode(), json.dumps(bad_survey).encode()))  # score_out_of_range
    mismatch = {**json.loads(out[2][2]), "event_id": f"m-{run}"}
    out.append(("clicks", users[2].encode(), json.dumps({**mismatch, "user_id": users[3]}).encode()))
    out.append(("clicks", users[4].encode(), f'{{"user_id": "{users[4]}", oops'.encode()))  # invalid_json
    out.append(("clicks", None, json.dumps([users[5], "array"]).encode()))  # not_an_object
    return users, out


def pseudonym(user_id: str) -> str:
    return "hmac-sha256:" + hmac.new(REDACT_KEY.encode(), user_id.encode(), hashlib.sha256).hexdigest()


# Both cores in `make test` (about 15 s each): dead letters and segment folding go through the batch core.
@pytest.mark.parametrize("core_name", core_params())
async def test_secured_worker_keeps_user_ids_private(
    kafka_bootstrap: str, secure_kafka: SecureKafka, unique_prefix: str, tmp_path: Path, core_name: CoreName
) -> None:
    pki = secure_kafka.pki
    password_file = tmp_path / "web-password"
    password_file.write_text(WEB_PASSWORD + "\n")
    key_file = tmp_path / "redact-key"
    key_file.write_text(REDACT_KEY + "\n")
    run = uuid.uuid4().hex[:8]
    users, messages = events(run, int(time.time() * 1000))
    clicks, surveys = f"{unique_prefix}clicks", f"{unique_prefix}surveys"
    await ensure_topics(kafka_bootstrap, [TopicSpec(clicks, 4), TopicSpec(surveys, 4)])
    for kind, topic in (("clicks", clicks), ("surveys", surveys)):
        await produce(kafka_bootstrap, topic, [(k, v) for t, k, v in messages if t == kind])

    flags = [
        "--log-level=info",
        f"--web-tls-cert-file={pki.server_cert}",
        f"--web-tls-key-file={pki.server_key}",
        f"--web-auth-user={WEB_USER}",
        f"--web-auth-password-file={password_file}",
        "--dead-letter-redact",
        f"--dead-letter-redact-key-file={key_file}",
    ]
    port = free_port()
    auth = (WEB_USER, WEB_PASSWORD)
    env = {CORE_ENV: core_name}
    with running_worker(
        kafka_bootstrap, unique_prefix, port, tmp_path, flags, env, tls_ca=pki.ca, auth=auth
    ) as worker:

        def processed() -> float:
            samples = worker.samples()
            return sum(v for (name, _), v in samples.items() if name == "kpimon_events_total")

        await wait_until(lambda: processed() >= len(messages), 90, 0.5, "every message processed")

        # Web: TLS only, basic auth on /metrics and /ready, /live open for probes.
        assert worker.get("/metrics", auth=False)[0] == 401
        assert worker.get("/metrics", auth=(WEB_USER, "wrong"))[0] == 401
        assert worker.get("/metrics", auth=("someone", WEB_PASSWORD))[0] == 401
        assert worker.get("/ready", auth=False)[0] == 401
        assert worker.get("/live", auth=False) == (200, b'{"live":true}')
        status, metrics = worker.get("/metrics")
        assert status == 200 and b"kpimon_events_total" in metrics
        with pytest.raises((OSError, http.client.HTTPException)):  # an HTTPS server: plain HTTP fails
            urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=5)

        # kpimon-kpis: wait for the published records, then look for user ids in them.
        def kpis_output() -> str:
            result = subprocess.run(
                [KPIMON, "kpis", "--broker", kafka_bootstrap, "--topic-prefix", unique_prefix],
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            return result.stdout if result.returncode == 0 else ""

        await wait_until(lambda: '"active_users"' in kpis_output(), 60, 1, "KPIs published")
        published = kpis_output()

        # kpimon top reads the secured /metrics with the same user and password file, and the CA.
        def top_once(*auth: str) -> str:
            result = subprocess.run(
                [
                    *(KPIMON, "top", "--once", "--plain", "--broker", kafka_bootstrap),
                    *("--topic-prefix", unique_prefix, "--metrics-url", f"{worker.url}/metrics"),
                    f"--metrics-ca-file={pki.ca}",
                    *auth,
                ],
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            return result.stdout

        assert "metrics unreachable" in top_once()
        viewed = top_once(f"--web-auth-user={WEB_USER}", f"--web-auth-password-file={password_file}")
        assert "events/s" in viewed and "metrics unreachable" not in viewed

        # Dead letters: pseudonymised, without comments; bad JSON and non-objects dropped to headers only.
        dead = await read_all(kafka_bootstrap, f"{unique_prefix}kpimon-dead-letters", 4)
    log = worker.log_path.read_text(errors="replace")
    assert " INFO " in log or "[INFO]" in log, "the worker logged at INFO"

    for where, text in (("/metrics", metrics.decode()), ("worker log", log), ("kpimon kpis", published)):
        leaked = [user for user in users if user in text]
        assert not leaked, f"user ids in {where}: {leaked[:3]}"
        assert f"pii-{run}" not in text, where

    by_reason: dict[str, Any] = {}
    for record in dead:
        headers = dict(record.headers)
        by_reason[headers["kpimon-reason"].decode()] = record
        blob = (record.key or b"") + record.value + b"".join(v for _, v in record.headers)
        assert f"pii-{run}".encode() not in blob, (record.key, record.value, record.headers)
    assert set(by_reason) == {"score_out_of_range", "key_mismatch", "invalid_json", "not_an_object"}
    out_of_range = by_reason["score_out_of_range"]
    document = json.loads(out_of_range.value)
    assert document["user_id"] == pseudonym(users[0]) and out_of_range.key == pseudonym(users[0]).encode()
    assert "comment" not in document and document["score"] == 42
    assert dict(out_of_range.headers)["kpimon-redacted"] == b"pseudonymised"
    mismatch = by_reason["key_mismatch"]
    assert json.loads(mismatch.value)["user_id"] == pseudonym(users[3])
    assert mismatch.key == pseudonym(users[2]).encode()
    for reason in ("invalid_json", "not_an_object"):
        record = by_reason[reason]
        assert record.value == b"", reason
        assert dict(record.headers)["kpimon-redacted"] == b"payload-dropped"
        assert dict(record.headers)["kpimon-source-topic"] == clicks.encode()
    assert by_reason["invalid_json"].key == pseudonym(users[4]).encode()


# --- the web port, attacked (issue #21) --------------------------------------------------------------------

#: Faust's built-in views and paths next to them: none may exist on a kpimon worker.
FAUST_PATHS = (
    "/",
    "/router/",
    "/router/topics",
    "/table/",
    "/table/user-state/",
    "/graph/",
    "/stats/",
    "/assignment/",
    "/performance/",
)
WEB_TIMEOUT = 2.0


def accepted_labels(topic: str) -> frozenset[tuple[str, str]]:
    return frozenset({("topic", topic), ("outcome", "accepted")})


def tls_socket(port: int, ca: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", port), timeout=WEB_TIMEOUT + 10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def seconds_until_closed(sock: socket.socket) -> float:
    """Read until the server closes the connection; the seconds that took (fails on the socket timeout)."""
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError, ssl.SSLEOFError):
        while sock.recv(1024):
            pass
    return time.monotonic() - started


async def test_the_worker_web_port_serves_only_kpimon_routes_and_cuts_off_slow_clients(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    password_file = tmp_path / "web-password"
    password_file.write_text(WEB_PASSWORD + "\n")
    user = f"dave.{uuid.uuid4().hex[:8]}@example.com"  # a user id and a segment value that are personal
    clicks = f"{unique_prefix}clicks"
    await ensure_topics(kafka_bootstrap, [TopicSpec(clicks, 4), TopicSpec(f"{unique_prefix}surveys", 4)])
    click = {"event_id": "c1", "user_id": user, "ts": int(time.time() * 1000), "type": "view", "plan": user}
    await produce(kafka_bootstrap, clicks, [(user.encode(), json.dumps(click).encode())])
    flags = [
        *(f"--web-tls-cert-file={pki.server_cert}", f"--web-tls-key-file={pki.server_key}"),
        *(f"--web-auth-user={WEB_USER}", f"--web-auth-password-file={password_file}"),
        f"--web-timeout={WEB_TIMEOUT}",
        "--store=rocksdb",  # where Faust's /table view answered 500 for a known user and 404 otherwise
    ]
    auth = (WEB_USER, WEB_PASSWORD)
    port = free_port()
    with running_worker(
        kafka_bootstrap, unique_prefix, port, tmp_path, flags, tls_ca=pki.ca, auth=auth
    ) as worker:
        await wait_until(
            lambda: worker.samples().get(("kpimon_events_total", accepted_labels(clicks)), 0) >= 1,
            60,
            0.5,
            "the click processed",
        )
        # Every path but /live: 401 without credentials; with them, Faust's views do not exist.
        for path in (*FAUST_PATHS, f"/table/user-state/{user}/", "/metrics", "/ready"):
            assert worker.get(path, auth=False)[0] == 401, path
        for path in (*FAUST_PATHS, f"/table/user-state/{user}/", "/table/user-state/nobody@example.com/"):
            assert worker.get(path)[0] == 404, path
        assert worker.get("/live", auth=False) == (200, b'{"live":true}')

        # The personal segment value folded into `other` and was counted; it is in no label.
        status, metrics = worker.get("/metrics")
        assert status == 200 and user.encode() not in metrics
        samples = worker.samples()
        folded = (
            "kpimon_segment_values_folded_total",
            frozenset({("dimension", "plan"), ("reason", "personal")}),
        )
        assert samples.get(folded, 0) >= 1

        # A malformed header carrying valid credentials: 400, and one WARNING without its bytes.
        token = base64.b64encode(f"{WEB_USER}:{WEB_PASSWORD}".encode()).decode()
        for _ in range(3):
            with tls_socket(port, pki.ca) as sock:
                sock.sendall(
                    f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\x01\r\n\r\n".encode()
                )
                assert sock.recv(64).startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))

        # Slow clients over TLS: idle after the handshake, and headers never finished.
        with tls_socket(port, pki.ca) as sock:
            assert seconds_until_closed(sock) < WEB_TIMEOUT + 3
        with tls_socket(port, pki.ca) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            assert seconds_until_closed(sock) < WEB_TIMEOUT + 3
        assert worker.get("/live", auth=False)[0] == 200  # and the server still serves

    log = worker.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if "malformed HTTP request" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], lines  # three bad requests, one line a minute
    for secret in (token, WEB_PASSWORD, user):
        assert secret not in log, secret
    assert "Traceback" not in log
