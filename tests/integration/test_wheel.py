"""The wheel works anywhere: built, installed into a fresh virtualenv, and run outside the source tree.

A user's path, not a developer's: `pip wheel` of the project, `pip install` of that wheel (and its
dependencies from pip's cache or PyPI) into a new virtualenv in a temporary directory, and from a working
directory that is not the checkout: `kpimon kafka start` (the Kafka pom is package data), a worker, `kpimon
simulate`, `kpimon replay` and `kpimon kpis`, whose records must equal `kpimon reference` of the same files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kpimon.agents.config.settings import default_home
from kpimon.agents.devtools.localkafka import LocalKafka
from kpimon.agents.pipeline.core import ENV as CORE_ENV
from kpimon.reference.compare import compare, parse_records
from tests.helpers import free_port, poll
from tests.pipeline import processed
from tests.workers import WorkerProcess, requested_core

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
USERS, DAYS, SEED = 200, 10, 3
LATENESS = DAYS + 15  # the whole simulated history is within the lateness bound


def run(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> str:
    """Run a command; its stdout, or AssertionError with its output unless it exits 0."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}{result.stderr}"[
        -4000:
    ]
    return result.stdout


def checkout_copy(destination: Path) -> Path:
    """The files of the checkout as git sees them (tracked and untracked, not ignored), copied.

    The wheel is built from a copy so that no earlier build/ directory of the checkout can leak stale
    modules into it, and so that the test leaves the checkout's files untouched (it only adds to cargo's
    cache of compiled crates, native/target, which git ignores). Symbolic links (kpimon/streams ->
    ../streams, ...) stay links, as a clone has them.
    """
    listing = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listing.split("\0")):
        source, target = ROOT / name, destination / name
        if not os.path.lexists(source):  # deleted in the working tree, not yet committed
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination


@dataclass(frozen=True)
class Installed:
    """A virtualenv holding nothing of kpimon but the installed wheel."""

    wheel: Path
    venv: Path

    @property
    def kpimon(self) -> Path:
        return self.venv / "bin" / "kpimon"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


