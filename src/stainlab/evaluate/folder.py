"""The report folder of ``stainlab evaluate``: what it holds, which folders may be used, and what a new run
clears away.

``OUT/`` holds:

* ``.stainlab-report.json``: the mark that stainlab made this folder, written before anything else;
* ``results.json``, ``results.csv``, ``results.md``, ``report.html``, ``montage.png``, ``reference.png``;
* ``runs/LABEL.json``: each method's saved scores, the resume cache;
* ``outputs/source|truth|LABEL/KEY.png``: the images the montage shows;
* ``data/``: a simulator preset rendered for this report (it holds the benchmark's ``meta.json``).

A folder is used when it is absent, empty, marked, holds only such a rendered preset, or is a report from
before the mark (its ``results.json`` is the harness's). Anything else in it (or an unmarked folder of
``runs/`` and ``outputs/``) refuses the folder: unrelated files are never cleaned away. After a run,
:func:`prune` removes the runs and outputs of methods and images no longer asked for, so the folder shows
this run's report and nothing older.
"""

from __future__ import annotations

import json
from pathlib import Path

from stainlab.data.benchmark import META
from stainlab.errors import InputError
from stainlab.io.atomic import atomic_write_text

MARK = ".stainlab-report.json"
ENTRIES = (MARK, "results.json", "results.csv", "results.md", "report.html", "montage.png", "reference.png",
           "runs", "outputs", "data")
PRUNED = ("runs", "outputs")  # hold one file per method and image: pruned to what this run asked for


def _leftover(path: Path) -> bool:
    """A temporary file of an atomic write that a crash interrupted (``.NAME.RANDOM.part.SUFFIX``)."""
    return path.is_file() and path.name.startswith(".") and ".part" in path.name


def _ours(path: Path) -> bool:
    if path.name == "data":
        return (path / META).is_file()  # a rendered preset; a data folder of the user's is not ours
    return path.name in ENTRIES and not _leftover(path)


def _legacy_report(out: Path) -> bool:
    """A report written before the mark existed: its results.json is the harness's."""
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(results, dict) and {"table", "per_image"} <= set(results)


def check(out) -> None:
    """Raise :class:`InputError` unless ``out`` may hold a report (see the module docstring)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out}: not a folder; choose a report folder with -o")
    entries = [p for p in sorted(out.iterdir()) if not _leftover(p)]
    foreign = [p.name for p in entries if not _ours(p)]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise InputError(f"{out}: not a stainlab report folder (it holds {', '.join(foreign[:3])}{more}); "
                         "choose an empty or new folder with -o")
    marked = (out / MARK).is_file() or _legacy_report(out)
    if not marked and any(p.name != "data" for p in entries):
        raise InputError(f"{out}: holds {', '.join(p.name for p in entries)} but no {MARK}, so stainlab did "
                         "not make it; choose an empty or new folder with -o")


def claim(out) -> None:
    """:func:`check` ``out``, then mark it as a stainlab report folder."""
    check(out)
    mark = Path(out) / MARK
    if not mark.is_file():
        atomic_write_text(mark, json.dumps({"format": "stainlab evaluation report", "version": 1}) + "\n")


def prune(out, keep: set[Path]) -> list[Path]:
    """Remove every file under ``runs/`` and ``outputs/`` that is not in ``keep`` (the folders left
    empty go too), and atomic writes' leftovers; return what was removed."""
    out = Path(out)
    keep = {p.resolve() for p in keep}
    removed = [p for p in out.iterdir() if _leftover(p)] if out.is_dir() else []
    for folder in (out / name for name in PRUNED):
        if folder.is_dir():
            removed += [p for p in folder.rglob("*") if p.is_file() and p.resolve() not in keep]
    for path in removed:
        path.unlink()
    for folder in (out / name for name in PRUNED):
        if folder.is_dir():
            for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(sub.iterdir()):
                    sub.rmdir()
    return removed
