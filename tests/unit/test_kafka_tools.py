"""The command lines of `kpimon kafka tools` (the real runs are in tests/integration/test_kafka_tools.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpimon.agents.devtools.kafkatools import TOOLS, UnknownTool, tool_command, tool_named

LIBS, LOG4J = Path("/cache/libs"), Path("/cache/tools-log4j2.properties")


def command(name: str, *args: str) -> list[str]:
    return tool_command("java", LIBS, LOG4J, name, args, "127.0.0.1:9092")


def test_the_local_bootstrap_is_added_unless_given() -> None:
    assert command("topics", "--list")[-4:] == [
        "org.apache.kafka.tools.TopicCommand",
        "--bootstrap-server",
        "127.0.0.1:9092",
        "--list",
    ]
    assert command("topics", "--bootstrap-server", "h:1", "--list")[-3:] == [
        "--bootstrap-server",
        "h:1",
        "--list",
    ]
    assert "127.0.0.1:9092" not in command("topics", "--bootstrap-server=h:1")
    assert "127.0.0.1:9092" not in command("topics", "--help")
    assert "127.0.0.1:9092" not in command("producer-perf-test", "--topic", "t")


def test_script_names_are_accepted_and_the_class_path_is_the_cache() -> None:
    assert tool_named("kafka-console-consumer.sh") is TOOLS["console-consumer"]
    line = command("kafka-consumer-groups", "--list")
    assert line[line.index("-cp") + 1] == "/cache/libs/*"
    assert f"-Dlog4j2.configurationFile={LOG4J}" in line
    with pytest.raises(UnknownTool, match="console-producer"):
        tool_named("kafka-nope.sh")


def test_only_the_throughput_tests_keep_the_optimizing_compiler() -> None:
    """A tool run lasts seconds: the client compiler alone starts it sooner. A perf test measures Java's
    throughput, which the optimizing compiler makes what clients see."""
    for name in TOOLS:
        short_run = "-XX:TieredStopAtLevel=1" in command(name, "--help")
        assert short_run == (name not in {"producer-perf-test", "consumer-perf-test"}), name


def test_every_main_class_is_in_the_pinned_jars() -> None:
    """The pom pins kafka-tools; each class must exist there (or in the broker jar for ConfigCommand)."""
    import zipfile

    from kpimon.agents.devtools.localkafka import LocalKafka

    libs = LocalKafka().libs_dir
    if not libs.is_dir():
        pytest.skip(f"the Kafka jars are not fetched yet ({libs})")
    names: set[str] = set()
    for jar in libs.glob("kafka*.jar"):
        with zipfile.ZipFile(jar) as archive:
            names.update(archive.namelist())
    for tool in TOOLS.values():
        assert tool.main.replace(".", "/") + ".class" in names, tool.main


def test_fresh_says_what_it_deletes(tmp_path: Path) -> None:
    from kpimon.agents.cli.kafka import data_summary, describe_deletion

    data = tmp_path / "data"
    assert describe_deletion(data) == f"fresh: nothing to delete ({data} does not exist)"
    for name in ("clicks-0", "clicks-1", "kpimon-kpis-0", "__consumer_offsets-7", "__cluster_metadata-0"):
        (data / name).mkdir(parents=True)
        (data / name / "00000000000000000000.log").write_bytes(b"x" * 1000)
    (data / "meta.properties").write_text("cluster.id=x\n")
    topics, size = data_summary(data)
    assert topics == ["clicks", "kpimon-kpis"]
    assert size == 5000 + len("cluster.id=x\n")
    line = describe_deletion(data)
    assert f"deleting {data}: 2 topics (clicks, kpimon-kpis), every consumer group" in line
    assert "0.0 MB" in line