#: The test run's virtualenv interpreter as `make setup` ran pip: `.venv/bin/python3`, the console scripts'
#: shebang (sys.executable is `.venv/bin/python` under `.venv/bin/python -m pytest`). setuptools-rust hands
#: it to PyO3's build script (PYO3_PYTHON), whose output cargo keys on it: another spelling of the same
#: interpreter would rebuild pyo3's crates in the shared target directory.
VENV_PYTHON = Path(sys.prefix) / "bin" / "python3"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel from a copy of the checkout and install it into a new virtualenv."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = checkout_copy(tmp / "source")
    # Cargo builds in the checkout's target directory (native/target, filled by `make setup`) and reuses
    # what it compiled there: the dependencies (pyo3, ...), and the core itself unless its sources changed
    # since (the copy keeps their modification times). From scratch the build took 45 CPU s (110 s at load
    # 6-8), now 5. Cargo locks the directory while it builds, and the editable install's extension is a
    # copy (kpimon/_native*.so), so the checkout's own build is not disturbed.
    env = {**os.environ, "CARGO_TARGET_DIR": str(ROOT / "native" / "target")}
    started = time.monotonic()
    run(
        *(VENV_PYTHON, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", tmp / "dist", source),
        env=env,
        timeout=1200,
    )
    print(f"\nwheel built in {time.monotonic() - started:.1f} s")
    (wheel,) = (tmp / "dist").glob("kpimon-*.whl")
    venv = tmp / "venv"
    # A virtualenv without a pip of its own (ensurepip took 60 s at load 16-20, 7 CPU s), which the test
    # run's pip installs into: the same wheel and dependencies as the venv's pip would install.
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    started = time.monotonic()
    run(
        *(VENV_PYTHON, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet"),
        *("--disable-pip-version-check", wheel),
    )
    print(f"wheel and its dependencies installed in {time.monotonic() - started:.1f} s")
    return Installed(wheel, venv)


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment: no KPIMON_* or PYTHONPATH of the test run, a KPIMON_HOME of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_") and k != "PYTHONPATH"}
    env["KPIMON_HOME"] = str(tmp_path / "home")
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The working directory of every command: empty, outside the checkout."""
    path = tmp_path / "work"
    path.mkdir()
    assert not path.resolve().is_relative_to(ROOT)
    return path


def test_the_wheel_installs_one_import_package(installed: Installed, workdir: Path) -> None:
    """The wheel's top level is `kpimon` and its dist-info; installed, every file is under them."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        top = {name.split("/")[0] for name in wheel.namelist()}
        assert "kpimon/agents/devtools/kafka/pom.xml" in wheel.namelist()  # `kafka start` needs it
        if shutil.which("cargo"):  # optional in the build, but built wherever cargo is
            assert any(name.startswith("kpimon/_native.") for name in wheel.namelist()), wheel.namelist()
    dist_info = {name for name in top if name.endswith(".dist-info")}
    assert len(dist_info) == 1 and dist_info.pop().startswith("kpimon-"), top
    assert top - {name for name in top if name.endswith(".dist-info")} == {"kpimon"}, top

    probe = (
        "import json, importlib.metadata as m, kpimon\n"
        "files = m.files('kpimon') or []\n"
        "top = sorted({f.parts[0] for f in files if f.parts[0] != '..'})\n"
        "from kpimon.agents.pipeline import core\n"
        "print(json.dumps({'file': kpimon.__file__, 'top': top, 'core': core.selected()}))\n"
    )
    found = json.loads(run(installed.python, "-c", probe, cwd=workdir))
    if shutil.which("cargo"):
        assert found["core"] == "native", found  # the wheel's compiled core loads outside the checkout
    assert Path(found["file"]).is_relative_to(installed.venv), found  # not the checkout
    assert [name for name in found["top"] if not name.endswith(".dist-info")] == ["kpimon"], found


@dataclass
class Broker:
    """A broker started by the installed `kpimon kafka start` on its own port."""

    port: int
    run_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def broker(installed: Installed, user_env: dict[str, str], workdir: Path) -> Iterator[Broker]:
    """`kpimon kafka start` from the wheel; the jars come from the machine's cache (no second download)."""
    port = free_port()
    cache = default_home() / "cache"  # the test run's KPIMON_HOME, not the user's
    started = run(
        installed.kpimon, "kafka", "start", "--port", port, "--cache-dir", cache, cwd=workdir, env=user_env
    )
    run_dir = Path(user_env["KPIMON_HOME"]) / "kafka" / f"run-{port}"
    try:
        assert started.splitlines()[-1] == f"127.0.0.1:{port}"
        yield Broker(port, run_dir)
        stopped = run(installed.kpimon, "kafka", "stop", "--port", port, cwd=workdir, env=user_env)
        assert stopped.strip() == f"stopped 127.0.0.1:{port}"
    finally:
        LocalKafka(port=port, home=run_dir).stop(timeout=10)  # never leave a broker behind


def test_the_installed_wheel_runs_the_pipeline_and_equals_the_reference(
    installed: Installed, user_env: dict[str, str], workdir: Path, broker: Broker
) -> None:
    def kpimon(*args: object) -> str:
        return run(installed.kpimon, *args, cwd=workdir, env=user_env)

    now = str(int(time.time() * 1000))
    kpimon(
        "simulate",
        *("--users", str(USERS), "--days", str(DAYS), "--seed", str(SEED), "--now", now),
        *("--no-signup-fraction", "0", "--out-dir", "history"),
    )
    clicks, surveys = workdir / "history" / "clicks.jsonl", workdir / "history" / "surveys.jsonl"
    kpimon(
        "reference",
        *("--clicks", clicks, "--surveys", surveys, "--now", now),
        *("--max-lateness-days", str(LATENESS), "--out", "reference.jsonl"),
    )
    expected = parse_records((workdir / "reference.jsonl").read_bytes())
    assert expected

    messages = sum(path.read_bytes().count(b"\n") for path in (clicks, surveys))
    # The worker runs the batch core the test run asks for (`KPIMON_CORE`, the one user setting it gets),
    # and `wait_ready` checks that it does, as for every other test's worker: the installed wheel's
    # compiled core must load and serve, not leave the batches to the Python engine.
    batch_core = requested_core()
    worker = WorkerProcess(
        ["--broker", broker.bootstrap, "--partitions", "2", "--max-lateness-days", str(LATENESS)],
        free_port(),
        workdir / "worker.log",
        {**user_env, CORE_ENV: batch_core},
        executable=str(installed.kpimon),
        cwd=workdir,
        core=batch_core,
    )
    try:
        worker.wait_ready()
        kpimon("replay", "--clicks", clicks, "--surveys", surveys, "--broker", broker.bootstrap, "--quiet")
        poll(
            lambda: processed([worker]), lambda n: n >= messages, timeout=120, message=f"{messages} processed"
        )

        def differences() -> list[str]:
            kpimon("kpis", "--broker", broker.bootstrap, "--out", "kpis.jsonl")
            return compare(expected, parse_records((workdir / "kpis.jsonl").read_bytes()))

        assert (
            poll(differences, lambda found: not found, timeout=90, interval=2, message="kpis = reference")
            == []
        )
        assert processed([worker]) == messages  # each message counted once
        worker.check_no_fallbacks()  # by the metric, while it still answers (`stop` reads the log)
    finally:
        worker.stop()
    # The worker kept its state under the user's KPIMON_HOME, not in the checkout or the working directory.
    assert (Path(user_env["KPIMON_HOME"]) / "state").is_dir()
