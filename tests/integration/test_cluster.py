"""A three-broker cluster that loses a broker (issue #19): nothing lost, nothing counted twice, no stop.

One local KRaft cluster of three nodes (`LocalCluster`, what `kpimon kafka start --brokers 3` runs) is shared
by the module. Each test runs two workers on it, replays the first half of a simulated history, and once a
third of the history is processed kills one broker with SIGKILL: the one leading most partitions of the
test's topics, or the consumer group's coordinator. The second half is replayed while that broker is down;
it stays down 30 s and is started again. Then `kpimon-kpis` must equal `kpimon reference`, every rejected
line must be in the dead-letter topic, the gauges must match, and neither worker may have stopped. The
recovery figures are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from kpimon.agents.config.preflight import KafkaHandshakeError, check_access
from kpimon.agents.config.settings import Settings, default_home
from kpimon.agents.devtools.localkafka import LocalCluster
from kpimon.reference.compare import compare
from kpimon.streams.output import KpiRecord
from tests.helpers import KPIMON, free_port
from tests.pipeline import (
    WEEK_LATENESS,
    History,
    check_gauges,
    processed,
    read_kpis,
    replay,
    replay_args,
    wait_for_equality,
)
from tests.workers import WorkerProcess, running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

# The simulated week of tests/integration/test_reliability.py too (tests/pipeline.py): about 13,000
# messages, 48 of them invalid.
LATENESS = WEEK_LATENESS
PARTITIONS = 4
#: How long the killed broker stays away.
DOWN_SECONDS = 30
#: kpimon-kpis equals the reference this soon after the broker is back (a busy 2-core machine).
EQUALITY_TIMEOUT = 240
#: Partitions of these topics have their leaders counted to pick the broker that leads most.
LED_TOPICS = ("clicks", "surveys", "kpimon-rekeyed", "kpimon-partials", "kpimon-kpis", "kpimon-dead-letters")


def kafka_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`kpimon kafka ...`, the real command."""
    return subprocess.run(
        [KPIMON, "kafka", *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three local KRaft nodes (broker and controller each) for the module, started and stopped by the CLI.

    Its own KPIMON_HOME (run dirs), the machine's jar cache. The nodes are reached as a `LocalCluster` on the
    same run dir, to kill and restart one.
    """
    home = tmp_path_factory.mktemp("cluster-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")} | {"KPIMON_HOME": str(home)}
    port = str(free_port())
    where = ["--port", port]
    cluster = LocalCluster(size=3, port=int(port), home=home / "kafka" / f"run-{port}")
    try:
        started = kafka_cli(
            "start",
            *where,
            "--brokers",
            "3",
            "--cache-dir",
            str(default_home() / "cache"),
            "--timeout",
            "240",
            env=env,
        )
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines()[-1] == cluster.bootstrap
        assert len(cluster.bootstrap.split(",")) == 3
        status = kafka_cli("status", *where, env=env)
        assert status.returncode == 0 and status.stdout.splitlines()[-1] == f"running on {cluster.bootstrap}"
        yield cluster
        stopped = kafka_cli("stop", *where, env=env)
        assert stopped.returncode == 0 and stopped.stdout.strip() == f"stopped {cluster.bootstrap}"
        status = kafka_cli("status", *where, env=env)
        assert status.returncode == 1 and status.stdout.splitlines()[-1] == "not running", status.stdout
    finally:
        cluster.stop(timeout=10)  # never leave a node behind


@pytest.fixture
def history(week_history: History) -> History:
    """The session's simulated week (tests/integration/conftest.py)."""
    return week_history


def halves(history: History, out: Path) -> tuple[History, History]:
    """The history's files cut in two at their middle lines: replayed before and during the outage."""
    out.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, Path]] = [{}, {}]
    for name, path in (("clicks", history.clicks), ("surveys", history.surveys)):
        lines = path.read_bytes().splitlines(keepends=True)
        middle = len(lines) // 2
        for index, chunk in enumerate((lines[:middle], lines[middle:])):
            part = out / f"{name}-{index}.jsonl"
            part.write_bytes(b"".join(chunk))
            parts[index][name] = part
    return replace(history, **parts[0]), replace(history, **parts[1])


def options() -> list[str]:
    """Worker flags: the backfill's lateness bound and a short session timeout."""
    return [
        *("--partitions", str(PARTITIONS), "--max-lateness-days", str(LATENESS)),
        *("--session-timeout", "10"),
    ]


