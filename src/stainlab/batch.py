"""Many files through one transform: plan, resume, run and report.

``stainlab normalize`` (images) and ``stainlab slide`` (whole slides) share this, and so can a script:

* **plan** (:func:`plan`): one output per input in one folder, named by the caller; two inputs that
  would write the same output, or an output that would replace an input, are refused before any work.
* **resume**: the output folder keeps a record (:data:`RECORD`) of what made each output: the input it
  came from and the fingerprint of its producer (the transform, see
  :meth:`~stainlab.transforms.base.Transform.fingerprint`, with the output settings). An output made
  from the same input by the same producer is a true repeat and is skipped, so running a command again
  resumes it; one made by anything else is refused with the name of what made it (``overwrite``
  replaces it). Entries are written before the work starts and outputs are written atomically, so
  after a crash every output present is complete and accounted for; the hidden partial files a killed
  run left are removed. An output the record lists is not taken as an input while the input it was
  made from is in the same batch, so an output folder inside an input folder is not read back; named
  on its own (a finished output to process further), it is an input like any other.
* **run** (:func:`run_files`): image files one after another, or in a pool of processes that each
  receive the fitted transform once. One bad file never stops the others: its :class:`Outcome` carries
  a one-line reason, and a worker killed for memory costs only the file it held (tried once more in a
  fresh worker). Slides run through :mod:`stainlab.wsi.cohort` and report the same outcomes.
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterator

from stainlab.errors import InputError, StainlabError
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image, write_image
from stainlab.threads import free_cores, limit_threads
from stainlab.transforms.base import Transform

RECORD = ".stainlab-outputs.json"
RECORD_VERSION = 1


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path


@dataclass
class Outcome:
    """One input's result, or the one-line reason it failed (with the traceback for --debug)."""

    job: Job
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    result: Any = None  # what the runner returns beside the file (a slide's SlideResult)


@dataclass(frozen=True)
class Producer:
    """What makes a batch's outputs: its fingerprint decides true repeats, its description names it."""

    key: str
    description: str

    @classmethod
    def of(cls, transform: Transform, **settings) -> "Producer":
        """The producer of ``transform`` writing with ``settings`` (format, quality, tiling...)."""
        extra = json.dumps(settings, sort_keys=True, default=str)
        params = ", ".join(f"{k}={v}" for k, v in transform.get_params().items())
        shown = "; ".join(f"{k}={v}" for k, v in sorted(settings.items()))
        return cls(f"{transform.fingerprint()}:{extra}", f"{transform.name}({params})" + (f" [{shown}]" if shown else ""))


def describe_error(err: BaseException, path=None) -> str:
    """One-line reason for ``err``, prefixed with ``path`` unless the message already names it."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        message = f"{err.filename}: {err.strerror}"
    elif isinstance(err, (StainlabError, OSError)):
        message = str(err)
    elif isinstance(err, ImportError):
        message = f"cannot import a module stainlab needs ({err})"
    elif isinstance(err, MemoryError):
        message = "out of memory"
    else:
        message = f"internal error: {type(err).__name__}: {err} (run with --debug for the traceback)"
    message = " ".join(message.split())  # one line
    if path is not None and not message.startswith(str(path)):
        message = f"{path}: {message}"
    return message


# -- the record of what made each output -------------------------------------------------------------------
class OutputRecord:
    """``OUTDIR/.stainlab-outputs.json``: output name -> the source it came from and its producer."""

    def __init__(self, folder) -> None:
        self.path = Path(folder) / RECORD
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.entries = dict(data["outputs"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise InputError(f"{self.path}: unreadable record of this folder's outputs ({err}); "
                                 "delete it to start the folder afresh") from None

    def made_from(self, path: Path, sources: set[str]) -> bool:
        """Whether ``path`` is an output this record lists (in this folder) made from one of ``sources``
        (resolved paths): such a file is this batch's own output, not a new input."""
        entry = self.entries.get(path.name)
        return entry is not None and entry["source"] in sources and path.parent.resolve() == self.path.parent.resolve()

    def claim(self, jobs: list[Job], producer: Producer) -> None:
        """Record ``producer`` as the maker of each job's output, before the work starts."""
        if not jobs:
            return
        for job in jobs:
            self.entries[job.output.name] = {"source": str(job.source.resolve()), "producer": producer.key,
                                             "made_by": producer.description}
        atomic_write_text(self.path, json.dumps({"version": RECORD_VERSION, "outputs": self.entries}, indent=1))


# -- planning ----------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """The jobs to run and the outputs skipped as true repeats."""

    jobs: list[Job]
    skipped: list[Job]
    record: OutputRecord


