"""The repository stands on its own: every file its code and docs point to is in it.

Three kinds of reference are checked in every text file git tracks:

- a document named in capitals (like the README) must be one the repository has;
- a relative Markdown link must lead to a file (its ``#anchor`` aside);
- a path under one of the repository's own folders (``src/…``, ``docs/…``, …) must exist
  (except in a hidden folder, such as ``bench/.logs/``, which a run makes).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT = {".py", ".md", ".toml", ".yml", ".yaml", ".html", ".txt", ".cfg", ".ini", ".sh", ""}
FOLDERS = ("src", "tests", "bench", "docs", "scripts", "requirements")

CAPITAL_DOC = re.compile(r"\b[A-Z][A-Z_]{2,}\.md\b")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"(?<![\w./-])(?:" + "|".join(FOLDERS) + r")/[\w./-]*[\w/]")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [
        ROOT / n for n in names if Path(n).suffix in TEXT and not n.startswith("requirements/")
    ]
    return [f for f in files if f.is_file()]


def dangling(path: Path, text: str) -> list[str]:
    found = []
    for match in CAPITAL_DOC.finditer(text):
        if not (ROOT / match.group(0)).is_file():
            found.append(match.group(0))
    if path.suffix == ".md":
        for match in MARKDOWN_LINK.finditer(text):
            target = match.group(1).split("#", 1)[0]
            external = "://" in target or target.startswith("mailto:")
            if target and not external and not (path.parent / target).exists():
                found.append(match.group(1))
    for match in REPO_PATH.finditer(text):
        target = match.group(0).rstrip(".")
        # A hidden folder (bench/.logs/) is one a run makes, not one the repository has.
        if "/." not in target and not (ROOT / target).exists():
            found.append(target)
    return found


FILES = tracked_text_files()


def test_the_scan_reads_the_repository() -> None:
    assert any(f.name == "README.md" for f in FILES)
    assert any(f.suffix == ".py" for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_a_missing_file(path: Path) -> None:
    missing = dangling(path, path.read_text(errors="replace"))
    assert not missing, f"{path.relative_to(ROOT)} refers to files the repository lacks: {missing}"


def test_the_scan_finds_each_kind_of_dangling_reference() -> None:
    doc = ROOT / "docs" / "example.md"
    # Built from pieces, so that this file itself names no missing file.
    notes, nowhere, nothing = "NOTES" + ".md", "nowhere" + ".md#top", "src" + "/offpost/none.py"
    text = f"see {notes}, [the design]({nowhere}) and {nothing}"
    assert dangling(doc, text) == [notes, nowhere, nothing]
    fine = "see README.md, [design](design.md#flow), src/offpost/settings.py and docs/"
    assert dangling(doc, fine) == []
