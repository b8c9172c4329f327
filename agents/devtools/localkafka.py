"""A real Apache Kafka on 127.0.0.1 (KRaft): one node, or a cluster of several (`LocalCluster`).

Used by `kpimon kafka start|stop|status` and by the integration tests. Nothing is mocked: the jars
are the released Apache Kafka artifacts, resolved once by Maven from `agents/devtools/kafka/pom.xml` into a
per-machine cache, and each node is a detached `java ... kafka.Kafka server.properties` process, broker and
controller in one JVM. A cluster's nodes form a static controller quorum (`controller.quorum.voters`): it
works while a majority of them runs, so one node of three can die.

Layout (KPIMON_HOME defaults to ~/.kpimon):

    $KPIMON_HOME/cache/kafka-<version>/libs/   jars, shared by every run dir (fetched once)
    $KPIMON_HOME/kafka/run-<port>/             one broker: data/, server.properties, log4j2.properties,
                                               kafka.log, kafka.pid, controller.port
    $KPIMON_HOME/kafka/run-<port>/             or a cluster: cluster.json (ports, cluster id) and one
                                               run dir per node, node-1/ (client port <port>), node-2/, ...
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kpimon.agents.config.settings import default_home

log = logging.getLogger(__name__)

#: The Maven project that pins the Kafka version: package data, so an installed wheel can start Kafka too.
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
HOST = "127.0.0.1"
MIN_JAVA = 17
DEFAULT_PORT = 9092
#: Mirrors the Kafka start scripts' defaults, but smaller: this broker is for one developer's laptop.
JVM_OPTIONS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true")
#: For a broker that must be up quickly and carries little (the demo's): the client compiler only and the
#: serial collector start it in about half the time on a busy 2-core machine (55 -> 30 s, 48 -> 23 s at a
#: load of 24), for a lower peak throughput.
QUICK_START_JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)

#: For the one-shot storage tool (the format before a first start): a second of CPU less than with the
#: broker's options (2.1-2.2 -> 1.0-1.6 CPU-s measured); it runs a few seconds, C2 and G1 never pay off.
SHORT_RUN_JVM_OPTIONS = (
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)

_JAVA_INSTALL_HINT = (
    "install a JRE 17 or newer, e.g. `sudo apt-get install openjdk-17-jre-headless` (Debian/Ubuntu) "
    "or `brew install openjdk@17` (macOS), and make sure its `java` comes first on PATH"
)
_MAVEN_INSTALL_HINT = (
    "install it, e.g. `sudo apt-get install maven` (Debian/Ubuntu) or `brew install maven` (macOS)"
)

T = TypeVar("T")


class KafkaLauncherError(RuntimeError):
    """The local Kafka could not be fetched, started or stopped; the message says what to do."""


# --------------------------------------------------------------------------------------------------
# Pure helpers (unit tested without Java)
# --------------------------------------------------------------------------------------------------

_QUOTED_VERSION = re.compile(r'version "(?P<version>[^"]+)"')
_BARE_VERSION = re.compile(r"^\S+ (?P<version>\d[\w.+-]*)", re.MULTILINE)


def parse_java_version(output: str) -> int | None:
    """The major Java version from `java -version` output, or None when it cannot be told.

    Handles both numbering schemes: `"1.8.0_351"` is Java 8, `"17.0.15"`, `"21"` and `"22-ea"` are
    what they say. `java -version` may be preceded by lines like `Picked up JAVA_TOOL_OPTIONS: ...`,
    so the version is searched for rather than taken from the first line.
    """
    match = _QUOTED_VERSION.search(output) or _BARE_VERSION.search(output)
    if match is None:
        return None
    parts = re.split(r"[._+-]", match["version"])
    try:
        major = int(parts[0])
        if major == 1 and len(parts) > 1:  # pre-Java-9 scheme: 1.<major>.0_<update>
            major = int(parts[1])
    except ValueError:
        return None
    return major


def kafka_version(pom: Path = POM) -> str:
    """The `<kafka.version>` property of the pom, so the cache directory follows the pinned version."""
    try:
        text = pom.read_text(encoding="utf-8")
    except OSError as err:
        raise KafkaLauncherError(
            f"cannot read {pom} ({err.strerror}); the kpimon installation is incomplete "
            "(reinstall it: `pip install --force-reinstall kpimon`)"
        ) from None
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", text)
    if match is None:
        raise KafkaLauncherError(f"{pom} has no <kafka.version> property")
    return match.group(1)


def pom_digest(pom: Path = POM) -> str:
    """8 hex digits of the pom's SHA-256: the jar cache's name changes whenever the pom does."""
    try:
        return hashlib.sha256(pom.read_bytes()).hexdigest()[:8]
    except OSError as err:
        raise KafkaLauncherError(
            f"cannot read {pom} ({err.strerror}); the kpimon installation is incomplete"
        ) from None


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in base64url without padding, like `kafka-storage random-uuid`.

    Like Kafka's own `Uuid.randomUuid()`, ids starting with "-" are redrawn: the storage tool would
    take them for a command line option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a listening socket could be bound to host:port right now.

    SO_REUSEADDR matches what the JVM does, so sockets left in TIME_WAIT by earlier clients do not
    count as "taken"; a socket listening on 0.0.0.0 or on host does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(host: str = HOST, avoid: int | None = None) -> int:
    """A port the OS considers free now (it may of course be taken before it is used)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port != avoid:
            return port


