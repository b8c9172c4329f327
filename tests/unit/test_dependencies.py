"""Every third-party module the kpimon package imports is a declared dependency of it (pyproject.toml).

A module that only arrives with another dependency (aiohttp with faust-streaming) breaks the day that one
stops requiring it; declared, pip keeps it and its bound is ours.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kpimon"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, set[Path]]:
    """Top-level names of the absolute imports in the package's files -> the files importing them."""
    found: dict[str, set[Path]] = {}
    # os.walk, not rglob: kpimon/agents, kpimon/streams, ... are links to the top-level folders.
    walked = os.walk(PACKAGE, followlinks=True)
    files = [Path(d) / name for d, _, names in walked for name in names if name.endswith(".py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.relative_to(PACKAGE))
    return found


def declared() -> set[str]:
    """The distributions named in [project] dependencies, normalised."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalise(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


def test_every_third_party_import_of_the_package_is_a_declared_dependency() -> None:
    distributions = packages_distributions()
    third_party = {
        module: files
        for module, files in imported_modules().items()
        if module not in sys.stdlib_module_names and module not in ("kpimon", "__future__")
    }
    assert {"faust", "aiokafka", "aiohttp", "click"} <= third_party.keys()  # the scan sees the package
    undeclared = {
        module: sorted(str(f) for f in files)
        for module, files in third_party.items()
        if not {_normalise(d) for d in distributions.get(module, [module])} & declared()
    }
    assert undeclared == {}, f"imported but not in [project] dependencies: {undeclared}"
