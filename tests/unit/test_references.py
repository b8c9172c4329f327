"""Every reference in the repository's code and docs points to something in the repository.

The checker is conservative: it looks only at what unambiguously names a place in this repository.
- Markdown links `[text](target)` in .md files (outside code blocks), relative to the linking file, with
  their `#anchor`, which must be a heading of the target page.
- Path mentions in .py and .md files whose first part is a top-level entry of the repository
  (`agents/runtime/source_reader.py`, `docs/`, `reference/sql/`), relative to the repository root (or, in
  a .md file, to its folder); an `#anchor` after a .md path must be a heading there, and so must a quoted
  section after it (`docs/definitions.md, "Uncertainty"`).
  A section is a heading or the bold lead of a paragraph (`**Partition by user.**`).
- Bare Markdown file names (`README.md`, `definitions.md`): the name of a Markdown file of the repository.
Mentions preceded by `/`, `~`, `$`, `.` or a word character (`site-packages/deploy/...`), with a placeholder
(`<app-id>`, `*`, `{x}`), or that git ignores (generated output) are not references to this repository.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_BOLD_LEAD = re.compile(r"^\s*(?:[-*]\s+|\d+\.\s+)?\*\*([^*]+?)\.?\*\*")
_BARE_MD = re.compile(r"(?<![\w./~$<-])([A-Za-z][\w-]*\.md)\b(?:#([\w-]+))?")
_EXTENSIONS = "py|md|toml|json|ya?ml|sql|xml|sh|txt|cfg|ini|conf|tmpl|j2|service|jsonl|csv"
_SECTION = re.compile(r'\s*,\s*"([^"\n]+)"')


def repository_files(root: Path) -> list[str]:
    """The files of the repository as git sees them: tracked and untracked, not ignored."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listing.split("\0") if name and (root / name).exists()]


