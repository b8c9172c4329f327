"""The targets file: the example parses; every mistake is refused with the key it concerns."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kpimon.streams.targets import Target, TargetsError, load_targets, parse_targets
from tests.helpers import KPIMON

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "targets.example.toml"


def test_the_example_file_parses() -> None:
    targets = load_targets(EXAMPLE)
    assert targets[("nps", "7d")] == Target("nps", "7d", 30.0, "min")
    assert targets[("churn_rate", "30d")] == Target("churn_rate", "30d", 0.05, "max")
    assert targets[("stickiness", "30d")].direction == "min"
    assert ("nps", "30d") not in targets


def test_a_target_without_window_applies_to_every_window() -> None:
    targets = parse_targets({"targets": {"csat": {"min": 0.8}}})
    assert set(targets) == {("csat", "7d"), ("csat", "30d")}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"targets": {"nsp": {"min": 1}}}, "targets.nsp: unknown KPI"),
        ({"targets": {"nps": {"min": 1, "max": 2}}}, "targets.nps: give exactly one of min or max"),
        ({"targets": {"nps": {}}}, "targets.nps: give exactly one of min or max"),
        ({"targets": {"nps": {"min": "30"}}}, "targets.nps.min: must be a finite number"),
        ({"targets": {"nps": {"min": True}}}, "targets.nps.min: must be a finite number"),
        ({"targets": {"nps": {"min": float("nan")}}}, "targets.nps.min: must be a finite number"),
        ({"targets": {"nps": {"min": 1, "window": "1d"}}}, "targets.nps.window: '1d' is not a window of nps"),
        ({"targets": {"nps": {"min": 1, "treshold": 2}}}, "targets.nps.treshold: unknown key"),
        ({"targets": {"nps": 30}}, "targets.nps: must be a table"),
        ({"target": {}}, "unknown top-level key 'target'"),
    ],
)
def test_mistakes_name_the_key(document: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(TargetsError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_targets(document)


def test_a_broken_toml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[targets.nps\nmin = 3")
    with pytest.raises(TargetsError, match="not valid TOML"):
        load_targets(path)


def test_the_worker_refuses_to_start_with_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[targets.nps]\nmin = 30\nmax = 40\n")
    # No broker is needed: the file is checked first.
    result = subprocess.run(
        [KPIMON, "worker", "--targets-file", str(path), "--broker", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "targets.nps: give exactly one of min or max" in result.stderr
    assert "Traceback" not in result.stderr
