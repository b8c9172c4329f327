"""LocalKafka's stop and kill without Kafka: a stand-in process that `LocalKafka` takes for its broker (its
command line names `kafka.Kafka` and the run dir's server.properties, as the JVM's does)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpimon.agents.devtools.localkafka import LocalKafka
from tests.helpers import free_port


def ended(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the stand-in has exited (a zombie or already reaped by LocalKafka: both count)."""
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.fixture
def kafka(tmp_path: Path) -> LocalKafka:
    return LocalKafka(port=free_port(), home=tmp_path / "run")


@pytest.fixture
def stand_ins() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:  # never leave one behind, whatever the test did
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stand_in(
    kafka: LocalKafka, started: list[subprocess.Popen[bytes]], *, ignores_sigterm: bool
) -> subprocess.Popen[bytes]:
    """Start a broker stand-in for `kafka`'s run dir and write its pid file."""
    script = "import signal, sys, time\n"
    if ignores_sigterm:
        script += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    script += "print('up', flush=True)\ntime.sleep(120)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "kafka.Kafka", str(kafka.properties_file)], stdout=subprocess.PIPE
    )
    started.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # its signal handler is set
    kafka.run_dir.mkdir(parents=True, exist_ok=True)
    kafka.pid_file.write_text(f"{proc.pid}\n")
    assert kafka.pid() == proc.pid
    return proc


def test_stop_ends_a_broker_that_exits_on_sigterm(
    kafka: LocalKafka, stand_ins: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    proc = stand_in(kafka, stand_ins, ignores_sigterm=False)
    with caplog.at_level(logging.INFO, logger="kpimon.agents.devtools.localkafka"):
        assert kafka.stop(timeout=30)
    assert ended(proc) and not kafka.pid_file.exists()
    assert "did not stop" not in caplog.text


def test_stop_kills_a_broker_that_ignores_sigterm_after_the_timeout(
    kafka: LocalKafka, stand_ins: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    proc = stand_in(kafka, stand_ins, ignores_sigterm=True)
    with caplog.at_level(logging.INFO, logger="kpimon.agents.devtools.localkafka"):
        assert kafka.stop(timeout=0.5)
    assert ended(proc) and not kafka.pid_file.exists()
    assert "the broker did not stop within 0 s; killing it" in caplog.text


def test_kill_does_not_wait_for_a_clean_shutdown(
    kafka: LocalKafka, stand_ins: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    proc = stand_in(kafka, stand_ins, ignores_sigterm=True)  # SIGTERM would not end it: SIGKILL does
    with caplog.at_level(logging.INFO, logger="kpimon.agents.devtools.localkafka"):
        assert kafka.kill()
    assert ended(proc) and not kafka.pid_file.exists()
    assert "killing the Kafka broker" in caplog.text and "did not stop" not in caplog.text


def test_without_a_broker_stop_and_kill_say_so(kafka: LocalKafka) -> None:
    kafka.run_dir.mkdir(parents=True)
    kafka.pid_file.write_text("999999999\n")  # stale: no such process
    assert not kafka.kill()
    assert not kafka.stop()
    assert not kafka.pid_file.exists()  # stop removes a stale pid file