def path_mention(top_level: Iterable[str]) -> re.Pattern[str]:
    """A path whose first part is one of `top_level`, ending in a known extension or a `/`."""
    tops = "|".join(re.escape(name) for name in sorted(top_level, key=len, reverse=True))
    return re.compile(
        rf"(?<![\w./~$<>*-])((?:{tops})/(?:[\w.-]+/)*(?:[\w.-]+\.(?:{_EXTENSIONS})\b|(?=[\s`'\"),:;.]|$)))"
        rf"(?:#([\w-]+))?(?![\w/<>*{{$-])"
    )


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose_lines(text: str) -> Iterable[tuple[int, str]]:
    """(line number, line) of a Markdown text outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


@cache
def headings(page: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(section names: heading texts without markup and bold paragraph leads, anchors) of a Markdown page."""
    texts, anchors, seen = set(), set(), dict[str, int]()
    for _, line in prose_lines(page.read_text()):
        match = _HEADING.match(line)
        if match is None:
            if lead := _BOLD_LEAD.match(line):
                texts.add(lead.group(1).strip())
            continue
        heading = match.group(1)
        texts.add(re.sub(r"[`*]", "", heading).strip())
        anchor = slug(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return frozenset(texts), frozenset(anchors)


class Checker:
    """The reference checks over one repository tree."""

    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.ignored_cache: dict[str, bool] = {}
        self.mention = path_mention({PurePosixPath(name).parts[0] for name in files if "/" in name})
        self.markdown_names = {PurePosixPath(name).name for name in files if name.endswith(".md")}

    def ignored(self, relative: str) -> bool:
        """Whether git ignores the path (generated output, local secrets): not a reference."""
        if relative not in self.ignored_cache:
            result = subprocess.run(
                ["git", "check-ignore", "-q", "--no-index", relative],
                cwd=self.root,
                capture_output=True,  # "beyond a symbolic link" (kpimon/streams/...): not ignored
                check=False,
            )
            self.ignored_cache[relative] = result.returncode == 0
        return self.ignored_cache[relative]

    def resolve(self, target: str, bases: Iterable[Path]) -> Path | None:
        """The first existing place `target` names, relative to one of `bases`, inside the root."""
        for base in bases:
            path = (base / target).resolve()
            # A link of kpimon/ (kpimon/streams -> ../streams) leads back into the root: still inside.
            if path.is_relative_to(self.root) and path.exists():
                return path
        return None

    def check_anchor(self, page: Path, anchor: str | None, section: str | None) -> str | None:
        if page.suffix != ".md" or page.is_dir():
            return None
        texts, anchors = headings(page)
        if anchor is not None and anchor not in anchors:
            return f"no heading with anchor #{anchor} in {page.relative_to(self.root)}"
        if section is not None and not any(
            re.fullmatch(re.escape(section) + r"(\W.*)?", text) for text in texts
        ):
            return f'no section "{section}" in {page.relative_to(self.root)}'
        return None

    def problems(self, relative: str, text: str) -> list[str]:
        """Every broken reference in the text of the file at `relative`, as `file:line: what`."""
        source = self.root / relative
        markdown = source.suffix == ".md"
        bases = [self.root, source.parent] if markdown else [self.root]
        lines = prose_lines(text) if markdown else enumerate(text.splitlines(), 1)
        found = []
        for number, line in lines:
            where = f"{relative}:{number}"
            if markdown:
                for match in _LINK.finditer(line):
                    target = match.group(1)
                    if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
                        continue
                    name, _, anchor = target.partition("#")
                    page = self.resolve(name, [source.parent]) if name else source
                    if page is None:
                        found.append(f"{where}: link to {target}: no such file")
                    elif anchor and (problem := self.check_anchor(page, anchor, None)):
                        found.append(f"{where}: link to {target}: {problem}")
                line = _LINK.sub("", line)  # a link's target is checked above, not again as a mention
            for match in self.mention.finditer(line):
                target, anchor = match.group(1), match.group(2)
                if self.ignored(target):
                    continue
                page = self.resolve(target, bases)
                section = _SECTION.match(line, match.end())
                if page is None:
                    found.append(f"{where}: {target}: no such file or folder in the repository")
                elif problem := self.check_anchor(page, anchor, section.group(1) if section else None):
                    found.append(f"{where}: {target}: {problem}")
            for match in _BARE_MD.finditer(line):
                name, anchor = match.group(1), match.group(2)
                if name not in self.markdown_names:
                    found.append(f"{where}: {name}: no Markdown file of that name in the repository")
                    continue
                page = self.resolve(name, [self.root, source.parent])
                if page is None:  # a page elsewhere, named in passing: its anchor cannot be told
                    continue
                elif problem := self.check_anchor(page, anchor, None):
                    found.append(f"{where}: {name}: {problem}")
        return found


def test_every_reference_in_code_and_docs_points_into_the_repository() -> None:
    files = repository_files(ROOT)
    checker = Checker(ROOT, files)
    # This file is left out: its checker test holds broken references on purpose.
    checked = [
        name for name in files if name.endswith((".py", ".md")) and name != "tests/unit/test_references.py"
    ]
    assert len(checked) > 100  # the listing worked
    broken = [problem for name in checked for problem in checker.problems(name, (ROOT / name).read_text())]
    assert not broken, "references to places not in the repository:\n" + "\n".join(broken)


def test_the_checker_finds_what_it_is_for() -> None:
    """Each kind of broken reference is reported; what only looks like one is not."""
    checker = Checker(ROOT, repository_files(ROOT))
    bad = "\n".join(
        [
            "See KPIS.md for the contract and ARCHITECTURE.md, decision 4.",  # 1, 2
            "The pom is deploy/kafka/pom.xml.",  # 3: moved away
            'The rule: docs/definitions.md, "No such section".',  # 4
            "Anchored: docs/architecture.md#no-such-heading.",  # 5
            "Gone: streams/nothing_here.py and tests/integration/nowhere/.",  # 6, 7
        ]
    )
    assert len(checker.problems("agents/example.py", bad)) == 7, checker.problems("agents/example.py", bad)
    links = "[a](definitions.md#nowhere) [b](missing.md) [c](../README.md#quick-start) [d](#data-flow)"
    assert len(checker.problems("docs/architecture.md", links)) == 2, checker.problems(
        "docs/architecture.md", links
    )
    fine = "\n".join(
        [
            'docs/definitions.md, "Uncertainty"; docs/architecture.md#data-flow; README.md; reference/sql/',
            "kpimon/streams/output.py, agents/runtime/source_reader.py, pyproject.toml at the root",
            "site-packages/deploy/kafka/pom.xml; $KPIMON_HOME/cache/kafka-<version>/libs/; ~/docs/x.md",
            "deploy/secrets/web-password (generated, git ignores it); https://example.com/docs/x.md",
            "<app-id>-user-state-changelog; tests/*.py",
        ]
    )
    assert checker.problems("agents/example.py", fine) == []
