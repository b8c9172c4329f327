"""The local Kafka launcher: pure helpers, clear errors, a real broker and the `kpimon kafka` CLI."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from kpimon.agents.config.settings import default_home
from kpimon.agents.config.topics import TopicSpec, ensure_topics
from kpimon.agents.devtools.localkafka import (
    KafkaLauncherError,
    LocalCluster,
    LocalKafka,
    SecureListeners,
    kafka_version,
    new_cluster_id,
    parse_java_version,
    recorded_cluster_size,
)
from tests.helpers import KPIMON, free_port, port_is_free, wait_until

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs a java on PATH")


def kpimon(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real `kpimon` console script."""
    return subprocess.run(
        [KPIMON, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without KPIMON_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")}
    env.update(extra)
    return env


# --- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "major"),
    [
        (
            'openjdk version "17.0.15" 2025-04-15\n'
            "OpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)\n",
            17,
        ),
        ('java version "1.8.0_351"\nJava(TM) SE Runtime Environment (build 1.8.0_351-b10)\n', 8),
        ('openjdk version "11.0.2" 2019-01-15\n', 11),
        ('openjdk version "21" 2023-09-19\n', 21),
        ('openjdk version "22-ea" 2024-03-19\n', 22),
        ('Picked up JAVA_TOOL_OPTIONS: -Xss4m\nopenjdk version "25.0.1" 2025-10-21 LTS\n', 25),
        ("openjdk 17.0.2 2022-01-18\n", 17),  # `java --version` style
        ("", None),
        ("bash: java: command not found\n", None),
    ],
)
def test_parse_java_version(output: str, major: int | None) -> None:
    assert parse_java_version(output) == major


def test_kafka_version_comes_from_the_pom() -> None:
    pom = Path(__file__).resolve().parents[2] / "agents" / "devtools" / "kafka" / "pom.xml"
    assert f"<kafka.version>{kafka_version()}</kafka.version>" in pom.read_text()


def test_cluster_ids_are_kafka_uuids() -> None:
    for _ in range(200):
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_secure_listeners_are_added_next_to_the_unchanged_plaintext_one(tmp_path: Path) -> None:
    plain = LocalKafka(port=9092, home=tmp_path / "a")._server_properties(9093)
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert plain["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert not any(key.startswith(("ssl.", "sasl.", "listener.name.")) for key in plain)
    secure = SecureListeners(9094, 9095, tmp_path / "keystore.pem", tmp_path / "ca.pem", {"u": "p-1"})
    broker = LocalKafka(port=9092, home=tmp_path / "b", secure=secure)
    props = broker._server_properties(9093)
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:9094,SSL://127.0.0.1:9095")
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:9092,")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert (broker.sasl_ssl_bootstrap, broker.ssl_bootstrap) == ("127.0.0.1:9094", "127.0.0.1:9095")
    assert secure.scram_arguments() == ["--add-scram", "SCRAM-SHA-512=[name=u,password=p-1]"]
    with pytest.raises(KafkaLauncherError, match="no secure listeners"):
        _ = LocalKafka(port=9092, home=tmp_path / "c").sasl_ssl_bootstrap


def test_cluster_nodes_share_a_static_quorum_and_replicate_kafkas_own_topics(tmp_path: Path) -> None:
    cluster = LocalCluster(size=3, port=9092, home=tmp_path / "c")
    assert cluster.nodes == []  # nothing recorded before the first start
    nodes = cluster._ensure_layout()
    assert [node.node_id for node in nodes] == [1, 2, 3]
    assert nodes[0].port == 9092 and len({node.port for node in nodes}) == 3
    assert [node.run_dir for node in nodes] == [tmp_path / "c" / f"node-{n}" for n in (1, 2, 3)]
    props = nodes[1]._server_properties(nodes[1]._controller_port())
    assert props["node.id"] == "2" and "controller.quorum.bootstrap.servers" not in props
    voters = props["controller.quorum.voters"].split(",")
    assert [voter.split("@")[0] for voter in voters] == ["1", "2", "3"]
    assert props["offsets.topic.replication.factor"] == props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    # The layout is kept: the same ports and cluster id for every later start.
    assert LocalCluster(size=3, port=9092, home=tmp_path / "c").bootstrap == cluster.bootstrap
    assert recorded_cluster_size(tmp_path / "c") == 3
    with pytest.raises(KafkaLauncherError, match="holds a cluster of 3 nodes"):
        _ = LocalCluster(size=2, port=9092, home=tmp_path / "c").nodes
    (tmp_path / "single" / "data").mkdir(parents=True)
    with pytest.raises(KafkaLauncherError, match="single broker's data"):
        LocalCluster(size=3, port=9092, home=tmp_path / "single")._ensure_layout()
    assert recorded_cluster_size(tmp_path / "single") is None


def test_cli_refuses_to_turn_a_broker_into_a_cluster_without_fresh(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    result = kpimon("kafka", "start", "--run-dir", str(run_dir), "--brokers", "3", env=clean_env())
    assert result.returncode != 0
    assert "holds a single broker, not 3" in result.stderr and "--fresh" in result.stderr
    helped = kpimon("kafka", "start", "--help", env=clean_env())
    assert "--brokers" in helped.stdout and "min.insync.replicas" in helped.stdout


@pytest.mark.parametrize(("name", "password"), [("u", "a,b"), ("u", "a]"), ("u", "a b"), ("u v", "p")])
def test_scram_users_the_storage_tool_cannot_parse_are_refused(
    name: str, password: str, tmp_path: Path
) -> None:
    secure = SecureListeners(1, 2, tmp_path, tmp_path, {name: password})
    with pytest.raises(KafkaLauncherError, match="SCRAM user"):
        secure.scram_arguments()


# --- clear errors --------------------------------------------------------------------------------


def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    run_dir = tmp_path / "run"
    result = kpimon(
        "kafka",
        "start",
        "--port",
        str(free_port()),
        "--run-dir",
        str(run_dir),
        env=clean_env(PATH=str(empty), KPIMON_HOME=str(tmp_path / "home")),
    )
    assert result.returncode == 1, result
    assert "Java 17+ is needed" in result.stderr
    assert "openjdk-17-jre-headless" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()  # checked before anything is created


def test_old_java_is_a_clear_error(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_java = bin_dir / "java"
    fake_java.write_text("#!/bin/sh\necho 'java version \"1.8.0_351\"' >&2\n")
    fake_java.chmod(0o755)
    result = kpimon(
        "kafka",
        "start",
        "--port",
        str(free_port()),
        "--run-dir",
        str(tmp_path / "run"),
        env=clean_env(PATH=f"{bin_dir}:/usr/bin:/bin", KPIMON_HOME=str(tmp_path / "home")),
    )
    assert result.returncode == 1, result
    assert "found Java 8" in result.stderr
    assert "Traceback" not in result.stderr


@needs_java
def test_missing_maven_is_a_clear_error(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = shutil.which("java")
    assert java is not None
    (bin_dir / "java").symlink_to(java)
    result = kpimon(
        "kafka",
        "start",
        "--port",
        str(free_port()),
        "--run-dir",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "empty-cache"),
        env=clean_env(PATH=str(bin_dir), KPIMON_HOME=str(tmp_path / "home")),
    )
    assert result.returncode == 1, result
    assert "Maven (`mvn`) is needed" in result.stderr
    assert "apt-get install maven" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_on_an_unused_port_says_not_running(tmp_path: Path) -> None:
    result = kpimon("kafka", "status", "--port", str(free_port()), env=clean_env(KPIMON_HOME=str(tmp_path)))
    assert result.returncode == 1, result
    assert result.stdout.strip() == "not running"


@pytest.mark.kafka
def test_a_port_taken_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(KafkaLauncherError, match=f"port {port} on 127.0.0.1 is already in use"):
            LocalKafka(port=port, home=tmp_path / "run").start()


@pytest.mark.kafka
def test_a_broker_that_dies_at_startup_is_reported_with_its_log(tmp_path: Path) -> None:
    # A data dir "formatted" for another node id: the storage is not reformatted, and the broker
    # refuses to start, as it would after a botched copy of a data dir.
    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text(f"version=1\ncluster.id={new_cluster_id()}\nnode.id=2\n")
    broker = LocalKafka(port=free_port(), home=tmp_path / "run")
    with pytest.raises(KafkaLauncherError) as info:
        broker.start(timeout=60)
    message = str(info.value)
    assert "exited during startup" in message
    assert "Stored node id 2 doesn't match" in message  # quoted from kafka.log
    assert not broker.status()
    assert not broker.pid_file.exists()


# --- a real broker -------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_topic_with_four_partitions_round_trip(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}roundtrip"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
        await wait_until(lambda: _has_topic(admin, topic), timeout=30, message=f"topic {topic} listed")
        (description,) = await admin.describe_topics([topic])
        assert len(description["partitions"]) == 4
    finally:
        await admin.close()

    sent = {(p, f"k{i}".encode(), f"v{i}".encode()) for i in range(40) for p in [i % 4]}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for partition, key, value in sorted(sent):
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()

    received: set[tuple[int, bytes, bytes]] = set()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=f"{unique_prefix}g"
    )
    await consumer.start()
    try:

        async def all_received() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                received.update((r.partition, r.key, r.value) for r in records)
            return len(received) >= len(sent)

        await wait_until(all_received, timeout=60, message="all 40 messages consumed")
    finally:
        await consumer.stop()
    assert received == sent


async def _has_topic(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic in await admin.list_topics()


# --- the CLI, end to end -------------------------------------------------------------------------


async def _topics(bootstrap: str) -> list[str]:
    """The broker's topic names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_cli_start_status_fresh_stop(tmp_path: Path) -> None:
    """start, status, start again, `start --fresh` refused while it runs, stop, status, `start --fresh`
    (deletes the data and says what), stop: one broker for the whole life cycle."""
    port = free_port()
    home = tmp_path / "home"
    # Its own KPIMON_HOME (run dir, data, log), but the machine's jar cache: no second download.
    env = clean_env(KPIMON_HOME=str(home))
    cache = ["--cache-dir", str(default_home() / "cache")]
    run_dir = home / "kafka" / f"run-{port}"
    try:
        started = kpimon("kafka", "start", "--port", str(port), *cache, env=env)
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines()[-1] == f"127.0.0.1:{port}"
        assert "ready on" in started.stderr  # progress goes to stderr
        assert (run_dir / "kafka.pid").is_file() and (run_dir / "kafka.log").is_file()

        status = kpimon("kafka", "status", "--port", str(port), env=env)
        assert (status.returncode, status.stdout.strip()) == (0, f"running on 127.0.0.1:{port}")

        again = kpimon("kafka", "start", "--port", str(port), *cache, env=env)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[-1] == f"127.0.0.1:{port}"
        assert "already runs" in again.stderr

        # A topic for `--fresh` to delete, made by kpimon's admin client (the JVM tools have their own
        # test, test_kafka_tools.py; each run of one is a JVM start).
        bootstrap = f"127.0.0.1:{port}"
        asyncio.run(ensure_topics(bootstrap, [TopicSpec("left-over", 1)]))
        refused = kpimon("kafka", "start", "--fresh", "--port", str(port), *cache, env=env)
        assert refused.returncode == 1 and "stop it first" in refused.stderr

        stopped = kpimon("kafka", "stop", "--port", str(port), env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"stopped 127.0.0.1:{port}"

        status = kpimon("kafka", "status", "--port", str(port), env=env)
        assert (status.returncode, status.stdout.strip()) == (1, "not running")
        assert port_is_free(port)
        assert not (run_dir / "kafka.pid").exists()

        fresh = kpimon("kafka", "start", "--fresh", "--port", str(port), *cache, env=env)
        assert fresh.returncode == 0, fresh.stderr
        assert "fresh: deleting" in fresh.stderr and "1 topic (left-over)" in fresh.stderr
        assert "left-over" not in asyncio.run(_topics(bootstrap))
        stopped = kpimon("kafka", "stop", "--port", str(port), env=env)
        assert stopped.returncode == 0 and stopped.stdout.strip() == f"stopped {bootstrap}", stopped.stderr
    finally:
        LocalKafka(port=port, home=run_dir).stop(timeout=10)  # never leave a broker behind
