"""The deployment files agree with the code: deploy/compose.yaml, deploy/Dockerfile, deploy/k8s/*.yaml.

No Docker engine or cluster runs here, so these tests check what can go wrong on paper: the files parse,
whatever they mount or COPY exists in the repository, every KPIMON_* name is a setting of
`Settings` (and the values pass its checks), ports agree with the worker's web port, probes ask for
paths the worker serves (agents/exporter/web.py), and the Prometheus configs are the generated one with
other targets and pass `promtool check config` (Debian's prometheus package; missing means failure).
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
import urllib.request
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from kpimon.agents.cli.worker import worker as worker_command
from kpimon.agents.config.kafka_security import aiokafka_options
from kpimon.agents.config.settings import Settings
from kpimon.agents.devtools.localkafka import kafka_version
from kpimon.agents.exporter import web
from kpimon.agents.exporter.web import basic_auth, web_ssl_context
from kpimon.streams.targets import load_targets, parse_targets
from monitoring.accelerated import accelerated, prometheus_files
from monitoring.config import DEFAULT, MonitoringConfig
from monitoring.generate import generated_files
from monitoring.prometheus import prometheus_config
from monitoring.rules import prometheus_rule_files
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
RULES = DEPLOY / "prometheus" / "rules"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
TARGETS_EXAMPLE = DEPLOY / "targets.example.toml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETTING_NAMES = {f.name for f in fields(Settings)}
#: The paths the worker's web server serves.
WEB_PATHS = set(web.ROUTES)
#: In a container the worker must listen on every interface, or nothing outside it can scrape or probe it.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


@pytest.fixture(scope="module")
def promtool() -> str:
    """Path of promtool, or a failure that says how to get it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `make system-deps` (installs Debian's prometheus package)")
    return path


def check_prometheus_config(promtool: str, text: str, tmp: Path) -> None:
    """`promtool check config` of `text`, with the generated rules where its `rules/*.yaml` finds them."""
    (tmp / "rules").mkdir()
    for rule_file in RULES.glob("*.yaml"):
        shutil.copy(rule_file, tmp / "rules" / rule_file.name)
    (tmp / "prometheus.yml").write_text(text)
    result = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"{len(prometheus_rule_files(DEFAULT))} rule files found" in output, output


def check_kpimon_environment(
    env: dict[str, Any], where: str, secrets: dict[str, Path] | None = None
) -> Settings:
    """Every KPIMON_* name is a setting, and the values pass Settings' own checks; the settings.

    `secrets` maps the container paths of mounted secrets to files made like them here, so the checks of
    Settings (secret files must be readable) run on real files.
    """
    strings = {name: str((secrets or {}).get(str(value), value)) for name, value in env.items()}
    unknown = {
        name
        for name in strings
        if name.startswith("KPIMON_") and name.removeprefix("KPIMON_").lower() not in SETTING_NAMES
    }
    assert unknown == set(), (
        f"{where}: not settings of kpimon.agents.config.settings.Settings: {sorted(unknown)}"
    )
    return Settings.from_env(strings)


def project_version() -> str:
    """The package version of pyproject.toml (the image tag)."""
    version: str = PYPROJECT["project"]["version"]
    return version


# --- the worker's command line ------------------------------------------------------------------------------


def test_worker_options_read_the_same_environment_names_as_settings() -> None:
    """`kpimon worker --web-port` is KPIMON_WEB_PORT, and so on: the containers configure flags by env."""
    for param in worker_command.params:
        assert param.envvar == f"KPIMON_{param.name.upper()}", param.name  # type: ignore[union-attr]
        assert param.name in SETTING_NAMES
    assert {"web_port", "web_host", "data_dir", "targets_file"} <= {p.name for p in worker_command.params}


def test_the_worker_serves_the_probed_paths() -> None:
    assert {"/metrics", "/ready", "/live"} <= WEB_PATHS


# --- deploy/Dockerfile --------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        instruction, _, arguments = line.partition(" ")
        out.append((instruction.upper(), arguments.strip()))
    return out


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ENV key=value pairs of the whole file (the last stage wins, as it is the image)."""
    env: dict[str, str] = {}
    for instruction, arguments in instructions:
        if instruction == "FROM":
            env = {}
        elif instruction == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


INSTRUCTIONS = dockerfile_instructions(DOCKERFILE.read_text())


def test_dockerfile_builds_from_python_311_slim() -> None:
    bases = [arguments.split()[0] for instruction, arguments in INSTRUCTIONS if instruction == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases


def test_dockerfile_copies_files_that_exist_and_every_package() -> None:
    """COPY sources are relative to the build context, the repository root (compose builds with `..`)."""
    copied: set[str] = set()
    for instruction, arguments in INSTRUCTIONS:
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _destination = shlex.split(arguments)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            copied.add(source.rstrip("/"))
    # The import package and every folder its symlinks point to (setuptools follows them into the wheel).
    package = ROOT / "kpimon"
    needed = {"kpimon"} | {
        str(link.resolve().relative_to(ROOT)) for link in package.iterdir() if link.is_symlink()
    }
    assert len(needed) > 1, "kpimon/ holds no symlinks to the top-level folders"
    # The crates of the compiled extensions (setuptools-rust builds them into the wheel).
    needed |= {
        str(Path(module["path"]).parent) for module in PYPROJECT["tool"]["setuptools-rust"]["ext-modules"]
    }
    assert needed <= copied, f"parts of the kpimon package not copied: {sorted(needed - copied)}"
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied


def dockerfile_stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (from its FROM), in order: the last stage is the image."""
    stages: list[list[tuple[str, str]]] = []
    for instruction, arguments in instructions:
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, arguments))
    return stages


