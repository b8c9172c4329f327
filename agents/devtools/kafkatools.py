"""Apache Kafka's own command-line tools (kafka-topics.sh, the console consumer, ...) on the launcher's jars.

The launcher's jar cache holds `kafka-tools` (agents/devtools/kafka/pom.xml), so the tools run without a
Kafka distribution: `kpimon kafka tools topics --list` is `kafka-topics.sh --bootstrap-server
127.0.0.1:9092 --list`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tool:
    """One of Kafka's scripts: its main class, whether it takes `--bootstrap-server`, and whether it
    measures throughput (its JVM then keeps the optimizing compiler, which the others go without: they
    would measure a slower Java than a client runs)."""

    main: str
    summary: str
    bootstrap_flag: bool = True
    measures: bool = False


#: By the name of Kafka's script without `kafka-` and `.sh`.
TOOLS: dict[str, Tool] = {
    "topics": Tool("org.apache.kafka.tools.TopicCommand", "list, describe, create, alter and delete topics"),
    "console-consumer": Tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "print a topic's messages (--topic, --from-beginning)",
    ),
    "console-producer": Tool(
        "org.apache.kafka.tools.ConsoleProducer", "send stdin's lines as messages (--topic)"
    ),
    "consumer-groups": Tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "list and describe consumer groups, their offsets and lag; reset offsets",
    ),
    "get-offsets": Tool("org.apache.kafka.tools.GetOffsetShell", "the offsets of topic partitions"),
    "configs": Tool("kafka.admin.ConfigCommand", "describe and alter topic, broker and client configs"),
    "log-dirs": Tool("org.apache.kafka.tools.LogDirsCommand", "the broker's log directories and their sizes"),
    "delete-records": Tool("org.apache.kafka.tools.DeleteRecordsCommand", "delete records up to an offset"),
    "metadata-quorum": Tool("org.apache.kafka.tools.MetadataQuorumCommand", "the KRaft quorum's state"),
    "transactions": Tool("org.apache.kafka.tools.TransactionsCommand", "list and describe transactions"),
    "acls": Tool("org.apache.kafka.tools.AclCommand", "list, add and remove ACLs"),
    "features": Tool("org.apache.kafka.tools.FeatureCommand", "the cluster's feature versions"),
    "broker-api-versions": Tool(
        "org.apache.kafka.tools.BrokerApiVersionsCommand", "the API versions each broker supports"
    ),
    "producer-perf-test": Tool(
        "org.apache.kafka.tools.ProducerPerformance",
        "producer throughput test (give --producer-props bootstrap.servers=...)",
        bootstrap_flag=False,
        measures=True,
    ),
    "consumer-perf-test": Tool(
        "org.apache.kafka.tools.ConsumerPerformance", "consumer throughput test", measures=True
    ),
}

#: The tools' JVM: small, they are clients.
TOOL_JVM_OPTIONS = ("-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
#: Added for a tool that does not measure throughput: such runs last seconds, and the client compiler
#: alone starts them with less CPU (`topics --version`: 0.85-1.0 CPU-s instead of 1.45-1.6).
SHORT_RUN_OPTIONS = ("-XX:TieredStopAtLevel=1",)


class UnknownTool(ValueError):
    """A tool name that is not in TOOLS."""


def tool_named(name: str) -> Tool:
    """The tool of `name`, which may also be Kafka's script name (`kafka-topics.sh`)."""
    short = name.removesuffix(".sh").removeprefix("kafka-")
    try:
        return TOOLS[short]
    except KeyError:
        raise UnknownTool(f"no Kafka tool {name!r}; the tools are: {', '.join(sorted(TOOLS))}") from None


def tool_command(
    java: str, libs: Path, log4j_file: Path, name: str, args: Sequence[str], bootstrap: str
) -> list[str]:
    """The java command line of tool `name` with `args`; `--bootstrap-server bootstrap` added when the tool
    takes one and `args` give none (nor `--help`/`--version`)."""
    tool = tool_named(name)
    extra: list[str] = []
    given = set(args)
    wants_bootstrap = tool.bootstrap_flag and not given & {"--bootstrap-server", "--help", "-h", "--version"}
    if wants_bootstrap and not any(arg.startswith("--bootstrap-server=") for arg in args):
        extra = ["--bootstrap-server", bootstrap]
    return [
        java,
        *TOOL_JVM_OPTIONS,
        *(() if tool.measures else SHORT_RUN_OPTIONS),
        f"-Dlog4j2.configurationFile={log4j_file}",
        "-cp",
        str(libs / "*"),
        tool.main,
        *extra,
        *args,
    ]


#: Warnings and errors to stderr only: the tools' stdout is their output (a consumer's messages).
TOOLS_LOG4J2 = (
    "status = warn\n"
    "appender.stderr.type = Console\n"
    "appender.stderr.name = STDERR\n"
    "appender.stderr.target = SYSTEM_ERR\n"
    "appender.stderr.layout.type = PatternLayout\n"
    "appender.stderr.layout.pattern = [%d] %p %m (%c)%n\n"
    "rootLogger.level = warn\n"
    "rootLogger.appenderRef.stderr.ref = STDERR\n"
)


def write_log4j(directory: Path) -> Path:
    """The tools' log4j2 configuration, written once into `directory` (the jar cache)."""
    path = directory / "tools-log4j2.properties"
    if not path.is_file() or path.read_text() != TOOLS_LOG4J2:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{id(path)}.tmp")
        temporary.write_text(TOOLS_LOG4J2)
        temporary.replace(path)
    return path
