"""Reliability, against real Kafka and real `kpimon worker` processes (issue #8).

In the spirit of Kafka Streams' exactly-once system tests: a simulated history is replayed while workers
are killed, scaled, stopped, restarted without their local state, or while the broker restarts;
afterwards `kpimon-kpis` must equal `kpimon reference` exactly: nothing lost, nothing counted twice. The
tests are black-box (processes, topics, /metrics), so they hold whatever the worker's hot path looks like.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from kpimon.agents.devtools.localkafka import LocalKafka
from kpimon.streams.output import day_name, day_number
from tests.helpers import free_port, poll, slowdown
from tests.pipeline import (
    WEEK_LATENESS,
    History,
    KpisFollower,
    Series,
    check_gauges,
    events_total,
    kpi_series,
    processed,
    read_kpis,
    replay,
    replay_args,
    wait_for_equality,
    wait_until_followed_equal,
)
from tests.workers import WorkerProcess, running_worker, start_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]

# The simulated week (tests/pipeline.py): after a restart the new owner re-publishes every record (about
# 4,300 here).
LATENESS = WEEK_LATENESS
PARTITIONS = 4
#: A crashed worker's partitions move after 10 s instead of Faust's 60 s.
SESSION_TIMEOUT = "10"
#: Re-publishing every group after a restart, then the paced publish after it, on a busy 2-core machine.
EQUALITY_TIMEOUT = 240


@pytest.fixture
def history(week_history: History) -> History:
    """The session's simulated week (tests/integration/conftest.py)."""
    return week_history


def options(partitions: int = PARTITIONS) -> list[str]:
    """Worker flags: the backfill's lateness bound and a short session timeout."""
    return [
        *("--partitions", str(partitions), "--max-lateness-days", str(LATENESS)),
        *("--session-timeout", SESSION_TIMEOUT),
    ]


