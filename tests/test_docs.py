"""The repository's own documentation holds together: every "DESIGN x.y" reference in code and
docs names a section of docs/DESIGN.md, nothing points outside the repository, every repository
path the README and docs/ name in backticks exists, the README links its docs, and the license
is declared."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".cu", ".cuh", ".h", ".cpp", ".toml", ".txt", ".in", ".cfg"}
# "DESIGN 1.2", "DESIGN.md 1.4", "DESIGN section 3", "DESIGN.md section 3", "DESIGN's 1"
REF = re.compile(r"\bDESIGN(?:\.md)?(?:'s)?(?: section)? (\d+)(?:\.(\d+))?")


def _tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to list the repository's files")
    # committed GPU/CPU run records keep the words of their day; they are data, not docs
    return [ROOT / n for n in names if Path(n).suffix in TEXT_SUFFIXES
            and not n.startswith("benchmarks/results/")]


def _design_sections() -> set[str]:
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    sections = set()
    for m in re.finditer(r"^#{2,3} (\d+)(?:\.(\d+))?[. ]", text, re.M):
        sections.add(m.group(1) if m.group(2) is None else f"{m.group(1)}.{m.group(2)}")
    return sections


def test_design_references_resolve():
    sections = _design_sections()
    assert {"1", "1.1", "1.2", "1.3", "1.4", "1.5", "2", "3"} <= sections
    bad = []
    for path in _tracked_text_files():
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in REF.finditer(line):
                key = m.group(1) if m.group(2) is None else f"{m.group(1)}.{m.group(2)}"
                if key not in sections:
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: {m.group(0)}")
    assert not bad, "references to sections docs/DESIGN.md does not have:\n" + "\n".join(bad)


def test_nothing_points_outside_the_repository():
    # The folder beside a developer's checkout that users never have, and the paper summaries
    # in it (cited as "seed" plus a number): spelled in parts so this file does not name them.
    parent, folder = "..", "shared"
    outside = re.compile("|".join([re.escape(f"{parent}/{folder}"), re.escape(f"{folder}/DESIGN"),
                                   re.escape(f"{parent}/seeds"), r"\bseeds/", r"\bseed 00\d\b"]))
    bad = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:80]}"
           for p in _tracked_text_files()
           for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
           if outside.search(line)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("doc", ["README.md", "docs/DESIGN.md", "docs/BACKENDS.md"])
def test_paths_named_in_docs_exist(doc):
    text = (ROOT / doc).read_text()
    missing = []
    for m in re.finditer(r"`([A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-*]+)+/?)`", text):
        path = m.group(1)
        if "*" in path or path.startswith(("path/", "http")) or "<" in path:
            continue
        if path.split("/")[0] not in {"fasttrack", "kernels", "csrc", "tests", "benchmarks", "scripts",
                                      "docs", ".ci"}:
            continue  # example output folders (demo-data/..., results/...)
        if not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_readme_links_the_docs_and_the_license_is_declared():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/DESIGN.md)" in readme and "(docs/BACKENDS.md)" in readme
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, re.M)
