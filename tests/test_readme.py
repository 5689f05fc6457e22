"""Every measured figure in README.md comes from a committed results file produced from a committed tree.

How figures are marked. Each passage of README.md that states measurements (a results table, a sentence
with seconds, MPix/s, MiB...) sits between two HTML comments, invisible on GitHub::

    <!-- figures: benchmarks/results/slides.json benchmarks/results/slides.md; not measured: 64 -->
    ... Macenko over a 20,000 x 20,000 slide in 46 s (8.7 MPix/s) ...
    <!-- /figures -->

Every number printed in such a block (table body cells and prose alike) must equal a number in one of
the named results files at the printed precision: "8.7" matches 8.654, "46" matches 46.22, "2.43x"
matches 2.4258. JSON files are flattened (numeric values, and numbers inside keys such as "500x500";
not strings, which hold dates and paths, nor the provenance record); Markdown results files (written by the same benchmark run) count too, so a derived figure
such as a mean column counts only when the benchmark itself printed it. Numbers that are not
measurements (a setting such as "800 steps", a convention such as "I0 = 255") are listed after
``not measured:`` in the marker, where a reviewer sees them. Code spans, links, and references such
as "paper 000", "Fig. 3" or "CIEDE2000" are not figures.

Provenance. A results file named in a marker must be committed (tracked by git, no uncommitted
changes) and must record, under ``provenance`` (benchmarks/provenance.py), a clean tree: ``dirty``
false, at a commit that is in this repository's history. Results produced before benchmarks recorded
provenance, or from a dirty tree, are listed in KNOWN_DIRTY with the reason; an entry there fails the
test as soon as its file is clean, so the list only shrinks.

Outside the marked blocks, a table with a purely numeric cell, or a number with a unit of time, speed or
memory ("90 s", "8.7 MPix/s", "1 GiB"), fails the test unless it is listed in UNMARKED_OK with the reason.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Results files produced from a dirty tree or before provenance was recorded: {path: why it is accepted}.
# Re-run the benchmark from a clean commit (benchmarks/README.md, "Provenance") and delete the entry.
KNOWN_DIRTY = {
    "benchmarks/results/learned.json":
        "written before benchmarks recorded provenance; a 30-minute single-thread run with tiles/s figures "
        "that need an idle machine",
    "benchmarks/results/nct.json":
        "written before benchmarks recorded provenance; its seconds per image need an idle machine",
    "benchmarks/results/virtual_staining.json":
        "written before benchmarks recorded provenance; a run of 9 minutes on an idle machine, longer "
        "on the shared one",
}

# Measured-looking phrases outside the marked blocks that are not this project's measurements, or
# whose passage has no committed results file yet: {text as in README.md: why}.
UNMARKED_OK: dict[str, str] = {}

MARKER = re.compile(r"<!--\s*figures:(?P<spec>.*?)-->(?P<body>.*?)<!--\s*/figures\s*-->", re.S)
# a printed number: not part of a word or a version ("CIEDE2000", "CMU-1", "1.4.1"); thousands commas
NUMBER = re.compile(r"(?<![\w.\-+/])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\d,]*\.\d)")
LOOSE_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# references and names that contain digits but are not figures
NOT_FIGURES = re.compile(
    r"\bpapers? \d{3}(?:(?:, | and )\d{3})*|\b(?:Fig|Eq|Sec)\. ?\d+(?:\.\d+)?|\bTable \w+"
    r"|`[^`\n]*`|\]\([^)\n]*\)|!\[[^\]\n]*\]",
    re.I)
UNIT = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?(?:s|ms|sec|seconds|min|minutes|h|hours|MPix/s|tiles/s"
                  r"|KiB|MiB|GiB|kB|MB|GB)\b")
TABLE_SEPARATOR = re.compile(r"^\|(?:\s*:?-{3,}:?\s*\|)+\s*$")


# -- reading the README ------------------------------------------------------------------------------------
def readme() -> str:
    return README.read_text(encoding="utf-8")


def without_code_blocks(text: str) -> str:
    """Fenced code blocks blanked out (line count kept), so examples are never read as figures."""
    return re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)


def blocks(text: str) -> list[dict]:
    out = []
    text = without_code_blocks(text)  # same lines, so line numbers still hold
    for match in MARKER.finditer(text):
        files, _, rest = match.group("spec").partition(";")
        key, _, values = rest.partition(":")
        assert not rest.strip() or key.strip() == "not measured", f"unknown marker option {rest.strip()!r}"
        out.append({"files": files.split(), "not_measured": set(values.replace(",", " ").split()),
                    "body": match.group("body"), "line": text[:match.start()].count("\n") + 1})
    return out


def printed_figures(body: str) -> list[str]:
    """The numbers a block prints: table body cells and prose, not header rows or separators."""
    lines = body.splitlines()
    kept = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if TABLE_SEPARATOR.match(stripped):
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and TABLE_SEPARATOR.match(lines[i + 1].strip()):
            continue  # a table's header row: labels, not figures
        kept.append(line)
    text = NOT_FIGURES.sub(" ", "\n".join(kept))
    return NUMBER.findall(text)


# -- reading the results ----------------------------------------------------------------------------------
def numbers_in(path: Path) -> list[float]:
    """Every number a results file holds: JSON values and keys (not strings: dates, paths, hashes;
    not the provenance record), or a Markdown results file's text."""
    found: list[float] = []

    def loose(text: str) -> None:
        found.extend(float(x) for x in LOOSE_NUMBER.findall(text))

    def walk(value) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            if math.isfinite(value):
                found.append(float(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                if key in ("provenance", "stainlab_git"):
                    continue
                loose(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    if path.suffix == ".json":
        walk(json.loads(path.read_text(encoding="utf-8")))
    else:
        loose(path.read_text(encoding="utf-8").replace(",", ""))
    return sorted(found)


def matches(printed: str, pool: list[float]) -> bool:
    """Whether some value in ``pool`` prints as ``printed`` (rounded to its number of decimals)."""
    value = float(printed.replace(",", ""))
    decimals = len(printed.partition(".")[2])
    tolerance = 0.5 * 10.0 ** -decimals + 1e-9 * max(1.0, abs(value))
    i = bisect.bisect_left(pool, value - tolerance)
    return i < len(pool) and pool[i] <= value + tolerance


def provenance_of(path: Path) -> dict | None:
    """The provenance record of a results file (a Markdown file's is its JSON sibling's)."""
    data = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    if "provenance" in data:
        return data["provenance"]
    if "stainlab_git" in data:  # classical.py before benchmarks/provenance.py
        legacy = data["stainlab_git"]
        return {"commit": legacy.get("commit"), "dirty": bool(legacy.get("src_uncommitted_changes", True))}
    return None


def is_clean(path: Path) -> bool:
    record = provenance_of(path)
    return bool(record) and record.get("dirty") is False and bool(record.get("commit"))


def git(*args: str) -> subprocess.CompletedProcess | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


def named_files() -> list[str]:
    return sorted({f for block in blocks(readme()) for f in block["files"]})


# -- the checks -------------------------------------------------------------------------------------------
def test_readme_has_marked_figures():
    found = blocks(readme())
    assert len(found) >= 6, "README.md lost its <!-- figures: ... --> markers"
    for block in found:
        assert block["files"], f"README.md line {block['line']}: a figures marker names no results file"
        assert printed_figures(block["body"]), f"README.md line {block['line']}: a figures block with no figures"


@pytest.mark.parametrize("block", blocks(readme()), ids=lambda b: f"line{b['line']}-{Path(b['files'][0]).stem}")
def test_every_figure_is_in_its_results(block):
    missing_files = [f for f in block["files"] if not (ROOT / f).is_file()]
    assert not missing_files, f"README.md line {block['line']} names missing results files {missing_files}"
    pool = sorted(x for f in block["files"] for x in numbers_in(ROOT / f))
    unbacked = [n for n in printed_figures(block["body"]) if n not in block["not_measured"] and not matches(n, pool)]
    assert not unbacked, (f"README.md line {block['line']}: {unbacked} printed but not found in "
                          f"{block['files']} at the printed precision")


@pytest.mark.parametrize("name", named_files())
def test_results_come_from_a_clean_committed_tree(name):
    path = ROOT / name
    if name in KNOWN_DIRTY or path.with_suffix(".json").relative_to(ROOT).as_posix() in KNOWN_DIRTY:
        assert not is_clean(path), (f"{name} now records a clean tree: delete its KNOWN_DIRTY entry in "
                                    f"tests/test_readme.py")
        return
    record = provenance_of(path)
    assert record is not None, f"{name}: no provenance recorded (re-run its benchmark; see benchmarks/provenance.py)"
    assert record.get("commit"), f"{name}: provenance has no commit"
    assert record.get("dirty") is False, (f"{name} was produced from a dirty tree "
                                          f"({record.get('dirty_paths')}); re-run it from a clean commit")
    ancestor = git("merge-base", "--is-ancestor", record["commit"], "HEAD")
    if ancestor is not None and ancestor.returncode == 1:
        pytest.fail(f"{name}: recorded commit {record['commit']} is not in this branch's history")


@pytest.mark.parametrize("name", named_files())
def test_results_files_are_committed(name):
    tracked = git("ls-files", "--error-unmatch", name)
    if tracked is None:
        pytest.skip("not a git checkout")
    assert tracked.returncode == 0, f"{name} is named in README.md but not committed"
    changed = git("diff", "--quiet", "HEAD", "--", name)
    assert changed.returncode == 0, f"{name} has uncommitted changes: commit the results with the README figures"


def test_known_dirty_entries_are_named_in_the_readme():
    named = {Path(f).with_suffix(".json").as_posix() for f in named_files()}
    stale = sorted(set(KNOWN_DIRTY) - named)
    assert not stale, f"KNOWN_DIRTY lists results the README no longer uses: {stale}"


def outside_blocks(text: str) -> str:
    text = without_code_blocks(text)
    return MARKER.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def test_no_unmarked_results_tables():
    lines = outside_blocks(readme()).splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped.startswith("|") or TABLE_SEPARATOR.match(stripped):
            continue
        cells = [c.strip().strip("*").strip() for c in stripped.strip("|").split("|")]
        numeric = [c for c in cells if re.fullmatch(r"-?\d[\d,]*(?:\.\d+)?x?", c)]
        assert not numeric, (f"README.md line {number}: a table with figures {numeric} outside a "
                             f"<!-- figures: ... --> block")


def test_no_unmarked_measurements_in_prose():
    text = re.sub(r"\s+", " ", outside_blocks(readme()))  # README lines wrap inside sentences
    for allowed in UNMARKED_OK:
        text = text.replace(allowed, " ")
    text = NOT_FIGURES.sub(" ", text)
    found = UNIT.findall(text)
    assert not found, (f"README.md states {found} outside a <!-- figures: ... --> block: mark it with the results "
                       f"file it comes from, or list it in UNMARKED_OK with the reason")
