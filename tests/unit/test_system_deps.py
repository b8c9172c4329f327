"""`make run` installs only what the demo needs, and says what that is where it cannot install it.

deploy/system-deps.sh runs with a PATH of our own: the few tools the script itself uses, without Java,
Maven, apt-get or the test tools, as on a fresh machine that is not Debian.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "system-deps.sh"
MAKEFILE = (ROOT / "Makefile").read_text()
#: What the script runs besides shell builtins.
TOOLS = ("bash", "env", "sed", "head", "id")


def bare_path(tmp_path: Path) -> str:
    """A PATH directory with only TOOLS in it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def run(mode: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    args = [str(SCRIPT)] + ([mode] if mode else [])
    return subprocess.run(
        args, env={"PATH": bare_path(tmp_path)}, capture_output=True, text=True, timeout=60, check=False
    )


def test_make_run_installs_only_the_demo_dependencies() -> None:
    run_target = re.search(r"^run: (.*?)\s+##", MAKEFILE, re.MULTILINE)
    assert run_target is not None
    prerequisites = run_target[1].split()
    assert "demo-deps" in prerequisites
    assert "system-deps" not in prerequisites and "setup" not in prerequisites
    demo_deps = re.search(r"^demo-deps:.*\n\t(.*)", MAKEFILE, re.MULTILINE)
    assert demo_deps is not None and demo_deps[1].strip() == "@./deploy/system-deps.sh demo"


def test_without_apt_the_demo_mode_names_java_and_maven_only_and_how_to_get_them(tmp_path: Path) -> None:
    result = run("demo", tmp_path)
    assert result.returncode == 1
    message = result.stderr
    assert "Java 17+" in message and "Maven" in message
    assert "openjdk-17-jre-headless" in message and "maven" in message
    assert "brew install" in message and "dnf install" in message
    for not_needed in ("prometheus", "tmux", "alertmanager"):
        assert not_needed not in message, message


def test_without_apt_the_full_mode_names_the_test_tools_too(tmp_path: Path) -> None:
    result = run(None, tmp_path)
    assert result.returncode == 1
    for needed in ("openjdk-17-jre-headless", "maven", "prometheus", "prometheus-alertmanager", "tmux"):
        assert needed in result.stderr, result.stderr