def check_java() -> str:
    """The path of a `java` 17+ on PATH, or a KafkaLauncherError saying how to get one."""
    java = shutil.which("java")
    if java is None:
        raise KafkaLauncherError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka, but `java` is not on PATH: "
            f"{_JAVA_INSTALL_HINT}"
        )
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KafkaLauncherError(f"`{java} -version` failed ({err}): {_JAVA_INSTALL_HINT}") from None
    # `java -version` writes to stderr; some wrappers write to stdout.
    output = proc.stderr + proc.stdout
    major = parse_java_version(output)
    if major is None:
        first_line = output.strip().splitlines()[0] if output.strip() else "(no output)"
        raise KafkaLauncherError(
            f"cannot tell the Java version of {java} from `java -version` ({first_line!r}); "
            f"Java {MIN_JAVA}+ is needed to run the local Kafka: {_JAVA_INSTALL_HINT}"
        )
    if major < MIN_JAVA:
        raise KafkaLauncherError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka, found Java {major} at {java}: "
            f"{_JAVA_INSTALL_HINT}"
        )
    return java


def check_maven(purpose: str) -> str:
    """The path of `mvn` on PATH, or a KafkaLauncherError saying how to get it."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLauncherError(
            f"Maven (`mvn`) is needed {purpose}, but it is not on PATH: {_MAVEN_INSTALL_HINT}"
        )
    return mvn


def _tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, preceded by its first ERROR line if that scrolled out of them.

    Kafka often logs the cause once and then pages of shutdown noise; the first ERROR is the line a
    user needs. Empty if the file is missing.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    all_lines = text.rstrip().splitlines()
    tail = all_lines[-lines:]
    first_error = next(
        (i for i, line in enumerate(all_lines) if " ERROR " in line or " FATAL " in line), None
    )
    if first_error is not None and first_error < len(all_lines) - lines:
        tail = [*all_lines[first_error : first_error + 3], "...", *tail]
    return "\n".join(tail)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines()) if text else "    (empty)"


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even when called inside an event loop.

    `LocalKafka.start()` is synchronous (a CLI command and a session fixture call it), but a caller
    may already be inside a running loop, where `asyncio.run` refuses to work; then the coroutine
    gets its own loop in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as err:
            error.append(err)

    thread = threading.Thread(target=runner, name="localkafka-probe", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka's connection errors while probing a broker that is expected to be starting."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def _answers_metadata(bootstrap: str, request_timeout: float, node_id: int | None = None) -> bool:
    """Whether the broker answers a metadata request and lists at least one live broker (`node_id` if given).

    A KRaft broker only appears in metadata once it is registered and unfenced, which is the moment
    producers, consumers and Faust can use it.
    """
    from aiokafka import AIOKafkaClient  # imported late: `kpimon --help` should not pay for aiokafka
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(request_timeout * 1000))
    try:
        await client.bootstrap()
        live = {broker.nodeId for broker in client.cluster.brokers()}
        return bool(live) if node_id is None else node_id in live
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()


def _tcp_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# The launcher
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureListeners:
    """Extra listeners of a LocalKafka, for testing kpimon's Kafka security (docs/security.md).

    - `SASL_SSL://127.0.0.1:<sasl_ssl_port>`: TLS, then SCRAM-SHA-512 with the `scram_users`
      (name -> password), created when the storage is formatted (`kafka-storage format --add-scram`), so
      they exist from the first start of a fresh run dir.
    - `SSL://127.0.0.1:<ssl_port>`: mutual TLS, a client certificate signed by the truststore's CA required.

    `keystore` is a PEM file holding the broker's unencrypted PKCS#8 private key and its certificate chain
    (Kafka's `ssl.keystore.type=PEM`); `truststore` a PEM file of the CA certificates clients are checked
    against. The PLAINTEXT listener stays: the broker talks to itself and the launcher probes it there.
    """

    sasl_ssl_port: int
    ssl_port: int
    keystore: Path
    truststore: Path
    scram_users: Mapping[str, str] = field(default_factory=dict)

    def properties(self) -> dict[str, str]:
        """The broker settings of the two listeners (merged into server.properties)."""
        return {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "listener.name.ssl.ssl.client.auth": "required",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.truststore),
        }

    def scram_arguments(self) -> list[str]:
        """`--add-scram` arguments of `kafka-storage format` for the users."""
        args: list[str] = []
        for name, password in self.scram_users.items():
            # The storage tool splits `name=...,password=...` itself: no separators inside the values.
            if not re.fullmatch(r"[\w.@+-]+", name) or not re.fullmatch(r"[^,\[\]=\s\"]+", password):
                raise KafkaLauncherError(
                    f"SCRAM user {name!r}: names are letters, digits and ._@+-; passwords have no , [ ] = "
                    "quotes or spaces"
                )
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return args


@dataclass(frozen=True)
class Quorum:
    """The static KRaft quorum of a local cluster: its id and every node's (id, controller port)."""

    cluster_id: str
    controllers: tuple[tuple[int, int], ...]

    def voters(self) -> str:
        """`controller.quorum.voters`: `id@host:port,...`."""
        return ",".join(f"{node}@{HOST}:{port}" for node, port in self.controllers)

    def port_of(self, node_id: int) -> int:
        """The controller port of a node."""
        return dict(self.controllers)[node_id]


class LocalKafka:
    """One local Kafka broker+controller, identified by its run directory: alone, or a node of a cluster.

    `port` is the client (PLAINTEXT) port on 127.0.0.1. `home` is the run directory (data, config,
    kafka.log, pid file); it defaults to `$KPIMON_HOME/kafka/run-<port>`. `cache_dir` holds the jars
    and defaults to `$KPIMON_HOME/cache`, shared by all run dirs so the jars are fetched once per
    machine. `properties` are extra or overriding broker settings (written to server.properties);
    `jvm_options` the JVM's options (QUICK_START_JVM_OPTIONS for a quick start).
    A node of a `LocalCluster` has its `node_id` and the cluster's `quorum`; alone, it is node 1 of a
    quorum of its own.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        home: Path | None = None,
        cache_dir: Path | None = None,
        properties: Mapping[str, str] | None = None,
        secure: SecureListeners | None = None,
        node_id: int = 1,
        quorum: Quorum | None = None,
        jvm_options: Sequence[str] = JVM_OPTIONS,
    ) -> None:
        if not 0 < port < 65536:
            raise KafkaLauncherError(f"port must be in 1..65535, got {port}")
        self.port = port
        self.run_dir = (home if home is not None else LocalKafka.default_run_dir(port)).resolve()
        self.cache_dir = (cache_dir if cache_dir is not None else default_home() / "cache").resolve()
        self.extra_properties = dict(properties or {})
        self.secure = secure
        self.node_id = node_id
        self.quorum = quorum
        self.jvm_options = tuple(jvm_options)
        self.version = kafka_version()
        self._proc: subprocess.Popen[bytes] | None = None

    # Paths -------------------------------------------------------------------------------------

    @staticmethod
    def default_run_dir(port: int) -> Path:
        """`$KPIMON_HOME/kafka/run-<port>`: the run dir of the broker (or cluster) of a client port."""
        return default_home() / "kafka" / f"run-{port}"

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use."""
        return f"{HOST}:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """The SASL_SSL bootstrap address (only with `secure` listeners)."""
        if self.secure is None:
            raise KafkaLauncherError("this LocalKafka has no secure listeners")
        return f"{HOST}:{self.secure.sasl_ssl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        """The mutual-TLS bootstrap address (only with `secure` listeners)."""
        if self.secure is None:
            raise KafkaLauncherError("this LocalKafka has no secure listeners")
        return f"{HOST}:{self.secure.ssl_port}"

    @property
    def libs_dir(self) -> Path:
        # Named after the pom's content too: a pom that lists more (kafka-tools) gets a cache of its own
        # instead of replacing jars that running brokers of the older pom still read.
        return self.cache_dir / f"kafka-{self.version}-{pom_digest()}" / "libs"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def properties_file(self) -> Path:
        return self.run_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.run_dir / "log4j2.properties"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kafka.pid"

    @property
    def controller_port_file(self) -> Path:
        return self.run_dir / "controller.port"

    # Jars --------------------------------------------------------------------------------------

    def _jars_present(self, libs: Path) -> bool:
        return all((libs / f"{name}-{self.version}.jar").is_file() for name in ("kafka_2.13", "kafka-tools"))

    def ensure_jars(self) -> Path:
        """The directory of the Kafka jars, fetched with Maven the first time.

        Maven copies into a temporary sibling directory which is then renamed into place: a rename is
        atomic, so an interrupted or failed fetch never leaves a half-filled cache that later runs
        would trust, and two concurrent fetches cannot mix their files.
        """
        final = self.libs_dir.parent
        if self._jars_present(self.libs_dir):
            return self.libs_dir
        mvn = check_maven(f"once to download the Kafka {self.version} jars into {final}")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".kafka-{self.version}-", dir=self.cache_dir))
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary shared directory
        log.info("fetching the Kafka %s jars with Maven into %s (first time only)", self.version, final)
        started = time.monotonic()
        try:
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging / 'libs'}",
                "-DincludeScope=runtime",
            ]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
            except subprocess.TimeoutExpired:
                raise KafkaLauncherError(
                    f"Maven did not finish fetching the Kafka {self.version} jars within 30 minutes; "
                    "check the network access to Maven Central and try again"
                ) from None
            if proc.returncode != 0:
                output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
                raise KafkaLauncherError(
                    f"Maven failed to fetch the Kafka {self.version} jars (exit {proc.returncode}); "
                    f"check the network access to Maven Central. Maven said:\n{_indent(output)}"
                )
            if not self._jars_present(staging / "libs"):
                raise KafkaLauncherError(
                    f"Maven ran but {staging / 'libs'} has no kafka_2.13-{self.version}.jar"
                )
            try:
                staging.rename(final)
            except OSError:
                # Another process renamed its complete copy into place first; use that one.
                if not self._jars_present(self.libs_dir):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        count = len(list(self.libs_dir.glob("*.jar")))
        log.info("fetched %d jars in %.1f s", count, time.monotonic() - started)
        return self.libs_dir

    # Process bookkeeping -----------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        """Whether pid is alive and is the broker of this run dir (guards against pid reuse)."""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        with contextlib.suppress(ChildProcessError):
            # Reap it if it is a child of this process (started by another LocalKafka instance
            # here), otherwise a dead broker would linger as a zombie that still "exists".
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, but another user's: the cmdline check below decides
        proc_dir = Path("/proc") / str(pid)
        if not Path("/proc/self").exists():
            return True  # no procfs (macOS): trust the pid file
        try:
            stat = (proc_dir / "stat").read_text()
            cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
        return b"kafka.Kafka" in cmdline and str(self.properties_file).encode() in cmdline

    def pid(self) -> int | None:
        """The pid of this run dir's broker if it is running, else None."""
        pid = self._read_pid()
        return pid if pid is not None and self._is_our_broker(pid) else None

    def status(self) -> bool:
        """Whether this run dir's broker process is running (it may still be starting up)."""
        return self.pid() is not None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop on one run dir, so two `kpimon kafka start` cannot launch two JVMs."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _configured_port(self) -> int | None:
        try:
            text = self.properties_file.read_text()
        except OSError:
            return None
        match = re.search(r"^advertised\.listeners=PLAINTEXT://[^:]+:(\d+)", text, re.MULTILINE)
        return int(match.group(1)) if match else None

    # Configuration -----------------------------------------------------------------------------

    def _controller_port(self) -> int:
        """The controller port of this run dir: chosen once, then reused.

        `format --standalone` records the controller endpoint in the KRaft voter set, so a restart
        must listen on the same controller port as the first start. A cluster's node has the port its
        quorum says.
        """
        if self.quorum is not None:
            port = self.quorum.port_of(self.node_id)
            if not port_is_free(port):
                raise KafkaLauncherError(
                    f"the controller port {port} of node {self.node_id} is in use by another program; stop "
                    f"that program, or delete {self.run_dir.parent} to start afresh (losing the topics)"
                )
            return port
        try:
            port = int(self.controller_port_file.read_text().strip())
        except (OSError, ValueError):
            port = pick_free_port(avoid=self.port)
            self.controller_port_file.write_text(f"{port}\n")
            return port
        if not port_is_free(port):
            raise KafkaLauncherError(
                f"the controller port {port} recorded in {self.controller_port_file} is in use by another "
                f"program; stop that program, or delete {self.run_dir} to start afresh (losing the topics)"
            )
        return port

    def _server_properties(self, controller_port: int) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
            "log.dirs": str(self.data_dir),
            # One broker: internal topics cannot have more replicas than that.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Consumer groups (Faust, tests) should not wait 3 s for more members that never come.
            "group.initial.rebalance.delay.ms": "0",
            # Matches Settings.partitions, so auto-created topics line up with kpimon's topics.
            "num.partitions": "4",
        }
        if self.quorum is not None:
            props.pop("controller.quorum.bootstrap.servers")
            props.update(self._cluster_properties(self.quorum))
        if self.secure is not None:
            secure = self.secure
            props["listeners"] += f",SASL_SSL://{HOST}:{secure.sasl_ssl_port},SSL://{HOST}:{secure.ssl_port}"
            props["advertised.listeners"] += (
                f",SASL_SSL://{HOST}:{secure.sasl_ssl_port},SSL://{HOST}:{secure.ssl_port}"
            )
            props["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL,SSL:SSL"
            props.update(secure.properties())
        props.update(self.extra_properties)
        return props

    @staticmethod
    def _cluster_properties(quorum: Quorum) -> dict[str, str]:
        """A cluster node's settings: the static quorum, and Kafka's own topics replicated like kpimon's."""
        replicas = str(min(3, len(quorum.controllers)))
        min_isr = "2" if len(quorum.controllers) >= 3 else "1"
        return {
            "controller.quorum.voters": quorum.voters(),
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            # Topics created without a factor (auto-created ones, tools) are replicated too.
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
        }

    def _write_configs(self, controller_port: int) -> None:
        # Rewritten at every start so changes to this module apply to existing run dirs.
        lines = [f"{key}={value}" for key, value in self._server_properties(controller_port).items()]
        self.properties_file.write_text(
            "# Written by kpimon (agents/devtools/localkafka.py) at every start; edits are overwritten.\n"
            + "\n".join(lines)
            + "\n"
        )
        self.log4j_file.write_text(
            "# Written by kpimon: the broker logs at INFO to kafka.log in its run dir.\n"
            "status = warn\n"
            "name = kpimon-local-kafka\n"
            "appender.file.type = File\n"
            "appender.file.name = file\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.append = true\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = info\n"
            "rootLogger.appenderRef.file.ref = file\n"
            # Per-request and per-state-change chatter drowns the useful lines at INFO.
            "logger.request.name = kafka.request.logger\n"
            "logger.request.level = warn\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = warn\n"
        )

    def _java_command(
        self, java: str, libs: Path, main: str, *args: str, jvm_options: Sequence[str] | None = None
    ) -> list[str]:
        """The java command line of `main` with `args` (`jvm_options`: the node's own by default)."""
        # Java expands the `dir/*` classpath wildcard itself; no shell is involved.
        return [
            java,
            *(self.jvm_options if jvm_options is None else jvm_options),
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.run_dir}",
            "-cp",
            str(libs / "*"),
            main,
            *args,
        ]

    def _format_storage(self, java: str, libs: Path) -> None:
        """Format the KRaft metadata log once; meta.properties in the data dir marks it done."""
        if (self.data_dir / "meta.properties").is_file():
            return
        # A cluster's nodes share its id; their static quorum needs no --standalone.
        cluster_id = self.quorum.cluster_id if self.quorum is not None else new_cluster_id()
        log.info("formatting the storage in %s (cluster id %s)", self.data_dir, cluster_id)
        cmd = self._java_command(
            java,
            libs,
            "kafka.tools.StorageTool",
            "format",
            *(("--standalone",) if self.quorum is None else ()),
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_file),
            *(self.secure.scram_arguments() if self.secure is not None else ()),
            jvm_options=SHORT_RUN_JVM_OPTIONS,
        )
        fresh = not self.data_dir.exists()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=300, check=False, cwd=self.run_dir
            )
        except BaseException:
            # Interrupted (Ctrl-C, timeout): a half-formatted data dir with a meta.properties would be
            # taken as formatted next time. It holds no topics yet, so it is safe to remove.
            if fresh:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            raise
        if proc.returncode != 0:
            if fresh:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
            raise KafkaLauncherError(
                f"formatting the Kafka storage in {self.data_dir} failed (exit {proc.returncode}); "
                f"delete {self.run_dir} to start afresh. The storage tool said:\n{_indent(output)}"
            )

    def _rotate_log(self) -> None:
        # A fresh kafka.log per start keeps "the tail of kafka.log" about this start; one old log is kept.
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))

    # Start / stop ------------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> str:
        """Start the broker (fetching jars and formatting storage if needed); return its bootstrap address.

        Returns once the broker answers a metadata request. If this run dir's broker already runs,
        its address is returned without starting another. `timeout` bounds the wait for the broker,
        not the one-time jar download.
        """
        java = check_java()
        if not self._jars_present(self.libs_dir):
            # Fail on a missing Maven before touching anything, not after creating run dirs.
            check_maven(f"once to download the Kafka {self.version} jars into {self.libs_dir.parent}")
        pid, launched = self._start_process(java)
        started = time.monotonic()
        try:
            self._wait_ready(pid, timeout)
        except BaseException:
            # A broker that failed to come up (or whose start was interrupted with Ctrl-C) should not
            # linger in the background holding the ports.
            if launched:
                self.stop(timeout=10)
            raise
        if launched:
            log.info(
                "Kafka %s ready on %s in %.1f s", self.version, self.bootstrap, time.monotonic() - started
            )
        return self.bootstrap

    def _start_process(self, java: str) -> tuple[int, bool]:
        """Launch the broker unless this run dir's runs already: (its pid, whether it was launched now)."""
        with self._locked():
            pid = self.pid()
            if pid is not None:
                configured = self._configured_port()
                if configured not in (None, self.port):
                    raise KafkaLauncherError(
                        f"{self.run_dir} already hosts a broker on port {configured} (pid {pid}); "
                        f"stop it first (kpimon kafka stop --port {configured})"
                    )
                log.info("a kpimon Kafka broker already runs on %s (pid %d)", self.bootstrap, pid)
                launched = False
            else:
                if not port_is_free(self.port):
                    raise KafkaLauncherError(
                        f"port {self.port} on {HOST} is already in use by another program (not the kpimon "
                        f"broker of {self.run_dir}); stop that program or choose another port with --port"
                    )
                libs = self.ensure_jars()
                controller_port = self._controller_port()
                self._write_configs(controller_port)
                self._format_storage(java, libs)
                pid = self._launch(java, libs, controller_port)
                launched = True
        return pid, launched

    def _launch(self, java: str, libs: Path, controller_port: int) -> int:
        self._rotate_log()
        cmd = self._java_command(java, libs, "kafka.Kafka", str(self.properties_file))
        log.info(
            "starting Kafka %s on %s (controller port %d, log %s)",
            self.version,
            self.bootstrap,
            controller_port,
            self.log_file,
        )
        # stdout/stderr go to kafka.log as well (both append), so JVM-level failures that happen before
        # log4j is up (bad options, class path problems) are in the file quoted by errors.
        with self.log_file.open("ab") as out:
            # A new session: the broker outlives `kpimon kafka start` and is not hit by its Ctrl-C.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                start_new_session=True,
            )
        tmp = self.pid_file.with_suffix(".pid.tmp")
        tmp.write_text(f"{self._proc.pid}\n")
        tmp.replace(self.pid_file)
        return self._proc.pid

    def _wait_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._is_our_broker(pid):
                code = self._proc.returncode if self._proc is not None and self._proc.pid == pid else None
                how = f" with exit code {code}" if code is not None else ""
                self.pid_file.unlink(missing_ok=True)
                raise KafkaLauncherError(
                    f"the Kafka broker exited during startup{how}; last lines of {self.log_file}:\n"
                    f"{_indent(_tail(self.log_file))}"
                )
            # A plain TCP check first: it is cheap and does not make aiokafka log connection errors.
            if _tcp_accepts(self.port):
                with _quiet_aiokafka():
                    if _run_sync(_answers_metadata(self.bootstrap, 2.0, self.node_id)):
                        return
            if time.monotonic() > deadline:
                raise KafkaLauncherError(
                    f"the Kafka broker (pid {pid}) did not answer on {self.bootstrap} in {timeout:.0f} s; "
                    f"last lines of {self.log_file}:\n{_indent(_tail(self.log_file))}"
                )
            time.sleep(0.25)

    def stop(self, timeout: float = 30) -> bool:
        """Stop this run dir's broker: SIGTERM, wait up to `timeout`, SIGKILL as a last resort.

        Kafka shuts down cleanly on SIGTERM (flushes logs, leaves the quorum), which keeps the next
        start fast; SIGKILL would force log recovery. Returns whether a broker was running.
        """
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> bool:
        """SIGKILL this run dir's broker, as a crash would end it (no clean shutdown); whether one ran."""
        return self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals, timeout: float = 0) -> bool:
        """Send `sig` to this run dir's broker and wait up to `timeout` for it to exit, then SIGKILL it
        (unless `sig` was that) and wait 10 s more; forget its pid. Whether a broker was running."""
        with self._locked():
            pid = self.pid()
            if pid is None:
                self.pid_file.unlink(missing_ok=True)  # a stale one
                return False
            doing = "killing" if sig == signal.SIGKILL else "stopping"
            log.info("%s the Kafka broker on %s (pid %d)", doing, self.bootstrap, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if sig != signal.SIGKILL and not self._wait_gone(pid, timeout):
                log.warning("the broker did not stop within %.0f s; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10):
                raise KafkaLauncherError(f"the Kafka broker (pid {pid}) survived SIGKILL")
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
            return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._is_our_broker(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


# --------------------------------------------------------------------------------------------------
# A cluster of local nodes
# --------------------------------------------------------------------------------------------------

#: The file in a cluster's run dir that records its size, ports and id (a single broker's run dir has none).
CLUSTER_FILE = "cluster.json"


def recorded_cluster_size(run_dir: Path) -> int | None:
    """The node count of the cluster of this run dir; None when it is not a cluster's (or unreadable)."""
    try:
        layout = json.loads((run_dir / CLUSTER_FILE).read_text())
        return len(layout["ports"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class LocalCluster:
    """A local Kafka cluster of `size` KRaft nodes on 127.0.0.1, each a broker and a controller.

    `port` is node 1's client port and names the run dir (`$KPIMON_HOME/kafka/run-<port>`, as a single
    broker's would be). The other nodes' client ports and every controller port are picked free at the first
    start and recorded in the run dir's cluster.json with the cluster id, so later starts reuse them. Each
    node is a `LocalKafka` with its own run dir (`node-<id>/`: data, config, kafka.log, pid file).
    """

    def __init__(
        self,
        size: int = 3,
        port: int = DEFAULT_PORT,
        home: Path | None = None,
        cache_dir: Path | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        if size < 1:
            raise KafkaLauncherError(f"a cluster needs at least 1 node, got {size}")
        if not 0 < port < 65536:
            raise KafkaLauncherError(f"port must be in 1..65535, got {port}")
        self.size = size
        self.port = port
        self.run_dir = (home if home is not None else LocalKafka.default_run_dir(port)).resolve()
        self.cache_dir = cache_dir
        self.extra_properties = dict(properties or {})
        self._nodes: list[LocalKafka] | None = None

    @property
    def layout_file(self) -> Path:
        return self.run_dir / CLUSTER_FILE

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated: clients reach the cluster while any one answers."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def nodes(self) -> list[LocalKafka]:
        """The nodes, in node id order (empty before the first start has recorded the layout)."""
        if self._nodes is None:
            layout = self._read_layout()
            if layout is None:
                return []
            self._nodes = self._make_nodes(layout)
        return self._nodes

    def node(self, node_id: int) -> LocalKafka:
        """The node with this id (1..size)."""
        return self.nodes[node_id - 1]

    def _read_layout(self) -> dict[str, Any] | None:
        try:
            layout: dict[str, Any] = json.loads(self.layout_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise KafkaLauncherError(
                f"cannot read {self.layout_file} ({err}); delete {self.run_dir} to start afresh"
            ) from None
        if len(layout.get("ports", ())) != self.size or layout["ports"][0] != self.port:
            raise KafkaLauncherError(
                f"{self.run_dir} holds a cluster of {len(layout.get('ports', ()))} nodes from port "
                f"{layout.get('ports', [None])[0]}, not {self.size} from port {self.port}; start it as it "
                "is, or start afresh (kpimon kafka start --fresh)"
            )
        return layout

    def _make_nodes(self, layout: Mapping[str, Any]) -> list[LocalKafka]:
        ids = range(1, len(layout["ports"]) + 1)
        quorum = Quorum(layout["cluster_id"], tuple(zip(ids, layout["controller_ports"], strict=True)))
        return [
            LocalKafka(
                port=port,
                home=self.run_dir / f"node-{node_id}",
                cache_dir=self.cache_dir,
                properties=self.extra_properties,
                node_id=node_id,
                quorum=quorum,
            )
            for node_id, port in zip(ids, layout["ports"], strict=True)
        ]

    def _ensure_layout(self) -> list[LocalKafka]:
        """The nodes, recording a new layout first if there is none (under a lock: one writer)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self._read_layout() is None:
                    if (self.run_dir / "data").exists():
                        raise KafkaLauncherError(
                            f"{self.run_dir} holds a single broker's data; start it without --brokers, or "
                            "start afresh with --fresh (deleting its topics)"
                        )
                    taken = {self.port}
                    ports = [self.port]
                    while len(ports) < 2 * self.size:
                        free = pick_free_port()
                        if free not in taken:
                            taken.add(free)
                            ports.append(free)
                    layout = {
                        "cluster_id": new_cluster_id(),
                        "ports": ports[: self.size],
                        "controller_ports": ports[self.size :],
                    }
                    tmp = self.layout_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps(layout, indent=2) + "\n")
                    tmp.replace(self.layout_file)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._nodes = None
        return self.nodes

    def start(self, timeout: float = 120) -> str:
        """Start every node that is not running; return the bootstrap list once each one is a live broker.

        The nodes are launched together and then waited for: a node's broker only comes up once the
        controller quorum has a majority, which needs the others.
        """
        java = check_java()
        nodes = self._ensure_layout()
        if not nodes[0]._jars_present(nodes[0].libs_dir):
            check_maven(f"once to download the Kafka {nodes[0].version} jars into {nodes[0].libs_dir.parent}")
        nodes[0].ensure_jars()  # once, before the nodes need them together
        launched: list[LocalKafka] | None = None
        try:
            # Each node formats its storage (a JVM of its own) and launches: side by side, as that takes
            # seconds per node.
            starts = _in_threads([functools.partial(node._start_process, java) for node in nodes])
            launched = [node for node, (_, new) in zip(nodes, starts, strict=True) if new]
            started = time.monotonic()
            deadline = started + timeout
            for node, (pid, _) in zip(nodes, starts, strict=True):
                node._wait_ready(pid, max(deadline - time.monotonic(), 1.0))
        except BaseException:
            # Not left behind half started: the nodes launched now, or all when launching failed midway.
            self._stop_nodes(nodes if launched is None else launched, timeout=10)
            raise
        if launched:
            log.info(
                "Kafka %s cluster of %d nodes ready on %s in %.1f s",
                nodes[0].version,
                len(nodes),
                self.bootstrap,
                time.monotonic() - started,
            )
        return self.bootstrap

    def status(self) -> list[tuple[LocalKafka, int | None]]:
        """Each node with the pid of its running broker, or None."""
        return [(node, node.pid()) for node in self.nodes]

    def stop(self, timeout: float = 30) -> bool:
        """Stop every node at once (SIGTERM, SIGKILL after `timeout`); whether any was running."""
        return self._stop_nodes(self.nodes, timeout)

    @staticmethod
    def _stop_nodes(nodes: list[LocalKafka], timeout: float) -> bool:
        # Together, not one after the other: the last nodes of a quorum that lost its majority would wait
        # for it in their controlled shutdown until the timeout.
        return any(_in_threads([functools.partial(node.stop, timeout) for node in nodes]))


def _in_threads(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads of their own, side by side; their results in order, or the first error."""
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [result for result in results if result is not None]
