"""Run `kpimon worker` processes for integration tests, and read their /metrics."""

from __future__ import annotations

import base64
import os
import re
import signal
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kpimon.agents.config.settings import Settings
from kpimon.agents.pipeline.batch import NATIVE_FAILED
from kpimon.agents.pipeline.core import ENV as CORE_ENV
from kpimon.agents.pipeline.core import CoreName, native_module, selected
from tests.helpers import KPIMON
from tests.servers import stop_group, wait_serving


def requested_core() -> CoreName:
    """The batch core the tests' workers run: `KPIMON_CORE` of the test run's environment (`make
    test-python-core` sets `python`), else the compiled core when it is built, else the Python engine.
    An unknown name, or `native` when it is not built, fails here, before any worker starts."""
    return selected(os.environ.get(CORE_ENV) or None)


def core_params() -> list[object]:
    """The batch cores a test parametrized by core runs with: only the one `KPIMON_CORE` asks for when the
    run sets it, else both (the compiled one skipped when it is not built)."""
    if os.environ.get(CORE_ENV):
        return [pytest.param(requested_core())]
    return [
        pytest.param(
            "native",
            marks=pytest.mark.skipif(native_module() is None, reason="the compiled core is not built"),
        ),
        pytest.param("python"),
    ]


class WorkerProcess:
    """A `kpimon worker` subprocess with its web port and log file.

    With `tls_ca` the web endpoints are reached over HTTPS (trusting that CA), with `auth` (user, password)
    requests carry HTTP basic auth. `executable` is the `kpimon` to run (another virtualenv's, say) and
    `cwd` its working directory. With `core`, `wait_ready` also checks that the worker runs that batch
    core (kpimon_build_info's `core` label), so a run cannot pass on another core than it asked for.

    A worker whose compiled core failed on a batch fails the test when it is stopped (`stop`, and
    `running_worker` reads its `kpimon_native_core_fallbacks_total` first): the Python engine's results
    are right, so a silent fallback would pass every other check and hide a bug of the compiled core.
    """

    def __init__(
        self,
        args: list[str],
        web_port: int,
        log_path: Path,
        env: dict[str, str],
        tls_ca: Path | None = None,
        auth: tuple[str, str] | None = None,
        *,
        executable: str = KPIMON,
        cwd: Path | None = None,
        core: CoreName | None = None,
    ) -> None:
        self.web_port = web_port
        self.core = core
        self.log_path = log_path
        self.tls_ca = tls_ca
        self.auth = auth
        self._log = log_path.open("wb")
        self._fallbacks_reported = False
        self.proc = subprocess.Popen(
            [executable, "worker", "--web-port", str(web_port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_ca is not None else "http"
        return f"{scheme}://127.0.0.1:{self.web_port}"

    def get(
        self, path: str, timeout: float = 5, auth: tuple[str, str] | bool | None = True
    ) -> tuple[int, bytes]:
        """GET a path of the worker's web server: (status, body).

        `auth` True sends the worker's credentials (if any), False none, a (user, password) those.
        """
        credentials = self.auth if auth is True else (auth or None)
        request = urllib.request.Request(self.url + path)  # noqa: S310 (loopback)
        if credentials is not None:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca is not None else None
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 90) -> None:
        """Block until /ready says 200, or fail with the worker's log; then check its batch core."""
        wait_serving(self.proc, self._ready, timeout, "worker", self.log_tail, interval=0.3)

    def _ready(self) -> bool:
        if self.get("/ready", timeout=2)[0] != 200:
            return False
        if self.core is not None:  # (an AssertionError, which wait_serving does not take for "not yet")
            running = self.running_core()
            assert running == self.core, f"the worker runs the {running} core, not {self.core}"
        return True

    def running_core(self) -> str | None:
        """The batch core the worker says it runs (kpimon_build_info's `core` label), None if not said."""
        for (name, labels), _ in self.samples().items():
            if name == "kpimon_build_info":
                return dict(labels).get("core")
        return None

    def native_core_fallbacks(self) -> float:
        """The batches the worker's compiled core failed on and left to the Python engine, summed over
        reasons (`kpimon_native_core_fallbacks_total`; 0 on the Python engine, which exports none)."""
        return sum(
            value
            for (name, _), value in self.samples().items()
            if name == "kpimon_native_core_fallbacks_total"
        )

    def check_no_fallbacks(self) -> None:
        """Fail if the worker's compiled core fell back to the Python engine: by its metric while it
        answers, and by the warning each fallback logs (which a killed worker leaves too). Fails once."""
        if self._fallbacks_reported:
            return
        problem = None
        if self.proc.poll() is None:
            fallbacks = self.native_core_fallbacks()
            if fallbacks:
                problem = f"the compiled core fell back to the Python engine {fallbacks:.0f} times"
        if problem is None and NATIVE_FAILED in self.log_tail(lines=10**9):
            problem = f"the worker logged {NATIVE_FAILED!r}"
        if problem is not None:
            self._fallbacks_reported = True
            raise AssertionError(f"{problem}:\n{self.log_tail()}")

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of /metrics as {(name, labels): value}."""
        status, body = self.get("/metrics")
        assert status == 200, body
        out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def log_times(self, markers: dict[str, str]) -> dict[str, float]:
        """Name -> Unix time of the first log line containing its marker (the names of markers not found
        are left out): where a worker's start spends its time."""
        self._log.flush()
        found: dict[str, float] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            stamp = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", line)
            if stamp is None:
                continue
            for name, marker in markers.items():
                if name not in found and marker in line:
                    # The log's local time, as `timestamp()` reads a naive datetime.
                    found[name] = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return found

    def log_tail(self, lines: int = 60) -> str:
        if not self._log.closed:  # (after `stop`, everything is written)
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the worker and wait for it to exit; kill it if it does not. Then fail if its log says
        that its compiled core fell back to the Python engine (`check_no_fallbacks`)."""
        code = stop_group(self.proc, sig, timeout)
        self._log.close()
        self.check_no_fallbacks()
        return code


#: The settings naming the topics a worker reads (the others it writes).
INPUT_TOPICS = frozenset({"clicks_topic", "surveys_topic"})


def topic_names(prefix: str, input_prefix: str) -> dict[str, str]:
    """`KPIMON_*` variables naming every topic of a worker in full: the input topics prefixed
    `input_prefix`, all others (kpimon-kpis, kpimon-partials, ...) `prefix` (with no topic prefix)."""
    defaults = Settings()
    return {
        f"KPIMON_{f.name.upper()}": f"{input_prefix if f.name in INPUT_TOPICS else prefix}"
        f"{getattr(defaults, f.name)}"
        for f in fields(Settings)
        if f.name.endswith("_topic")
    }


def start_worker(
    bootstrap: str,
    prefix: str,
    web_port: int,
    tmp: Path,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    tls_ca: Path | None = None,
    auth: tuple[str, str] | None = None,
    *,
    input_prefix: str | None = None,
) -> WorkerProcess:
    """Start a worker on topics prefixed `prefix`, app id `prefix`app, state in `tmp`/state; not waited for.

    Two workers started with the same `tmp` share the state directory: a restart of the same worker.
    `env` adds variables (settings without a flag) to the test's environment, whose KPIMON_* are dropped
    but for the batch core: `KPIMON_CORE` is `env`'s, else `requested_core()`, and `wait_ready` checks
    that the worker runs it. `tls_ca` and `auth` say how to reach its web endpoints when `extra` turns on
    web TLS or basic auth. With `input_prefix` the worker reads the clicks and surveys topics prefixed
    `input_prefix` and keeps its own topics, app id and state under `prefix`: several worker groups over
    one replay.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")},
        CORE_ENV: requested_core(),
        **(env or {}),
    }
    batch_core = selected(env[CORE_ENV])
    topics = ["--topic-prefix", prefix]
    if input_prefix is not None:
        env |= topic_names(prefix, input_prefix)
        topics = ["--topic-prefix", ""]
    args = [
        "--broker",
        bootstrap,
        *topics,
        "--app-id",
        f"{prefix}app",
        "--data-dir",
        str(tmp / "state"),
        *(extra or []),
    ]
    log_path = tmp / f"worker-{web_port}.log"
    return WorkerProcess(args, web_port, log_path, env, tls_ca, auth, core=batch_core)


@contextmanager
def running_worker(
    bootstrap: str,
    prefix: str,
    web_port: int,
    tmp: Path,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    tls_ca: Path | None = None,
    auth: tuple[str, str] | None = None,
    *,
    input_prefix: str | None = None,
) -> Iterator[WorkerProcess]:
    """A ready worker (see `start_worker`); stopped on exit, failing the test if its compiled core fell
    back to the Python engine on any batch (its `kpimon_native_core_fallbacks_total` above 0)."""
    worker = start_worker(
        bootstrap, prefix, web_port, tmp, extra, env, tls_ca, auth, input_prefix=input_prefix
    )
    try:
        worker.wait_ready()
        yield worker
        worker.check_no_fallbacks()  # by the metric, while it still answers (not after a failure)
    finally:
        worker.stop()
