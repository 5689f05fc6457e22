"""What the command line tells the user, on stderr: ``stainlab: error: ...`` and ``stainlab: warning:
...`` one line each, the progress bar, and the level of detail (``--quiet``, ``-v``).

A note that recurs file after file (the same grey-to-RGB conversion over a thousand tiles) is printed
the first time and counted after that; :meth:`Notes.summary` reports the counts once at the end. With
``-v`` every note is printed; with ``--quiet`` warnings and summaries are not, errors always are.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

PROG = "stainlab"
PROGRESS_MIN_ITEMS = 4  # a progress bar for more than a few items

QUIET, NORMAL, VERBOSE = 0, 1, 2
level = NORMAL


def _print(kind: str, message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"{PROG}: {kind}: {' '.join(str(message).split())}", file=sys.stderr)


def error(message: str) -> None:
    """``stainlab: error: ...`` on stderr, always."""
    _print("error", message)


def warn(message: str) -> None:
    """``stainlab: warning: ...`` on stderr unless ``--quiet``."""
    if level > QUIET:
        _print("warning", message)


def info(message: str) -> None:
    """A line of detail on stderr with ``-v`` only."""
    if level >= VERBOSE:
        _print("info", message)


def result(message: str) -> None:
    """The closing line of a command on stdout (not with ``--quiet``)."""
    if level > QUIET:
        print(f"{PROG}: {message}")


def progress_bar(total: int, unit: str):
    """A tqdm bar on stderr for more than a few items on a terminal, never with ``--quiet``."""
    from tqdm import tqdm

    hidden = level == QUIET or total < PROGRESS_MIN_ITEMS
    return tqdm(total=total, unit=unit, file=sys.stderr, desc=PROG, disable=True if hidden else None)


def skipped(out_dir, jobs: list, what: str) -> None:
    """Say that outputs already made by this same run were kept and their inputs skipped."""
    if jobs:
        warn(f"{out_dir}: {len(jobs)} output(s) exist already, made by this same run; their {what} skipped "
             "(--overwrite replaces them)")


class Notes:
    """Per-file warnings, each kind printed once and then counted (all of them with ``-v``)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, path, note: str) -> None:
        kind = re.sub(r"\d+(\.\d+)?", "#", note)  # the same note with other numbers is the same kind
        self.counts[kind] += 1
        if self.counts[kind] == 1 or level >= VERBOSE:
            warn(note if path is None else f"{path}: {note}")

    def add_message(self, message: str) -> None:
        """A library warning: ``PATH: note`` when it starts with an existing file's path, else a note."""
        head, sep, rest = message.partition(": ")
        if sep and Path(head).exists():
            self.add(head, rest)
        else:
            self.add(None, message)

    def summary(self) -> None:
        """One line per kind of note that recurred: how many more files had it."""
        if level >= VERBOSE:
            return
        for kind, count in self.counts.items():
            if count > 1:
                warn(f"and {count - 1} more file(s) with the note \"{kind.replace('#', 'N')}\" (-v lists each)")


def report(outcomes, debug: bool = False, bar=None) -> list:
    """Go through a batch's outcomes (:class:`stainlab.batch.Outcome`) as they come: print each failure,
    each kind of note once (every output with ``-v``), advance ``bar`` by one per outcome when given;
    return the failed outcomes."""
    from tqdm import tqdm

    failed, notes = [], Notes()
    for outcome in outcomes:
        for note in outcome.notes:
            notes.add(outcome.job.source, note)
        if outcome.error:
            failed.append(outcome)
            error(outcome.error)
            if debug and outcome.traceback:
                tqdm.write(outcome.traceback, file=sys.stderr)
        else:
            info(f"wrote {outcome.job.output}")
        if bar is not None:
            bar.update()
    notes.summary()
    return failed
