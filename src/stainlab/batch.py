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
  after a crash every output present is complete and accounted for. Files the record lists are never
  taken as inputs, so an output folder inside an input folder is not read back.
* **run** (:func:`run_files`): image files one after another, or in a pool of processes that each
  receive the fitted transform once. One bad file never stops the others: its :class:`Outcome` carries
  a one-line reason. Slides run through :mod:`stainlab.wsi.cohort` and report the same outcomes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from stainlab.errors import InputError, StainlabError
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image, write_image
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
        return cls(f"{transform.fingerprint()}:{extra}", f"{transform.name}({params}) {extra}")


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

    def made(self, path: Path) -> bool:
        """Whether ``path`` is an output this record lists (in this folder)."""
        return path.parent.resolve() == self.path.parent.resolve() and path.name in self.entries

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
    sources = [s for s in sources if not record.made(s)]
    by_output: dict[Path, list[Path]] = {}
    for source in sources:
        by_output.setdefault(out_dir / output_name(source), []).append(source)
    problems = [f"{out}: would be written by each of {', '.join(map(str, srcs))}; rename them or use "
                "separate runs" for out, srcs in by_output.items() if len(srcs) > 1]
    inputs = {source.resolve() for source in sources}
    problems += [f"{out}: would replace an input file; choose another output folder"
                 for out in by_output if out.resolve() in inputs]
    if problems:
        raise InputError(problems[0] + (f" (and {len(problems) - 1} more like it)" if len(problems) > 1 else ""))
    jobs = [Job(srcs[0], out) for out, srcs in by_output.items()]
    todo, skipped, foreign = [], [], []
    for job in jobs:
        entry = record.entries.get(job.output.name)
        if overwrite or not job.output.exists():
            todo.append(job)
        elif entry and entry["source"] == str(job.source.resolve()) and entry["producer"] == producer.key:
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
    return Plan(todo, skipped, record)


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


_WORKER_TRANSFORM: Transform | None = None


def _init_worker(transform_dict: dict, threads: int) -> None:
    """Process-pool initializer: rebuild the fitted transform once per worker."""
    import numba

    from stainlab.transforms.registry import from_dict

    global _WORKER_TRANSFORM
    _WORKER_TRANSFORM = from_dict(transform_dict)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _transform_in_worker(job: Job) -> Outcome:
    return transform_file(_WORKER_TRANSFORM, job)


def run_files(transform: Transform, jobs: list[Job], workers: int = 1) -> Iterator[Outcome]:
    """One :class:`Outcome` per job, in completion order; ``workers > 1`` uses a process pool that
    receives the fitted transform once (as its dict) per worker."""
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            yield transform_file(transform, job)
        return
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(transform.to_dict(), threads))
    try:
        futures = {pool.submit(_transform_in_worker, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as err:  # a worker died (out of memory, killed...)
                job = futures[future]
                yield Outcome(job, error=f"{job.source}: worker process failed ({type(err).__name__}: {err})")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