def plan(sources: list[Path], out_dir, output_name: Callable[[Path], str], producer: Producer,
         overwrite: bool = False) -> Plan:
    """Jobs for ``sources`` writing ``out_dir / output_name(source)``: clashes, outputs that would replace
    an input and existing outputs of another producer raise :class:`InputError` before any work; true
    repeats are skipped. The record claims the jobs to run."""
    out_dir = Path(out_dir)
    record = OutputRecord(out_dir)
    resolved = {source: str(source.resolve()) for source in sources}
    batch = set(resolved.values())
    sources = [s for s in sources if not record.made_from(s, batch)]
    by_output: dict[Path, list[Path]] = {}
    for source in sources:
        by_output.setdefault(out_dir / output_name(source), []).append(source)
    problems = [f"{out}: would be written by each of {', '.join(map(str, srcs))}; rename them or use "
                "separate runs" for out, srcs in by_output.items() if len(srcs) > 1]
    inputs = {resolved[source] for source in sources}
    problems += [f"{out}: would replace an input file; choose another output folder"
                 for out in by_output if str(out.resolve()) in inputs]
    if problems:
        raise InputError(problems[0] + (f" (and {len(problems) - 1} more like it)" if len(problems) > 1 else ""))
    jobs = [Job(srcs[0], out) for out, srcs in by_output.items()]
    todo, skipped, foreign = [], [], []
    for job in jobs:
        entry = record.entries.get(job.output.name)
        if overwrite or not job.output.exists():
            todo.append(job)
        elif entry and entry["source"] == resolved[job.source] and entry["producer"] == producer.key:
            skipped.append(job)
        else:
            foreign.append((job, entry))
    if foreign:
        job, entry = foreign[0]
        made_by = (f"was made by {entry['made_by']} from {entry['source']}" if entry
                   else "exists and was not written by stainlab")
        more = f" (and {len(foreign) - 1} more outputs there)" if len(foreign) > 1 else ""
        raise InputError(f"{job.output}: {made_by}, not by this run's {producer.description}{more}; "
                         "choose another output folder, or --overwrite to replace them")
    record.claim(todo, producer)
    remove_partials(out_dir, {job.output.name for job in todo})
    return Plan(todo, skipped, record)


def remove_partials(folder: Path, names: set[str]) -> None:
    """Delete the hidden partial files a killed run left in ``folder`` for the outputs ``names``: they are
    named ``.NAME.RANDOM.part.SUFFIX`` (see :mod:`stainlab.io.atomic`). One pass over the folder."""
    if not folder.is_dir():
        return
    for entry in os.scandir(folder):
        head, part, _ = entry.name.rpartition(".part")
        if entry.name.startswith(".") and part and head[1:].rpartition(".")[0] in names and entry.is_file():
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


# -- running image files -----------------------------------------------------------------------------------
def transform_file(transform: Transform, job: Job, overwrite: bool = True) -> Outcome:
    """Read, transform and write one image file; every failure is caught and reported in the outcome."""
    outcome = Outcome(job)
    try:
        image, outcome.notes = read_image(job.source)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = transform(image)
        outcome.notes += [str(w.message) for w in caught]
        write_image(job.output, result, overwrite=overwrite)
    except Exception as err:  # one bad file never stops the others
        outcome.error = describe_error(err, job.source)
        outcome.traceback = traceback.format_exc()
    return outcome


def run_files(transform: Transform, jobs: list[Job], workers: int = 1, retries: int = 1,
              threads: int | None = None) -> Iterator[Outcome]:
    """One :class:`Outcome` per job, in completion order. ``workers > 1`` runs the files in that many
    processes (:class:`WorkerPool`) sharing ``threads`` threads (default: the free cores): a worker that
    dies (killed for memory) fails only the file it held, which is tried again ``retries`` times in a
    fresh worker before it is reported."""
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            yield transform_file(transform, job)
        return
    workers = min(workers, len(jobs))
    yield from WorkerPool(transform, workers, max(1, (threads or free_cores()) // workers)).run(jobs, retries)


class WorkerPool:
    """Processes that each receive the transform once (pickled) and then one job at a time over a pipe.

    Unlike a ``concurrent.futures`` pool, the death of one worker breaks nothing else: the pipe of the
    dead worker reads as closed, its job is queued again (or reported after ``retries``), a fresh worker
    takes its place, and the others go on. Workers end with their parent, even when it is killed
    (``PR_SET_PDEATHSIG`` on Linux, and a closed pipe everywhere)."""

    def __init__(self, transform: Transform, workers: int, threads: int = 1) -> None:
        self.payload, self.workers, self.threads = pickle.dumps(transform), workers, threads
        self.context = multiprocessing.get_context("spawn")

    def _start(self):
        mine, theirs = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(theirs, self.payload, self.threads), daemon=True)
        process.start()
        theirs.close()
        return mine, process

    def run(self, jobs: list[Job], retries: int = 1) -> Iterator[Outcome]:
        pending, tries = collections.deque(jobs), collections.Counter()
        busy: dict = {}  # pipe -> (process, job)
        try:
            while pending or busy:
                while pending and len(busy) < self.workers:
                    pipe, process = self._start()
                    job = pending.popleft()
                    pipe.send(job)
                    busy[pipe] = (process, job)
                for pipe in wait(list(busy)):
                    process, job = busy.pop(pipe)
                    try:
                        outcome = pipe.recv()
                    except (EOFError, OSError):  # the worker died holding this job
                        process.join()
                        pipe.close()
                        tries[job] += 1
                        if tries[job] <= retries:
                            pending.appendleft(job)
                        else:
                            yield Outcome(job, error=f"{job.source}: the worker process died on it "
                                                     f"{tries[job]} times ({_exit_reason(process.exitcode)})")
                        continue
                    yield outcome
                    if pending:
                        next_job = pending.popleft()
                        pipe.send(next_job)
                        busy[pipe] = (process, next_job)
                    else:
                        pipe.close()  # the worker sees the closed pipe and exits
                        process.join()
        finally:
            for pipe, (process, _) in busy.items():
                process.kill()
                process.join()
                pipe.close()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (", probably out of memory" if name == "SIGKILL" else "")
    return f"exit status {code}"


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no effect elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def _serve(pipe, payload: bytes, threads: int) -> None:
    """A worker: unpickle the transform once, then transform each job received until the pipe closes."""
    _die_with_parent()
    limit_threads(threads)
    transform = pickle.loads(payload)
    while True:
        try:
            job = pipe.recv()
        except (EOFError, OSError):
            return
        pipe.send(transform_file(transform, job))
