"""`kpimon kafka tools`: Kafka's own command-line tools run on the launcher's jars against a real broker."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import KPIMON

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def tool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [KPIMON, "kafka", "tools", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_topics_console_producer_consumer_and_groups(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}tools"
    server = ["--bootstrap-server", kafka_bootstrap]
    tool("topics", *server, "--create", "--topic", topic, "--partitions", "1")
    assert topic in tool("kafka-topics.sh", *server, "--list").stdout.split()
    tool("console-producer", *server, "--topic", topic, stdin='{"user_id": "u1"}\nsecond line\n')
    consumed = tool(
        "console-consumer",
        *server,
        "--topic",
        topic,
        "--from-beginning",
        "--max-messages",
        "2",
        "--group",
        f"{unique_prefix}group",
        "--timeout-ms",
        "60000",
    )
    assert consumed.stdout.splitlines() == ['{"user_id": "u1"}', "second line"]
    assert f"{unique_prefix}group" in tool("consumer-groups", *server, "--list").stdout.split()


def test_unknown_tool_names_the_tools() -> None:
    result = subprocess.run([KPIMON, "kafka", "tools", "nope"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "no Kafka tool 'nope'" in result.stderr and "console-consumer" in result.stderr