#: What installs or is a Rust toolchain (or the C compiler and linker it needs).
RUST_TOOLCHAIN = re.compile(r"\b(rustup|rustc|cargo|gcc)\b")


def test_dockerfile_builder_has_a_rust_toolchain_and_the_image_does_not() -> None:
    """The build stage compiles the batch core into the installed package (`pip install .` runs cargo
    through setuptools-rust), and fails if it did not; the image copies only the installed package."""
    *builders, image = dockerfile_stages(INSTRUCTIONS)
    (build,) = builders
    build_runs = [arguments for instruction, arguments in build if instruction == "RUN"]
    (toolchain,) = [run for run in build_runs if "rustup" in run]
    assert "--default-toolchain" in toolchain and "--profile minimal" in toolchain
    pinned = {
        args.split("=", 1)[1] for instruction, args in build if instruction == "ARG" and "RUST_" in args
    }
    assert pinned and all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in pinned), pinned
    cargo_path = dockerfile_env(build).get("PATH", "")
    assert cargo_path.startswith(dockerfile_env(build)["CARGO_HOME"] + "/bin:"), "pip must find cargo"
    # The install comes after the toolchain, and checks that the core was built (its build is optional).
    install = next(i for i, run in enumerate(build_runs) if "pip install ." in run)
    assert build_runs.index(toolchain) < install
    assert 'python -c "import kpimon._native"' in build_runs[install]
    # The image: no compiler, no toolchain; from the build stage only the virtualenv.
    for instruction, arguments in image:
        assert not (instruction in ("RUN", "ENV", "ARG") and RUST_TOOLCHAIN.search(arguments)), arguments
        if instruction == "COPY" and arguments.startswith("--from"):
            assert shlex.split(arguments)[1:] == ["/opt/kpimon", "/opt/kpimon"], arguments


def test_docker_context_leaves_out_the_hosts_builds_of_the_core() -> None:
    """A core compiled on the host (another Python or libc) must not reach the image's wheel, nor the
    crate's target/ directory (gigabytes) the build context."""
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in ("kpimon/_native.cpython-311-x86_64-linux-gnu.so", "kpimon/_native.abi3.so", "native/target"):
        assert any(fnmatch.fnmatch(path, pattern) for pattern in ignored), path


def test_dockerfile_runs_the_worker_as_a_non_root_user() -> None:
    users = [arguments for instruction, arguments in INSTRUCTIONS if instruction == "USER"]
    assert users, "no USER: the worker would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    entrypoint = [arguments for instruction, arguments in INSTRUCTIONS if instruction == "ENTRYPOINT"][-1]
    assert yaml.safe_load(entrypoint) == ["kpimon", "worker"]
    assert "kpimon" in PYPROJECT["project"]["scripts"]


def test_dockerfile_environment_port_and_state_volume_agree_with_the_settings() -> None:
    env = dockerfile_env(INSTRUCTIONS)
    settings = check_kpimon_environment(env, "deploy/Dockerfile")
    assert settings.web_host == ALL_INTERFACES, "in a container the web server must bind every interface"
    exposed = {
        port.split("/")[0]
        for instruction, arguments in INSTRUCTIONS
        if instruction == "EXPOSE"
        for port in arguments.split()
    }
    assert exposed == {str(settings.web_port)}
    assert settings.web_port == Settings().web_port, "the image should use the worker's default port"
    volumes = [
        yaml.safe_load(arguments) for instruction, arguments in INSTRUCTIONS if instruction == "VOLUME"
    ]
    assert [str(settings.data_dir)] in volumes, "the state directory should be a volume"
    assert Path(settings.targets_file).name == "targets.toml"
    healthcheck = " ".join(
        arguments for instruction, arguments in INSTRUCTIONS if instruction == "HEALTHCHECK"
    )
    assert "/live" in healthcheck