def start_replay(
    history: History, bootstrap: str, prefix: str, partitions: int = PARTITIONS
) -> subprocess.Popen[bytes]:
    """`kpimon replay` in the background, so workers can be disturbed while it runs."""
    return subprocess.Popen(
        replay_args(history, bootstrap, prefix, partitions),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish_replay(replayer: subprocess.Popen[bytes], timeout: float = 120) -> None:
    _, stderr = replayer.communicate(timeout=timeout)
    assert replayer.returncode == 0, stderr.decode()[-3000:]


def wait_for(
    predicate: Callable[[], bool], timeout: float, message: str, workers: list[WorkerProcess]
) -> None:
    """Poll `predicate` until true; fail with a worker's log if it died, or when time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for worker in workers:
            assert worker.proc.poll() is None, f"worker died:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"{message} not true after {timeout} s"
        time.sleep(0.2)


def republished_since(bootstrap: str, prefix: str, tmp: Path, since: str) -> Callable[[], bool]:
    """Whether every record of kpimon-kpis was published at or after `since` (an updated_at string)."""

    def check() -> bool:
        records = read_kpis(bootstrap, prefix, tmp)
        return bool(records) and all((r.updated_at or "") >= since for r in records)

    return check


def probe(worker: WorkerProcess, path: str) -> int | None:
    """The HTTP status of a worker's path, None while it does not answer."""
    try:
        return worker.get(path, timeout=2)[0]
    except OSError:
        return None


def owns_every_partition(worker: WorkerProcess, prefix: str, partitions: int) -> Callable[[], bool]:
    """Whether `worker` is ready and owns every partition of kpimon-partials (the KPI groups' topic)."""
    topic = f"{prefix}kpimon-partials"

    def check() -> bool:
        if probe(worker, "/ready") != 200:
            return False
        owned = [
            labels
            for (name, labels), value in worker.samples().items()
            if name == "kpimon_assigned_partitions" and value == 1 and ("topic", topic) in labels
        ]
        return len(owned) == partitions

    return check


def utc_now() -> str:
    """Now in the format of a record's updated_at (comparable as a string)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 1))


# --- 1. kill -9 ------------------------------------------------------------------------------------------


def test_a_worker_killed_mid_replay_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, history: History
) -> None:
    state = tmp_path / "worker"
    follower = KpisFollower(kafka_bootstrap, unique_prefix)
    with running_worker(kafka_bootstrap, unique_prefix, free_port(), state, options()) as first:
        replayer = start_replay(history, kafka_bootstrap, unique_prefix)
        third = history.messages / 3
        wait_for(lambda: processed([first]) >= third, 120, "a third processed", [first])
        # No chance to flush partials or commit offsets: the restart re-reads uncommitted input.
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        killed = time.time()
    try:
        with running_worker(kafka_bootstrap, unique_prefix, free_port(), state, options()) as second:
            ready = time.time() - killed
            finish_replay(replayer)
            replay_end = time.time()
            actual, equal_at = wait_until_followed_equal(
                follower, kafka_bootstrap, unique_prefix, tmp_path, history.expected, EQUALITY_TIMEOUT
            )
            print(
                f"\nkill -9 and restart: ready {ready:.1f} s after SIGKILL; kpimon-kpis equal to the "
                f"reference {max(0.0, equal_at - replay_end):.1f} s after the replay ended"
            )
            check_gauges([second], actual)
    finally:
        follower.stop()


# --- 2. scaling -------------------------------------------------------------------------------------------


class ScrapeMonitor:
    """Scrapes /metrics of the running workers in a loop; records series exported by two at once.

    Two scrapes are never simultaneous, so a series seen on worker A and then on worker B may just have
    moved in between. Each round therefore scrapes every worker twice, in the same order: a series that A
    exported at both of its scrapes and B exported at the scrape in between was exported by both at once
    (a rebalance moves a series in seconds, not back and forth within one round).
    """

    def __init__(self) -> None:
        self.workers: list[WorkerProcess] = []
        self.rounds = 0
        self.overlaps: list[tuple[Series, int, int]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _scrape(self, worker: WorkerProcess) -> set[Series] | None:
        try:
            return set(kpi_series(worker))
        except (OSError, AssertionError):  # starting, stopping, or killed: nothing to compare
            return None

    def _round(self) -> None:
        with self._lock:
            workers = list(self.workers)
        first = [self._scrape(w) for w in workers]
        second = [self._scrape(w) for w in workers]
        scrapes = [*first, *second]  # in time order
        n = len(workers)
        for i in range(n):
            if first[i] is None or second[i] is None:
                continue
            steady = first[i] & second[i]  # type: ignore[operator]
            for j in range(n):
                if j == i:
                    continue
                between = scrapes[j] if j > i else scrapes[n + j]  # j's scrape between i's two
                if between:
                    for series in steady & between:
                        self.overlaps.append((series, workers[i].web_port, workers[j].web_port))
        self.rounds += 1

    def run(self) -> None:
        while not self._stop.is_set():
            self._round()

    def set_workers(self, workers: list[WorkerProcess]) -> None:
        with self._lock:
            self.workers = list(workers)

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def scraping() -> Iterator[ScrapeMonitor]:
    monitor = ScrapeMonitor()
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        yield monitor
    finally:
        monitor.stop()
        thread.join(30)


#: Issue #19: after a rebalance, the records of the current and the previous day are right in kpimon-kpis
#: within this many seconds of their new owner being ready (measured: see the test's printed figure).
FRESH_SECONDS = 10.0
#: The longest wait of the source reader for a flush or publication (it is held a slice at a time).
MAX_READER_HELD_SECONDS = 2.0


def test_scaling_one_two_three_one_workers_mid_replay(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, history: History
) -> None:
    partitions = 6
    extra = options(partitions)
    total = history.messages
    follower = KpisFollower(kafka_bootstrap, unique_prefix)
    with ExitStack() as stack, scraping() as monitor:
        stack.callback(follower.stop)
        workers: list[WorkerProcess] = []

        def scale_to(n: int) -> None:
            while len(workers) < n:
                workers.append(
                    stack.enter_context(
                        running_worker(
                            kafka_bootstrap, unique_prefix, free_port(), tmp_path / f"w{len(workers)}", extra
                        )
                    )
                )
            while len(workers) > n:
                # Stopped gracefully (SIGTERM): leaves the group at once, which starts the rebalance.
                assert workers.pop().stop() == 0
            monitor.set_workers(workers)

        scale_to(1)
        replayer = start_replay(history, kafka_bootstrap, unique_prefix, partitions)
        for n, share in ((2, 0.2), (3, 0.45), (1, 0.7)):
            wait_for(lambda s=share: processed(workers) >= s * total, 180, f"{share} processed", workers)
            stopping = time.time()
            scale_to(n)
        # The last rebalance: the remaining worker takes over every group of the two stopped ones, with
        # about a third of the input still to read.
        last = workers[0]
        wait_for(
            owns_every_partition(last, unique_prefix, partitions), 120, "the last worker owns all", workers
        )
        ready = time.time()
        finish_replay(replayer)
        actual, _ = wait_until_followed_equal(
            follower, kafka_bootstrap, unique_prefix, tmp_path, history.expected, EQUALITY_TIMEOUT
        )
        newest = max(day_number(r.day) for r in history.expected)
        fresh_days = {day_name(newest), day_name(newest - 1)}
        right = poll(lambda: follower.settled_at(history.expected, fresh_days), lambda t: t is not None, 30)
        everything = follower.settled_at(history.expected)
        assert right is not None and everything is not None
        # The new owner re-publishes every group it took over (two thirds of them were the stopped
        # workers'), whether or not the values changed: when the last record of the fresh days had.
        fresh = poll(lambda: follower.republished(stopping, fresh_days), lambda t: t is not None, 30)
        assert fresh is not None
        held = last.samples()[("kpimon_reader_held_max_seconds", frozenset())]
        print(
            f"\nrebalance to one worker: the current and previous day re-published {fresh - ready:.1f} s "
            f"after it was ready and right {max(0.0, right - ready):.1f} s after; every day right "
            f"{max(0.0, everything - ready):.1f} s after; its reader waited at most {held:.2f} s for a flush "
            "or publication"
        )
        assert fresh - ready <= FRESH_SECONDS, fresh - ready
        assert right - ready <= FRESH_SECONDS, right - ready
        assert held <= MAX_READER_HELD_SECONDS, held
        # kpimon-kpis can be complete before the last worker has taken over the groups of the stopped
        # ones (their previous owners published them): the gauges are checked once it owns them all.
        check_gauges(workers, actual)
        monitor.stop()
    assert monitor.rounds > 10, monitor.rounds
    assert not monitor.overlaps, f"series exported by two workers at once: {monitor.overlaps[:5]}"


# --- 3. broker restart ------------------------------------------------------------------------------------


def test_a_broker_restart_mid_replay_is_survived(
    unique_prefix: str, tmp_path: Path, history: History
) -> None:
    # A broker of its own: the session broker is shared by every test.
    broker = LocalKafka(port=free_port(), home=tmp_path / "kafka")
    bootstrap = broker.start()
    try:
        replay(history, bootstrap, unique_prefix, PARTITIONS)
        with running_worker(bootstrap, unique_prefix, free_port(), tmp_path / "w", options()) as worker:
            wait_for(lambda: processed([worker]) >= history.messages / 3, 120, "a third", [worker])
            assert broker.stop()
            # The worker does not exit while the broker is away; it reconnects by itself.
            assert worker.proc.poll() is None, worker.log_tail()
            assert broker.start() == bootstrap
            back = time.monotonic()
            actual = wait_for_equality(bootstrap, unique_prefix, tmp_path, history.expected, EQUALITY_TIMEOUT)
            print(
                f"\nbroker restart: kpimon-kpis equal to the reference {time.monotonic() - back:.0f} s later"
            )
            check_gauges([worker], actual)
            assert worker.get("/live")[0] == 200
    finally:
        broker.stop()


# --- 4. graceful stop, restart, and a restart without local state ------------------------------------------


def test_sigterm_commits_and_a_lost_state_dir_is_rebuilt_from_the_changelogs(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, history: History
) -> None:
    state = tmp_path / "worker"
    replay(history, kafka_bootstrap, unique_prefix, PARTITIONS)
    worker = start_worker(kafka_bootstrap, unique_prefix, free_port(), state, options())
    try:
        worker.wait_ready()
        wait_for(lambda: processed([worker]) >= history.messages, 180, "all processed", [worker])
        wait_for_equality(kafka_bootstrap, unique_prefix, tmp_path, history.expected, EQUALITY_TIMEOUT)
        started = time.monotonic()
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
        stop_took = time.monotonic() - started
        assert stop_took < 20  # Faust's shutdown, not a kill after the timeout
    finally:
        worker.stop(signal.SIGKILL)

    # Restarted on its state dir: offsets were committed, so nothing is processed again.
    restarted = utc_now()
    again = start_worker(kafka_bootstrap, unique_prefix, free_port(), state, options())
    with ExitStack() as stack:
        stack.callback(again.stop)
        # Liveness and readiness are separate: live as soon as it serves, ready once the tables are
        # restored and the partitions assigned.
        wait_for(lambda: probe(again, "/live") == 200, 60, "live", [again])
        assert probe(again, "/ready") == 503
        again.wait_ready()
        ready_at = time.monotonic()
        wait_for(
            republished_since(kafka_bootstrap, unique_prefix, tmp_path, restarted),
            120,
            "republished",
            [again],
        )
        restart_republished = time.monotonic() - ready_at
        actual = wait_for_equality(kafka_bootstrap, unique_prefix, tmp_path, history.expected, 30)
        check_gauges([again], actual)
        assert events_total(again) == 0

    # Without its state dir: the tables come back from their changelogs, the output is unchanged.
    shutil.rmtree(state / "state")
    restarted = utc_now()
    with running_worker(kafka_bootstrap, unique_prefix, free_port(), state, options()) as fresh:
        ready_at = time.monotonic()
        # Every record published again from the restored tables (an empty table would publish nothing).
        wait_for(
            republished_since(kafka_bootstrap, unique_prefix, tmp_path, restarted),
            120,
            "republished",
            [fresh],
        )
        print(
            f"\nSIGTERM: stopped in {stop_took:.1f} s; restarted: every record re-published "
            f"{restart_republished:.0f} s after ready; without its state dir: "
            f"{time.monotonic() - ready_at:.0f} s after ready"
        )
        rebuilt = wait_for_equality(kafka_bootstrap, unique_prefix, tmp_path, history.expected, 30)
        assert {r.key: r.value for r in rebuilt} == {r.key: r.value for r in actual}
        check_gauges([fresh], rebuilt)
        assert events_total(fresh) == 0
        assert fresh.get("/live")[0] == 200


# --- 5. static membership: kill -9 and a restart within 5 s ------------------------------------------------

#: Longer than a restart, so a partition that moved could only have moved by a rebalance.
STATIC_SESSION_TIMEOUT = "45"
#: kpimon-kpis equals the reference this soon after the replay ends on a quiet machine (issue #19), timed by
#: the Kafka timestamps of kpimon-kpis (tests/pipeline.py, KpisFollower), not by polling; multiplied by the
#: machine's slowdown (tests/helpers.py) on a shared one. A restart that waited for the session timeout
#: (45 s) or a rebalance could not make it.
STATIC_SETTLE_SECONDS = 20.0
#: Where a restarted worker's time goes: log lines that end each phase of its start.
START_PHASES = {
    "app built (imports, pre-flight, instance id claim)": "static member",
    "group joined": "Joined group",
    "tables restored": "Restore complete!",
    "counters rebuilt, partials re-read": "re-read kpimon-partials",
    "ready": "Worker ready",
}


def assignment(worker: WorkerProcess) -> frozenset[tuple[str, str]] | None:
    """(topic, partition) a worker owns now, from its /metrics; None while it does not answer."""
    try:
        samples = worker.samples()
    except (OSError, AssertionError):
        return None
    return frozenset(
        (dict(labels)["topic"], dict(labels)["partition"])
        for (name, labels), value in samples.items()
        if name == "kpimon_assigned_partitions" and value == 1
    )


class AssignmentWatch:
    """Polls a worker's assignment in a thread; records every different assignment it sees."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.seen: list[frozenset[tuple[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            owned = assignment(self.worker)
            if owned is not None and (not self.seen or self.seen[-1] != owned):
                self.seen.append(owned)
            self._stop.wait(0.3)

    def stop(self) -> list[frozenset[tuple[str, str]]]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def test_a_static_member_killed_and_restarted_at_once_keeps_its_partitions(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, history: History
) -> None:
    static = [
        *("--partitions", str(PARTITIONS), "--max-lateness-days", str(LATENESS)),
        *("--session-timeout", STATIC_SESSION_TIMEOUT),
    ]
    with ExitStack() as stack:
        workers = [
            stack.enter_context(
                running_worker(
                    kafka_bootstrap,
                    unique_prefix,
                    free_port(),
                    tmp_path / name,
                    [*static, "--instance-id", name],
                )
            )
            for name in ("worker-0", "worker-1")
        ]
        first, other = workers
        wait_for(lambda: all(assignment(w) for w in workers), 60, "both own partitions", workers)
        before, kept = assignment(first), assignment(other)
        assert before and kept and not before & kept, (before, kept)
        watch = AssignmentWatch(other)
        follower = KpisFollower(kafka_bootstrap, unique_prefix)
        stack.callback(follower.stop)
        replayer = start_replay(history, kafka_bootstrap, unique_prefix)
        wait_for(lambda: processed(workers) >= history.messages / 3, 120, "a third processed", workers)
        killed = time.time()
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        time.sleep(3)  # a restart, as a supervisor does it: seconds, not at once
        restart_gap = time.time() - killed
        restarted = start_worker(
            kafka_bootstrap,
            unique_prefix,
            free_port(),
            tmp_path / "worker-0",
            [*static, "--instance-id", "worker-0"],
        )
        stack.callback(restarted.stop)
        assert restart_gap < 5, restart_gap
        finish_replay(replayer)
        replay_end = time.time()
        restarted.wait_ready()
        actual, equal_at = wait_until_followed_equal(
            follower, kafka_bootstrap, unique_prefix, tmp_path, history.expected, 120
        )
        settled = equal_at - replay_end
        seen = watch.stop()
        factor = slowdown()
        phases = restarted.log_times(START_PHASES)
        started = killed + restart_gap
        steps, last = [], started
        for name in START_PHASES:
            if name in phases:
                steps.append(f"{name} +{phases[name] - last:.1f} s")
                last = phases[name]
        print(
            f"\nstatic membership: restarted {restart_gap:.1f} s after SIGKILL: {', '.join(steps)} (ready "
            f"{phases.get('ready', 0.0) - killed:.1f} s after the kill); the replay ended "
            f"{replay_end - killed:.1f} s after the kill; kpimon-kpis equal to the reference {settled:.1f} s "
            f"after it (bound {STATIC_SETTLE_SECONDS:.0f} s x slowdown {factor:.1f}; load "
            f"{os.getloadavg()[0]:.1f})"
        )
        # No rebalance moved a partition: the other worker kept exactly its partitions throughout, and the
        # restarted one got its own back.
        assert seen == [kept], seen
        assert assignment(restarted) == before
        assert settled <= STATIC_SETTLE_SECONDS * factor, (settled, factor)
        check_gauges([restarted, other], actual)


def test_a_second_worker_with_an_instance_id_in_use_exits_with_a_clear_error(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    extra = [*options(), "--instance-id", "worker-0"]
    with running_worker(kafka_bootstrap, unique_prefix, free_port(), tmp_path / "a", extra) as first:
        second = start_worker(kafka_bootstrap, unique_prefix, free_port(), tmp_path / "b", extra)
        try:
            code = second.proc.wait(60)
        finally:
            second.stop(signal.SIGKILL)
        log = second.log_path.read_text()
        assert code != 0, log
        assert "instance_id 'worker-0' is in use by a running worker" in log, log
        # The first one was not fenced: it still serves and owns its partitions.
        assert first.proc.poll() is None
        assert probe(first, "/ready") == 200
    # Stopped cleanly, the id is free again at once.
    with running_worker(kafka_bootstrap, unique_prefix, free_port(), tmp_path / "c", extra) as again:
        assert probe(again, "/ready") == 200


# --- 6. a worker without its broker -------------------------------------------------------------------------

#: How long the broker stays away, and what a worker may spend meanwhile (issue #19).
OUTAGE_SECONDS = 60
MAX_OUTAGE_CPU = 0.10  # of one core
#: Log lines in the outage's 60 s: each kind of Kafka client line once a minute (about 6 kinds), the
#: summaries (2), Faust's timers overlapping (a few). Measured 0 to 5; 59 to 559 before Faust's producer
#: lines were throttled too (`producer buffer full size N`, up to 20 a second while its buffer is full).
MAX_OUTAGE_LOG_LINES = 30
#: SIGTERM during the outage ends the worker within this.
MAX_STOP_SECONDS = 30


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_lines(worker: WorkerProcess) -> list[str]:
    worker._log.flush()
    return worker.log_path.read_text(errors="replace").splitlines()


def kafka_reachable(worker: WorkerProcess) -> float | None:
    """The worker's kpimon_kafka_reachable, None while it does not answer."""
    try:
        return worker.samples().get(("kpimon_kafka_reachable", frozenset()))
    except (OSError, AssertionError):
        return None


def test_a_worker_without_its_broker_backs_off_stops_on_time_and_carries_on(
    unique_prefix: str, tmp_path: Path, history: History
) -> None:
    broker = LocalKafka(port=free_port(), home=tmp_path / "kafka")
    bootstrap = broker.start()
    try:
        replay(history, bootstrap, unique_prefix, PARTITIONS)
        with ExitStack() as stack:
            stopped, survivor = [
                stack.enter_context(
                    running_worker(bootstrap, unique_prefix, free_port(), tmp_path / name, options())
                )
                for name in ("stopped", "survivor")
            ]
            workers = [stopped, survivor]
            wait_for(lambda: processed(workers) >= history.messages / 3, 120, "a third", workers)
            assert broker.stop()
            # Noticed within seconds: /ready says 503 and the metric 0. Waited for together: /ready also says
            # 503 in a rebalance, which the broker's going away can start before the watch's next probe.
            wait_for(
                lambda: all(probe(w, "/ready") == 503 and kafka_reachable(w) == 0 for w in workers),
                30,
                "/ready 503 and kpimon_kafka_reachable 0",
                workers,
            )
            lines = [len(log_lines(w)) for w in workers]
            cpu = [cpu_seconds(w.proc.pid) for w in workers]
            started = time.monotonic()
            time.sleep(OUTAGE_SECONDS)
            elapsed = time.monotonic() - started
            used = [(cpu_seconds(w.proc.pid) - c) / elapsed for w, c in zip(workers, cpu, strict=True)]
            written_lines = [log_lines(w)[n:] for w, n in zip(workers, lines, strict=True)]
            written = [len(w) for w in written_lines]
            outage = max(
                v for (name, _), v in survivor.samples().items() if name == "kpimon_kafka_outage_seconds"
            )
            # SIGTERM in the middle of the outage: the worker ends anyway.
            stop_started = time.monotonic()
            code = stopped.stop(signal.SIGTERM, timeout=MAX_STOP_SECONDS + 30)
            took = time.monotonic() - stop_started
            assert broker.start() == bootstrap
            back = time.monotonic()
            wait_for(lambda: probe(survivor, "/ready") == 200, 60, "/ready 200 again", [survivor])
            ready_again = time.monotonic() - back
            actual = wait_for_equality(bootstrap, unique_prefix, tmp_path, history.expected, EQUALITY_TIMEOUT)
            settled = time.monotonic() - back
            print(
                f"\nbroker down {elapsed:.0f} s: CPU {used[0]:.1%} / {used[1]:.1%} of a core, "
                f"{written[0]} / {written[1]} log lines; SIGTERM during the outage ended the worker in "
                f"{took:.1f} s (exit {code}); broker back: ready {ready_again:.1f} s later, "
                f"kpimon-kpis equal to the reference {settled:.1f} s later"
            )
            assert all(u < MAX_OUTAGE_CPU for u in used), used
            assert all(n <= MAX_OUTAGE_LOG_LINES for n in written), (written, written_lines)
            assert outage >= OUTAGE_SECONDS, outage
            assert took < MAX_STOP_SECONDS and code == 0, (took, code, stopped.log_tail())
            # The stop went through the app's own stop: Faust stopped its agents, the loop's shutdown did
            # not have to cancel them (a CancelledError traceback each, "Restarting on rebalance"), as it
            # did when aiokafka's stop of the source reader's consumer raised CancelledError.
            assert "Crashed reason=CancelledError" not in stopped.log_tail(lines=10**9), stopped.log_tail()
            assert kafka_reachable(survivor) == 1
            # The stopped worker's groups move to the survivor after the session timeout.
            wait_for(
                owns_every_partition(survivor, unique_prefix, PARTITIONS),
                120,
                "the survivor owns all",
                [survivor],
            )
            check_gauges([survivor], actual)
            # The survivor carried on by itself: it never stopped.
            assert survivor.proc.poll() is None
    finally:
        broker.stop()