def wait_for(
    predicate: Callable[[], bool], timeout: float, message: str, workers: list[WorkerProcess]
) -> None:
    """Poll `predicate` until true; fail with a worker's log if one stopped, or when time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for worker in workers:
            assert worker.proc.poll() is None, f"a worker stopped by itself:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"{message} not true after {timeout} s"
        time.sleep(0.3)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def describe(bootstrap: str, topics: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Topic -> its partitions as the cluster's metadata describes them (leader, replicas, isr)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {d["topic"]: d["partitions"] for d in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def kpimon_topics(bootstrap: str, prefix: str) -> list[str]:
    """Every topic of the test: the prefixed ones and those named after its app id."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()


async def min_insync(bootstrap: str, topics: list[str]) -> dict[str, str]:
    """Topic -> its min.insync.replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None}) for topic in topics
        ]
        found: dict[str, str] = {}
        for response in await admin.describe_configs(resources):
            # (error code, error message, resource type, name, [(config name, value, ...), ...])
            for resource in response.resources:
                for entry in resource[4]:
                    if entry[0] == "min.insync.replicas":
                        found[resource[3]] = entry[1]
        return found
    finally:
        await admin.close()


async def coordinator(bootstrap: str, group: str) -> int:
    """The node coordinating a consumer group (where its members heartbeat and commit)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return int(await admin.find_coordinator(group))
    finally:
        await admin.close()


async def read_dead_letters(bootstrap: str, topic: str) -> list[tuple[str, str, str]]:
    """(source topic, partition, offset) of every dead letter in the topic, duplicates included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + 60
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, "the dead-letter topic could not be read to its end"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    found.append(
                        (
                            headers["kpimon-source-topic"],
                            headers["kpimon-source-partition"],
                            headers["kpimon-source-offset"],
                        )
                    )
        return found
    finally:
        await consumer.stop()


def equal_to(expected: list[KpiRecord], bootstrap: str, prefix: str, tmp: Path) -> bool:
    """Whether kpimon-kpis equals the reference now (False too while `kpimon kpis` cannot read it)."""
    try:
        return not compare(expected, read_kpis(bootstrap, prefix, tmp))
    except AssertionError:
        return False


def leaders(described: dict[str, list[dict[str, Any]]]) -> Counter[int]:
    """How many partitions each broker leads."""
    return Counter(p["leader"] for partitions in described.values() for p in partitions)


def closing_listener() -> tuple[socket.socket, threading.Thread]:
    """A port that accepts connections and closes them at once, like a broker killed mid-handshake."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


async def test_a_broker_closing_the_handshake_is_skipped_for_the_next(kafka_bootstrap: str) -> None:
    """The first bootstrap broker dying in the pre-flight's handshake is not taken for a wrong protocol."""
    server, _ = closing_listener()
    try:
        dying = f"127.0.0.1:{server.getsockname()[1]}"
        await check_access(Settings(broker=f"{dying},{kafka_bootstrap}"), timeout=10)
        # Alone, it is still the clear error it was.
        with pytest.raises(KafkaHandshakeError, match="closed the connection during the handshake"):
            await check_access(Settings(broker=dying), timeout=10)
    finally:
        server.close()


