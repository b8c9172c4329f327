"""`pytest -q`, as CI runs it, names the batch core its workers run (tests/conftest.py): the header that
says it too is hidden by `-q`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kpimon.agents.pipeline.core import ENV as CORE_ENV

ROOT = Path(__file__).resolve().parents[2]


def test_pytest_q_names_the_batch_core_before_its_result_line() -> None:
    result = subprocess.run(
        # Any quick test of the suite will do: the line is the session's, not a test's.
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_kafka_io.py"],
        cwd=ROOT,
        env={**os.environ, CORE_ENV: "python"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:-1] == [f"kpimon workers' batch core: python ({CORE_ENV}=python)"], result.stdout
    assert " passed in " in lines[-1], result.stdout