# --- deploy/compose.yaml ------------------------------------------------------------------------------------

COMPOSE_DOC: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE_DOC["services"]
#: The worker services: built from deploy/Dockerfile and running its entrypoint (not the demo simulator).
WORKERS = {
    name: service
    for name, service in SERVICES.items()
    if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile" and "entrypoint" not in service
}


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of a service's volumes (short syntax)."""
    out = []
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        out.append((source, target))
    return out


def bind_source(source: str) -> Path | None:
    """The path of a bind mount source (relative to compose.yaml's directory); None for a named volume."""
    if source.startswith((".", "/")):
        return (DEPLOY / source).resolve()
    return None


SECRETS_DIR = "/run/secrets/"


@functools.cache
def made_secrets() -> Path:
    """deploy/make-secrets.sh run once into a temporary directory (openssl; about a second)."""
    directory = Path(tempfile.mkdtemp(prefix="kpimon-secrets-"))
    result = subprocess.run(
        [str(DEPLOY / "make-secrets.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


def service_secrets(service: dict[str, Any], name: str) -> dict[str, Path]:
    """/run/secrets/<secret> of the secrets a compose service mounts -> the file make-secrets.sh makes."""
    declared = COMPOSE_DOC.get("secrets") or {}
    out: dict[str, Path] = {}
    for secret in service.get("secrets", []):
        assert secret in declared, f"{name}: secret {secret} is not declared"
        source = (DEPLOY / declared[secret]["file"]).resolve()
        assert source.parent == DEPLOY / "secrets", f"{secret}: make-secrets.sh writes to deploy/secrets/"
        made = made_secrets() / source.name
        assert made.is_file(), f"{secret}: deploy/make-secrets.sh does not make {source.name}"
        out[SECRETS_DIR + secret] = made
    return out


def worker_settings(service: dict[str, Any], name: str) -> Settings:
    where = f"compose service {name}"
    env = service["environment"]
    secrets = service_secrets(service, name)
    for value in env.values():
        if str(value).startswith(SECRETS_DIR):
            assert str(value) in secrets, f"{where}: reads {value}, which it does not mount"
    return check_kpimon_environment(env, where, secrets)


def compose_config(name: str) -> str:
    content: str = COMPOSE_DOC["configs"][name]["content"]
    return content


def test_compose_has_kafka_two_workers_prometheus_alertmanager_and_grafana() -> None:
    assert {"kafka", "prometheus", "alertmanager", "grafana"} <= set(SERVICES)
    assert len(WORKERS) >= 2
    images = {service["image"] for service in WORKERS.values()}
    assert images == {f"kpimon:{project_version()}"}


def test_compose_builds_and_mounts_only_what_exists() -> None:
    named = set(COMPOSE_DOC.get("volumes") or {})
    for name, service in SERVICES.items():
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == ROOT, f"{name}: the Dockerfile's COPY paths are relative to the repository root"
            assert (context / service["build"]["dockerfile"]).is_file()
        for source, target in volume_mounts(service):
            path = bind_source(source)
            if path is None:
                assert source in named, f"{name}: volume {source} is not declared"
            else:
                assert path.exists(), f"{name}: mounts {source} ({path}), which does not exist"
            assert target.startswith("/"), f"{name}: {target}"
        for config in service.get("configs", []):
            assert config["source"] in COMPOSE_DOC["configs"], f"{name}: config {config['source']}"


def test_compose_kpimon_environment_names_are_settings() -> None:
    for name, service in SERVICES.items():
        env = service.get("environment") or {}
        if any(key.startswith("KPIMON_") for key in env):
            worker_settings(service, name)


def test_compose_workers_listen_where_prometheus_scrapes_them() -> None:
    for name, service in WORKERS.items():
        settings = worker_settings(service, name)
        assert settings.web_host == ALL_INTERFACES, f"{name}: must bind every interface to be scraped"
        assert [str(p) for p in service["expose"]] == [str(settings.web_port)]
        assert service.get("hostname", name) == name
        assert "ports" not in service, f"{name}: two workers cannot publish the same host port"
    document = yaml.safe_load(compose_config("prometheus"))
    (job,) = document["scrape_configs"]
    assert job["job_name"] == DEFAULT.job, "every rule selects job=kpimon"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert sorted(targets) == sorted(
        f"{name}:{worker_settings(s, name).web_port}" for name, s in WORKERS.items()
    )


def test_compose_workers_share_one_consumer_group_and_have_their_own_state() -> None:
    settings = {name: worker_settings(service, name) for name, service in WORKERS.items()}
    assert len({s.app_id for s in settings.values()}) == 1
    state = set()
    for name, service in WORKERS.items():
        mounts = dict((target, source) for source, target in volume_mounts(service))
        source = mounts.get(str(settings[name].data_dir))
        assert source is not None and bind_source(source) is None, f"{name}: state dir is not a named volume"
        state.add(source)
    assert len(state) == len(WORKERS), "workers must not share a state volume"
    # Static members: each its own instance id (a shared one would make the second exit).
    ids = {s.instance_id for s in settings.values()}
    assert "" not in ids and len(ids) == len(WORKERS), ids


def test_compose_workers_mount_the_targets_file_they_are_told_to_read() -> None:
    for name, service in WORKERS.items():
        settings = worker_settings(service, name)
        mounts = {target: source for source, target in volume_mounts(service)}
        source = bind_source(mounts[settings.targets_file])
        assert source is not None and source.is_file()
        assert load_targets(source)


def test_compose_workers_reach_the_kraft_broker() -> None:
    kafka = SERVICES["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, "one combined KRaft node"
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{kafka['KAFKA_NODE_ID']}@kafka:9093"
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16, "a KRaft cluster id is 16 bytes"
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{kafka_version()}"  # the version the pom pins
    protocols = dict(pair.split(":") for pair in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    by_address = {listener.split("://")[1]: listener.split("://")[0] for listener in advertised}
    for name, service in WORKERS.items():
        settings = worker_settings(service, name)
        listener = by_address.get(settings.broker)
        assert listener is not None, f"{name}: {settings.broker} is not an advertised listener"
        assert protocols[listener] == settings.security_protocol, (
            f"{name}: {listener} speaks {protocols[listener]}"
        )
        assert service["depends_on"]["kafka-setup"]["condition"] == "service_completed_successfully"


def test_compose_prometheus_config_is_the_generated_one_for_the_workers(
    promtool: str, tmp_path: Path
) -> None:
    document = yaml.safe_load(compose_config("prometheus"))
    (job,) = document["scrape_configs"]
    # The generated config scrapes plain HTTP; the workers here want HTTPS and basic auth.
    security = {
        key: job.pop(key) for key in ("scheme", "basic_auth", "tls_config", "follow_redirects") if key in job
    }
    # With basic auth, a redirect must not take the password to another host (Prometheus would send it).
    assert security["follow_redirects"] is False
    for name, service in WORKERS.items():
        settings = worker_settings(service, name)
        assert security["scheme"] == ("https" if settings.web_tls_cert_file else "http"), name
        assert security["basic_auth"]["username"] == settings.web_auth_user, name
        prometheus_secrets = service_secrets(SERVICES["prometheus"], "prometheus")
        password = prometheus_secrets[security["basic_auth"]["password_file"]]
        assert password.read_text() == Path(settings.web_auth_password_file).read_text()
        assert security["tls_config"]["ca_file"] in prometheus_secrets
    targets = tuple(f"{name}:{worker_settings(s, name).web_port}" for name, s in WORKERS.items())
    # Alerts go to the Alertmanager service.
    assert "9093:9093" in SERVICES["alertmanager"]["ports"]
    assert document == prometheus_config(
        replace(DEFAULT, worker_targets=targets, alertmanager_targets=("alertmanager:9093",))
    )
    check_prometheus_config(promtool, compose_config("prometheus"), tmp_path)


def test_compose_prometheus_finds_the_mounted_rules() -> None:
    prometheus = SERVICES["prometheus"]
    (config,) = prometheus["configs"]
    mounts = {target: source for source, target in volume_mounts(prometheus)}
    rule_dir = str(Path(config["target"]).parent / "rules")
    assert bind_source(mounts[rule_dir]) == RULES
    assert f"--config.file={config['target']}" in prometheus["command"]
    assert yaml.safe_load(compose_config("prometheus"))["rule_files"] == ["rules/*.yaml"]


def test_compose_alertmanager_runs_the_generated_config() -> None:
    alertmanager = SERVICES["alertmanager"]
    mounts = {target: source for source, target in volume_mounts(alertmanager)}
    config = next(a.removeprefix("--config.file=") for a in alertmanager["command"] if "--config.file=" in a)
    assert (COMPOSE.parent / mounts[config]).resolve() == ALERTMANAGER_CONFIG
    assert (
        ALERTMANAGER_CONFIG.read_text()
        == generated_files(DEFAULT)[Path("deploy/alertmanager/alertmanager.yml")]
    )
    assert any(a.startswith("--storage.path=") for a in alertmanager["command"])


def test_compose_alerts_reach_the_placeholder_receiver_which_logs_them() -> None:
    """The generated receivers post to alert_webhook_url on Alertmanager's loopback; in compose that is the
    alert-receiver service (Alertmanager's network namespace), which runs the placeholder script: run here,
    it logs each notification it is sent, with the receiver and the alert names, and says to replace it."""
    receiver = SERVICES["alert-receiver"]
    assert receiver["network_mode"] == "service:alertmanager"
    mounts = {target: bind_source(source) for source, target in volume_mounts(receiver)}
    script = mounts[receiver["command"][-1]]
    assert script == DEPLOY / "placeholder_alert_receiver.py"
    webhook = urllib.parse.urlsplit(DEFAULT.alert_webhook_url)
    assert (webhook.hostname, webhook.port) == ("127.0.0.1", 9095)
    assert f"DEFAULT_PORT = {webhook.port}" in script.read_text()
    urls = {
        c["url"]
        for r in yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["receivers"]
        for c in r["webhook_configs"]
    }
    assert all(url.startswith(DEFAULT.alert_webhook_url + "/") for url in urls)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env={"PORT": str(port), "PATH": os.environ.get("PATH", "")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "replace it" in proc.stdout.readline()
        notification = {
            "status": "firing",
            "receiver": "product-analytics-ticket",
            "alerts": [{"labels": {"alertname": "KpimonNpsBelowTarget", "segment": "ios"}}],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/alerts/product-analytics-ticket",
            data=json.dumps(notification).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            assert response.status == 200
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert "PLACEHOLDER receiver product-analytics-ticket: firing, 1 alert(s): KpimonNpsBelowTarget" in line
    assert "replace this receiver" in line


def test_compose_grafana_loads_the_generated_provisioning_and_reaches_prometheus() -> None:
    grafana = SERVICES["grafana"]
    mounts = {target: bind_source(source) for source, target in volume_mounts(grafana)}
    assert mounts["/etc/grafana/provisioning"] == ROOT / "grafana" / "provisioning"
    assert mounts[DEFAULT.grafana_dashboards_path] == ROOT / "grafana" / "dashboards"
    # The data source URL is localhost:9090: Grafana shares Prometheus' network namespace.
    assert DEFAULT.prometheus_url == "http://localhost:9090"
    assert grafana["network_mode"] == "service:prometheus"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    assert "3000:3000" in SERVICES["prometheus"]["ports"], "Grafana's port is published by its namespace"
    sdk = next(
        d for d in PYPROJECT["project"]["optional-dependencies"]["dev"] if "grafana-foundation-sdk" in d
    )
    assert grafana["image"] == f"grafana/grafana:{sdk.rsplit('!', 1)[1]}", (
        "dashboards are built for this Grafana"
    )


# --- deploy/k8s/ --------------------------------------------------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                assert {"apiVersion", "kind", "metadata"} <= set(document), path
                objects.append(document)
    return objects


OBJECTS = k8s_objects()


def k8s(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in OBJECTS if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def the(kind: str, name: str) -> dict[str, Any]:
    (found,) = k8s(kind, name)
    return found


STATEFULSET = k8s("StatefulSet")[0]
POD = STATEFULSET["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]


def container_settings() -> Settings:
    env: dict[str, str] = {}
    for source in CONTAINER.get("envFrom", []):
        env.update(the("ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in CONTAINER.get("env", []):
        # A value from the pod's own fields (the pod name): as the first pod of the StatefulSet has it.
        field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        env[variable["name"]] = f"{STATEFULSET['metadata']['name']}-0" if field else variable["value"]
    return check_kpimon_environment(env, "deploy/k8s worker container")


def named_port(port: str | int) -> int:
    """A container port by name or number."""
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in CONTAINER["ports"] if p["name"] == port]
    return int(found)


def test_k8s_objects_have_unique_names() -> None:
    keys = [(o["kind"], o["metadata"]["name"]) for o in OBJECTS]
    assert len(keys) == len(set(keys))
    assert {"StatefulSet", "Service", "ConfigMap"} <= {kind for kind, _ in keys}


def test_k8s_settings_configmap_holds_only_settings() -> None:
    settings = container_settings()
    assert settings.web_host == ALL_INTERFACES
    for source in CONTAINER["envFrom"]:
        data = the("ConfigMap", source["configMapRef"]["name"])["data"]
        assert all(key.startswith("KPIMON_") for key in data), "envFrom would import non-setting keys"


def test_k8s_statefulset_keeps_state_in_a_volume_claim_template() -> None:
    settings = container_settings()
    claims = {t["metadata"]["name"] for t in STATEFULSET["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in CONTAINER["volumeMounts"]}
    assert mounts[str(settings.data_dir)] in claims
    volumes = {v["name"]: v for v in POD.get("volumes", [])}
    assert set(mounts.values()) <= claims | set(volumes)
    for volume in volumes.values():
        if "configMap" in volume:
            the("ConfigMap", volume["configMap"]["name"])


def test_k8s_workers_are_static_members_named_after_their_pods() -> None:
    (variable,) = [e for e in CONTAINER["env"] if e["name"] == "KPIMON_INSTANCE_ID"]
    assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container_settings().instance_id == "kpimon-worker-0"


def test_k8s_targets_configmap_is_the_example_file_mounted_where_the_worker_reads() -> None:
    settings = container_settings()
    target = Path(settings.targets_file)
    mounts = {m["mountPath"]: m["name"] for m in CONTAINER["volumeMounts"]}
    volume = next(v for v in POD["volumes"] if v["name"] == mounts[str(target.parent)])
    data = the("ConfigMap", volume["configMap"]["name"])["data"]
    assert data[target.name] == TARGETS_EXAMPLE.read_text(), "copy deploy/targets.example.toml into it"
    assert parse_targets(tomllib.loads(data[target.name]))


def test_k8s_probes_and_ports_point_at_what_the_worker_serves() -> None:
    settings = container_settings()
    assert named_port("web") == settings.web_port
    live, ready = CONTAINER["livenessProbe"]["httpGet"], CONTAINER["readinessProbe"]["httpGet"]
    assert live["path"] == "/live" and ready["path"] == "/ready"
    assert {live["path"], ready["path"]} <= WEB_PATHS
    assert named_port(live["port"]) == named_port(ready["port"]) == settings.web_port


def test_k8s_services_select_the_worker_pods() -> None:
    labels = STATEFULSET["spec"]["template"]["metadata"]["labels"]
    assert STATEFULSET["spec"]["selector"]["matchLabels"].items() <= labels.items()
    headless = the("Service", STATEFULSET["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    services = [
        s for s in k8s("Service") if s["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    ]
    assert len(services) >= 2, "a headless Service and a metrics Service"
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert named_port(port["targetPort"]) == container_settings().web_port


def test_k8s_runs_the_image_of_the_dockerfile_as_its_user() -> None:
    assert CONTAINER["image"] == f"kpimon:{project_version()}"
    user = [arguments for instruction, arguments in INSTRUCTIONS if instruction == "USER"][-1].split(":")[0]
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert str(POD["securityContext"]["runAsUser"]) == user


def test_k8s_prometheus_config_scrapes_the_headless_service(promtool: str, tmp_path: Path) -> None:
    (configmap,) = [o for o in k8s("ConfigMap") if "prometheus.yml" in o.get("data", {})]
    text = configmap["data"]["prometheus.yml"]
    document = yaml.safe_load(text)
    generated = prometheus_config(DEFAULT)
    assert document["global"] == generated["global"] and document["rule_files"] == generated["rule_files"]
    (job,) = document["scrape_configs"]
    assert job["job_name"] == DEFAULT.job, "every rule selects job=kpimon"
    assert job["metrics_path"] == "/metrics" and "/metrics" in WEB_PATHS
    ((name,),) = [sd["names"] for sd in job["dns_sd_configs"]]
    match = re.fullmatch(r"_(\w+)\._tcp\.([\w-]+)", name)
    assert match, name
    service = the("Service", match[2])
    assert service["spec"]["clusterIP"] == "None", "SRV records per pod come from a headless Service"
    assert match[1] in {p["name"] for p in service["spec"]["ports"]}
    check_prometheus_config(promtool, text, tmp_path)


# --- deploy/prometheus/ on a fast clock (tests/integration/test_prometheus_e2e.py) --------------------------


def test_prometheus_files_of_the_default_config_are_the_committed_ones() -> None:
    for relative, text in prometheus_files(DEFAULT).items():
        assert (DEPLOY / "prometheus" / relative).read_text() == text, relative


def alert_rules(config: MonitoringConfig) -> list[dict[str, Any]]:
    """The alert rules of kpimon-alerts.yaml as rendered from `config`."""
    document: Any = prometheus_rule_files(config)["kpimon-alerts.yaml"]
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_accelerated_config_changes_only_for_durations_and_intervals() -> None:
    fast = accelerated(DEFAULT, for_duration="2s", scrape_interval="1s", evaluation_interval="1s")
    assert (fast.scrape_interval, fast.evaluation_interval) == ("1s", "1s")
    assert (
        prometheus_rule_files(fast)["kpimon-recording.yaml"]
        == prometheus_rule_files(DEFAULT)["kpimon-recording.yaml"]
    )
    fast_rules, default_rules = alert_rules(fast), alert_rules(DEFAULT)

    def durations_left_out(rule: dict[str, Any]) -> dict[str, Any]:
        return {**rule, "for": None, "keep_firing_for": None}

    assert [durations_left_out(r) for r in fast_rules] == [durations_left_out(r) for r in default_rules]
    # Every alert with a `for` now waits 2s; KpimonNoEvents has none in either.
    assert {r.get("for") for r in fast_rules} == {"2s", None}
    assert [r["alert"] for r in fast_rules if "for" not in r] == [
        r["alert"] for r in default_rules if "for" not in r
    ]
    # The alerts that keep firing (7 days by default) keep firing 2s: the same alerts, on the fast clock.
    kept = [r["alert"] for r in default_rules if "keep_firing_for" in r]
    assert kept and {r.get("keep_firing_for") for r in default_rules if r["alert"] in kept} == {"7d"}
    assert [r["alert"] for r in fast_rules if "keep_firing_for" in r] == kept
    assert {r["keep_firing_for"] for r in fast_rules if r["alert"] in kept} == {"2s"}


# --- deploy/compose.yaml: security (docs/security.md) ------------------------------------------------------


def test_compose_clients_reach_kafka_only_over_sasl_ssl_with_secrets_from_files() -> None:
    kafka = SERVICES["kafka"]["environment"]
    protocols = dict(pair.split(":") for pair in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in kafka["KAFKA_LISTENERS"].split(","):
        name, address = listener.split("://")
        if protocols[name] == "PLAINTEXT" and name != "CONTROLLER":
            assert address.startswith("localhost:"), f"{listener}: a plain listener must stay on loopback"
    assert "SASL_SSL" in protocols.values()
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert "SSL://" not in kafka["KAFKA_ADVERTISED_LISTENERS"], (
        "the image's start script then wants JKS files"
    )
    kafka_secrets = service_secrets(SERVICES["kafka"], "kafka")
    assert {kafka["KAFKA_SSL_KEYSTORE_LOCATION"], kafka["KAFKA_SSL_TRUSTSTORE_LOCATION"]} <= set(
        kafka_secrets
    )
    jaas = compose_config("kafka-jaas")
    assert "ScramLoginModule" in jaas and kafka["KAFKA_OPTS"].endswith(
        next(c["target"] for c in SERVICES["kafka"]["configs"] if c["source"] == "kafka-jaas")
    )
    setup = " ".join(SERVICES["kafka-setup"]["command"])
    for name, service in SERVICES.items():
        env = service.get("environment") or {}
        if "KPIMON_BROKER" not in env:
            continue
        settings = worker_settings(service, name)
        assert settings.security_protocol == "SASL_SSL", name
        assert f"--entity-name {settings.sasl_username}" in setup, f"{name}: kafka-setup creates another user"
        assert f"{settings.sasl_mechanism}=[password=" in setup
        assert aiokafka_options(settings)["sasl_plain_password"], name  # the made secret is read


def test_compose_workers_serve_https_with_basic_auth_and_redact_dead_letters() -> None:
    for name, service in WORKERS.items():
        settings = worker_settings(service, name)
        assert web_ssl_context(settings) is not None, name  # the made certificate and key load
        assert basic_auth(settings) is not None, name
        assert settings.dead_letter_redact, name


# --- Alertmanager (deploy/alertmanager/, monitoring/alertmanager.py) ---------------------------------------


def test_k8s_prometheus_sends_alerts_to_the_alertmanager_service() -> None:
    (configmap,) = [o for o in k8s("ConfigMap") if "prometheus.yml" in o.get("data", {})]
    document = yaml.safe_load(configmap["data"]["prometheus.yml"])
    (manager,) = document["alerting"]["alertmanagers"]
    ((target,),) = [group["targets"] for group in manager["static_configs"]]
    host, port = target.split(":")
    service = the("Service", host)
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == int(port)
    deployment = the("Deployment", "kpimon-alertmanager")
    template = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (container,) = template["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}[service_port["targetPort"]] == 9093


def test_k8s_alertmanager_mounts_the_configmap_made_from_the_generated_file() -> None:
    deployment = the("Deployment", "kpimon-alertmanager")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    config = next(a.removeprefix("--config.file=") for a in container["args"] if "--config.file=" in a)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = next(m for m in container["volumeMounts"] if config.startswith(m["mountPath"] + "/"))
    assert config == f"{mount['mountPath']}/{ALERTMANAGER_CONFIG.name}"
    configmap = volumes[mount["name"]]["configMap"]["name"]
    # The ConfigMap is made from the generated file, under its own name (the manifest says how).
    text = (K8S / "alertmanager.yaml").read_text()
    assert f"kubectl create configmap {configmap} --from-file=deploy/alertmanager/alertmanager.yml" in text
    assert ALERTMANAGER_CONFIG.is_file()
    storage = next(a.removeprefix("--storage.path=") for a in container["args"] if "--storage.path=" in a)
    assert any(m["mountPath"] == storage for m in container["volumeMounts"])
    assert "http" in {p["name"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"


def amtool(*args: str) -> str:
    """Run amtool (Debian's prometheus-alertmanager); its standard output."""
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool not found: run `make system-deps` (installs Debian's prometheus-alertmanager)")
    result = subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_alertmanager_config_passes_amtool() -> None:
    output = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert "SUCCESS" in output and "1 inhibit rules" in output, output


def test_every_alert_routes_to_its_team_and_severity() -> None:
    """`amtool config routes test` with each alert's real labels: critical pages, warning tickets, info
    goes to a channel, each to the alert's team; an alert of an unknown team still reaches a ticket."""
    receivers = {r["name"] for r in yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["receivers"]}
    for rule in alert_rules(DEFAULT):
        labels = {"alertname": rule["alert"], **rule["labels"], "dimension": "all", "segment": "all"}
        found = amtool(
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            *(f"{k}={v}" for k, v in labels.items()),
        ).strip()
        kind = {"critical": "page", "warning": "ticket", "info": "info"}[rule["labels"]["severity"]]
        assert found == f"{rule['labels']['team']}-{kind}", (rule["alert"], found)
        assert found in receivers
    stray = amtool(
        "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", "team=nobody", "severity=critical"
    )
    assert stray.strip() in receivers


def test_alertmanager_holds_back_every_kpi_alert_during_a_pipeline_outage() -> None:
    document = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    (rule,) = document["inhibit_rules"]
    (source,) = rule["source_matchers"]
    (target,) = rule["target_matchers"]
    sources = set(re.fullmatch(r'alertname=~"(.*)"', source)[1].split("|"))  # type: ignore[index]
    targets = set(re.fullmatch(r'alertname=~"(.*)"', target)[1].split("|"))  # type: ignore[index]
    by_team: dict[str, set[str]] = {}
    for alert in alert_rules(DEFAULT):
        by_team.setdefault(alert["labels"]["team"], set()).add(alert["alert"])
    outages = {"KpimonNoEvents", "KpimonSnapshotStale", "KpimonWorkerDown", "KpimonKafkaUnreachable"}
    assert sources == outages <= by_team["data-platform"]
    assert targets == by_team["product-analytics"], "every KPI alert, and only those"
    assert document["route"]["group_by"] == ["alertname", "dimension", "segment"]


def test_alertmanager_receivers_are_documented_placeholders() -> None:
    """The generated receivers reach nobody: each is marked PLACEHOLDER in the file (with what to replace it
    by), docs/alerts.md's section lists each, and the Compose and Kubernetes files that run it say so."""
    lines = ALERTMANAGER_CONFIG.read_text().splitlines()
    receivers = [r["name"] for r in yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["receivers"]]
    assert len(receivers) == 6
    for name in receivers:
        above = lines[lines.index(f"  - name: {name}") - 1]
        assert above.startswith("  # PLACEHOLDER: replace by "), (name, above)
    assert any(line.startswith("# PLACEHOLDER receivers") for line in lines)
    docs = (ROOT / "docs" / "alerts.md").read_text()
    section = docs.split("### Replace the placeholder receivers", 1)[1].split("\n## ", 1)[0]
    assert all(f"`{name}`" in section for name in receivers), section
    for path in (DEPLOY / "compose.yaml", K8S / "alertmanager.yaml"):
        text = path.read_text()
        assert "PLACEHOLDERS" in text and "Replace the placeholder receivers" in text, path