@pytest.mark.parametrize("victim", ["most-leaders", "group-coordinator"])
def test_a_broker_of_three_killed_mid_replay_loses_nothing(
    cluster: LocalCluster, unique_prefix: str, tmp_path: Path, history: History, victim: str
) -> None:
    bootstrap = cluster.bootstrap
    first, second = halves(history, tmp_path / "halves")
    app_id = f"{unique_prefix}app"
    with ExitStack() as stack:
        workers = [
            stack.enter_context(
                running_worker(bootstrap, unique_prefix, free_port(), tmp_path / name, options())
            )
            for name in ("w0", "w1")
        ]
        # Every topic kpimon created is replicated: 3 replicas, min.insync.replicas 2.
        topics = run(kpimon_topics(bootstrap, unique_prefix))
        described = run(describe(bootstrap, topics))
        assert f"{app_id}-__assignor-__leader" in topics and f"{unique_prefix}kpimon-kpis" in topics
        assert {t: {len(p["replicas"]) for p in ps} for t, ps in described.items()} == {
            t: {3} for t in topics
        }
        assert run(min_insync(bootstrap, topics)) == dict.fromkeys(topics, "2")

        replay(first, bootstrap, unique_prefix, PARTITIONS)
        wait_for(lambda: processed(workers) >= history.messages / 3, 180, "a third processed", workers)
        led = leaders(run(describe(bootstrap, [unique_prefix + t for t in LED_TOPICS])))
        group_coordinator = run(coordinator(bootstrap, app_id))
        node_id = led.most_common(1)[0][0] if victim == "most-leaders" else group_coordinator
        node = cluster.node(node_id)
        roles = f"leader of {led[node_id]} of {sum(led.values())} partitions" + (
            ", the group coordinator" if node_id == group_coordinator else ""
        )
        killed = time.monotonic()
        assert node.kill()
        # The second half goes to the two brokers left (min.insync.replicas 2 is still met).
        replayer = subprocess.Popen(
            replay_args(second, bootstrap, unique_prefix, PARTITIONS),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, stderr = replayer.communicate(timeout=DOWN_SECONDS + 120)
        assert replayer.returncode == 0, stderr.decode()[-3000:]
        replay_end = time.monotonic()
        replay_took = replay_end - killed
        # Polled from the end of the replay: the broker is started again DOWN_SECONDS after the kill, in a
        # thread (its JVM takes long on a busy machine), so the figure is kpimon's, not the broker's start.
        back: list[float] = []

        def restart() -> None:
            node.start(timeout=180)
            back.append(time.monotonic())

        restarter = threading.Thread(target=restart, daemon=True)
        settled: float | None = None
        settled_down = False
        deadline = replay_end + DOWN_SECONDS + EQUALITY_TIMEOUT
        while settled is None or restarter.is_alive() or not restarter.ident:
            if not restarter.ident and time.monotonic() >= killed + DOWN_SECONDS:
                restarter.start()
            if settled is None and equal_to(history.expected, bootstrap, unique_prefix, tmp_path):
                settled, settled_down = time.monotonic(), not back
            for worker in workers:
                assert worker.proc.poll() is None, f"a worker stopped by itself:\n{worker.log_tail()}"
            assert time.monotonic() < deadline, "kpimon-kpis did not equal the reference in time"
            time.sleep(1)
        restarter.join()
        assert back and settled is not None, "the broker did not start again"
        actual = wait_for_equality(bootstrap, unique_prefix, tmp_path, history.expected, 30)
        settled_end = settled - replay_end
        settled_back = max(settled - back[0], 0.0)

        def healed() -> bool:
            partitions = run(describe(bootstrap, topics)).values()
            return all(len(p["isr"]) == 3 for ps in partitions for p in ps)

        wait_for(healed, 120, "every replica back in sync", workers)
        in_sync = time.monotonic() - back[0]
        letters = run(read_dead_letters(bootstrap, f"{unique_prefix}kpimon-dead-letters"))
        when = (
            "before the broker was back"
            if settled_down
            else f"{settled_back:.1f} s after the broker was back"
        )
        print(
            f"\nbroker {node_id} of 3 ({roles}) killed with SIGKILL after a third of the history was "
            f"processed, down {back[0] - killed:.0f} s (started again after {DOWN_SECONDS} s); the second "
            f"half replayed meanwhile in {replay_took:.1f} s. kpimon-kpis equal to the reference "
            f"{settled_end:.1f} s after the replay ended, {when}; all replicas in sync {in_sync:.1f} s after "
            f"the broker was back. Dead letters: {len(set(letters))} distinct of {history.rejected} rejected "
            f"lines, {len(letters) - len(set(letters))} written twice."
        )
        # Nothing lost, nothing counted twice: equal to the reference (above), and every rejected line is a
        # dead letter (at least once: docs/output.md).
        assert len(set(letters)) == history.rejected, (len(set(letters)), history.rejected)
        check_gauges(workers, actual)
        # The workers never stopped, and reached Kafka throughout (two brokers answer).
        for worker in workers:
            assert worker.proc.poll() is None, worker.log_tail()
            assert worker.get("/live")[0] == 200
            samples = worker.samples()
            assert samples.get(("kpimon_kafka_outages_total", frozenset())) == 0, worker.log_tail()
        assert all(worker.stop(signal.SIGTERM) == 0 for worker in workers)
