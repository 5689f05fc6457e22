"""Where a benchmark result came from: the commit it ran from and whether the tree differed from it.

Every benchmark stores ``provenance()`` under the key ``"provenance"`` of its results JSON::

    started = provenance()            # before the work: the code that is about to run
    ...
    summary["provenance"] = provenance(started)   # after it: dirty as well if anything changed meanwhile

``dirty`` is true when the files that decide a result (``src/``, ``benchmarks/*.py``,
``benchmarks/requirements.txt``, ``pyproject.toml``) differ from the commit, untracked files included,
at the start or at the end of the run, when the commit changed during the run, or when the ``stainlab``
that was imported is not this tree's ``src/stainlab`` (another checkout on ``sys.path``). Results
files, documentation and other people's notes elsewhere in the tree do not make a run dirty.

To record a clean run while the working tree has edits in progress, run the benchmark from a clean
checkout of a commit (``git worktree add ../wt HEAD``) with that checkout's ``src`` first on the path::

    PYTHONPATH=../wt/src .venv/bin/python ../wt/benchmarks/restain.py --out benchmarks/results

``tests/test_readme.py`` reads this record: README figures must come from results with ``dirty: false``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# the files whose changes can change a result; results, docs and notes elsewhere do not
DECIDING = ("src", "benchmarks/*.py", "benchmarks/requirements.txt", "pyproject.toml")


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _stainlab_source() -> tuple[str | None, bool]:
    """The imported stainlab package's folder and whether it is this tree's ``src/stainlab``."""
    module = sys.modules.get("stainlab")
    if module is None:
        try:
            import stainlab as module  # noqa: PLC0415  (only to see which copy is on the path)
        except ImportError:
            return None, False
    folder = Path(module.__file__).resolve().parent
    return str(folder), folder == (ROOT / "src" / "stainlab").resolve()


def provenance(started: dict[str, Any] | None = None) -> dict[str, Any]:
    """The commit, whether the deciding files differ from it, and which stainlab was imported.

    With ``started`` (this function's result from the start of the run), the record is the start's,
    made dirty by whatever differs at the end.
    """
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    status = _git("status", "--porcelain", "--untracked-files=all", "--", *DECIDING)
    dirty_paths = sorted(line[3:] for line in status.splitlines() if line.strip()) if status is not None else None
    stainlab_path, from_tree = _stainlab_source()
    now = {
        "commit": commit,
        "dirty": commit is None or dirty_paths is None or bool(dirty_paths) or not from_tree,
        "dirty_paths": dirty_paths,
        "stainlab_imported_from": stainlab_path,
        "stainlab_from_this_tree": from_tree,
        "tree": str(ROOT),
        "deciding_files": list(DECIDING),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if started is None:
        return now
    record = dict(started)
    changed = now["commit"] != started["commit"]
    record["dirty"] = bool(started["dirty"] or now["dirty"] or changed)
    record["at_end"] = {k: now[k] for k in ("commit", "dirty", "dirty_paths", "recorded")}
    return record


def write_results(target: Path, results: dict, markdown: str) -> None:
    """``results`` as ``target`` (JSON) and ``markdown`` beside it (``.md``); the table is printed too."""
    import json

    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=1))
    target.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    import json

    print(json.dumps(provenance(), indent=1))
