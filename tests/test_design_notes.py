"""Citations of the design notes stay honest: every ``design.md`` section cited anywhere in the
repository exists in docs/design.md.

Code, docs and params cite a section as the file name followed by a section sign and a number
(optionally ``N.M`` for a numbered subsection, and a quoted title such as ``("Export")`` or
``, "Recipe measurements"``). A numbered section must exist as a ``## N. Title`` heading, a
subsection as a ``### N.M ...`` heading, and a quoted title as a ``### Title`` heading or a
``**Title**`` paragraph lead inside that section.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"

SECTION_SIGN = "\u00a7"
# Built from pieces so that this file does not cite a section itself.
CITATION = re.compile(
    r"design\.md\s+" + SECTION_SIGN + r"\s*(\d+)(?:\.(\d+))?"
    r"(?:\s*\(\s*\"([^\"\n]+)\"\s*\)|,\s*\"([^\"\n]+)\")?")
SECTION_HEADING = re.compile(r"^##\s+(\d+)\.\s", re.M)
SUBSECTION_HEADING = re.compile(r"^###\s+(\d+)\.(\d+)\b", re.M)

# Folders that hold pipeline outputs, environments or caches, not text anyone writes.
EXCLUDED_DIRS = {".venv", ".git", ".dvc/cache", ".dvc/tmp", "data", "models", "reports",
                 "dvclive"}


@dataclass(frozen=True)
class Citation:
    file: str            # path relative to the repository root (or as given)
    line: int            # 1-based line of the citation's start
    section: int
    subsection: int | None
    title: str | None

    def label(self) -> str:
        sub = f".{self.subsection}" if self.subsection is not None else ""
        title = f' ("{self.title}")' if self.title else ""
        return f"{SECTION_SIGN}{self.section}{sub}{title}"


def _excluded(rel: str) -> bool:
    return any(rel == d or rel.startswith(d + "/") for d in EXCLUDED_DIRS)


def repository_files(root: Path = ROOT) -> list[Path]:
    """The repository's files: tracked and untracked-but-not-ignored ones (``git ls-files``),
    or, without git, every file under ``root``; excluded folders left out."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root, check=True, capture_output=True).stdout
        rels = sorted({r for r in out.decode("utf-8", "surrogateescape").split("\0") if r})
    except (OSError, subprocess.CalledProcessError):
        rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [root / r for r in rels if not _excluded(r) and (root / r).is_file()]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary (NUL bytes, not UTF-8) or unreadable file."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def find_citations(path: Path, root: Path = ROOT) -> list[Citation]:
    """Every design-notes citation in the text file ``path`` (none for a binary file)."""
    text = read_text(path)
    if text is None:
        return []
    try:
        name = path.relative_to(root).as_posix()
    except ValueError:
        name = str(path)
    found = []
    for m in CITATION.finditer(text):
        found.append(Citation(
            file=name, line=text.count("\n", 0, m.start()) + 1, section=int(m.group(1)),
            subsection=int(m.group(2)) if m.group(2) else None,
            title=(m.group(3) or m.group(4) or "").strip() or None))
    return found


def sections(design_text: str) -> dict[int, str]:
    """``{N: body}`` of every ``## N. Title`` section (body up to the next ``## `` heading)."""
    starts = [m.start() for m in re.finditer(r"^##\s", design_text, re.M)] + [len(design_text)]
    out = {}
    for start, end in zip(starts, starts[1:]):
        m = SECTION_HEADING.match(design_text, start)
        if m:
            out[int(m.group(1))] = design_text[start:end]
    return out


def problems(citations: list[Citation], design_text: str) -> list[str]:
    """One message per citation whose section, subsection or title is not in the notes."""
    secs = sections(design_text)
    subs = {(int(a), int(b)) for a, b in SUBSECTION_HEADING.findall(design_text)}
    out = []
    for c in citations:
        where = f"{c.file}:{c.line}: cites docs/design.md {c.label()}"
        if c.section not in secs:
            out.append(f"{where}, but there is no '## {c.section}.' heading (sections: "
                       f"{sorted(secs)})")
            continue
        if c.subsection is not None and (c.section, c.subsection) not in subs:
            out.append(f"{where}, but there is no '### {c.section}.{c.subsection}' heading")
            continue
        if c.title:
            body = secs[c.section]
            title = re.escape(c.title)
            if not (re.search(rf"^###\s+(?:\d+\.\d+\s+)?{title}\s*$", body, re.M | re.I)
                    or re.search(rf"\*\*{title}\*\*", body, re.I)):
                out.append(f"{where}, but section {c.section} has no heading or bold lead "
                           f"'{c.title}'")
    return out


def test_every_cited_section_exists():
    design = DESIGN.read_text(encoding="utf-8")
    citations = [c for p in repository_files() for c in find_citations(p)]
    assert citations, "no design-notes citation found: the scan is broken"
    bad = problems(citations, design)
    assert not bad, "design-notes citations that point nowhere:\n" + "\n".join(bad)


def test_design_notes_sections_are_numbered_in_order():
    numbers = [int(n) for n in SECTION_HEADING.findall(DESIGN.read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1)), (
        f"docs/design.md: '## N. Title' headings must run 1, 2, 3, ... without gaps or "
        f"repeats, got {numbers}")


def test_a_made_up_citation_is_caught(tmp_path):
    cite = "docs/design.md " + SECTION_SIGN
    src = tmp_path / "module.py"
    src.write_text(f'"""Fine: {cite}4.\n\nMade up: {cite}99, and {cite}3 ("No such part")."""\n'
                   f"# {cite}2.7 is not a numbered subsection either\n", encoding="utf-8")
    citations = find_citations(src, root=tmp_path)
    assert [(c.line, c.section, c.subsection, c.title) for c in citations] == [
        (1, 4, None, None), (3, 99, None, None), (3, 3, None, "No such part"), (4, 2, 7, None)]
    bad = problems(citations, DESIGN.read_text(encoding="utf-8"))
    assert len(bad) == 3, bad
    assert bad[0].startswith(f"module.py:3: cites docs/design.md {SECTION_SIGN}99")
    assert "no '## 99.' heading" in bad[0]
    assert "No such part" in bad[1] and bad[1].startswith("module.py:3:")
    assert bad[2].startswith("module.py:4:") and "'### 2.7'" in bad[2]


def test_binary_files_are_skipped(tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\0docs/design.md " + SECTION_SIGN.encode() + b"99")
    assert find_citations(blob, root=tmp_path) == []
