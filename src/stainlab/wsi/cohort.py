"""Normalizing a cohort of slides, in this process or on a Dask cluster.

:func:`run_cohort`: each slide is one task running :func:`stainlab.wsi.normalize.normalize_slide`, the very
code of the single-process path, so a deterministic method gives the same pixels either way. The
fitted transform (a classical method's target, or a network's weights) is scattered to every worker
once and the tasks refer to it, instead of being pickled into each task. :func:`run_slide_tiles`
spreads one large slide over the cluster instead, by runs of tile rows.

Failures are split by cause. A problem of the input (a corrupt slide, a missing level, no tissue, an
output that exists) is a :class:`stainlab.errors.StainlabError`: retrying cannot help, so the task
returns it as the slide's outcome at once, and the slide fails in one line as in one process (a
slide task, or a task of tile rows, which also stops the slide's other tasks). Anything else (a
worker killed for memory, a transient I/O error) is raised, and Dask runs the task again up to
``retries`` times, on any worker; a slide that still fails is reported, and the other slides go on. A
retried slide resumes from the tile rows its work store already holds (:mod:`stainlab.wsi.pyramid`).

Where results go. On a cluster of several machines (``--scheduler``) a worker writes to the paths the
client gives it, on *its* file system. Two ways never lose a result:

* **shared** (the default): the output folder (and, for one slide spread over the cluster, its work
  folder beside the output) must be on a mount every worker can write at the same path. Paths are made
  absolute in the client first (a worker's working folder is not the client's). After a task reports
  success the client checks that the output (or the task's tile rows) is there, with the size the worker
  wrote; if not, the slide fails in one line that says so, the cohort's slides not yet finished are
  cancelled (they would be lost the same way), and the command exits 1.
* **return** (``return_to_client=True``, ``--return-to-client``): a worker writes into a scratch folder of
  its own, reads the encoded output back (at most :data:`RETURN_MAX_BYTES`) and returns the bytes; the
  client writes them atomically into the output folder. One slide spread over the cluster returns its
  tile rows to the client's work store instead. The output folder then needs no sharing; the inputs
  still must be readable by every worker at the same path (a missing input says so in one line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

from stainlab.batch import Job, Outcome
from stainlab.errors import StainlabError
from stainlab.threads import limit_threads, usable_cores
from stainlab.io.atomic import atomic_path
from stainlab.wsi.normalize import (SlideOptions, SlidePlan, SlideResult, compute_rows, finish_slide, normalize_slide,
                                   plan_slide, row_runs, slide_function)
from stainlab.wsi.tiling import RowStats
from stainlab.transforms.base import Transform

DEFAULT_RETRIES = 2
DEFAULT_ROWS_PER_TASK = 4  # tile rows per task when one slide is spread over the cluster
RETURN_MAX_BYTES = 1 << 30  # --return-to-client: the largest encoded output a worker sends back (1 GiB)
SHARED_WAIT = 10.0         # seconds the client waits for a worker's output to show on a shared mount
SHARED_HINT = ("give an output folder every worker can write at the same path (a shared mount), "
               "or use --return-to-client")


def _done(job: Job, result: SlideResult) -> Outcome:
    return Outcome(job, notes=list(result.notes), result=result)


def run_slide(job: Job, transform: Transform, options: SlideOptions,
              progress: Callable[[int, int], None] | None = None) -> Outcome:
    """One slide; input problems become the outcome's error, anything else is raised (to be retried)."""
    try:
        return _done(job, normalize_slide(job.source, job.output, transform, options, progress))
    except (StainlabError, FileExistsError) as err:
        return _failed(job, err)


def _rows_task(job: Job, plan: SlidePlan, fn, start: int, stop: int, threads: int | None = None) -> RowStats | Outcome:
    """:func:`compute_rows` as a cluster task: the rows' totals, or the slide's failed outcome when the
    input is at fault (returned, not raised, so that Dask does not retry it)."""
    _use_threads(threads)
    missing = _missing_input(job)
    if missing:
        return missing
    try:
        return compute_rows(plan, fn, start, stop)
    except StainlabError as err:
        return _failed(job, err)


def _failed(job: Job, err: BaseException) -> Outcome:
    """The outcome of a slide that failed on an input problem (called while handling ``err``)."""
    return Outcome(job, error=_describe(err, job.source), traceback=traceback.format_exc())


def _describe(err: BaseException, source: Path) -> str:
    message = str(err)
    return message if message.startswith(str(source)) else f"{source}: {message}"


def run_local(jobs: list[Job], transform: Transform, options: SlideOptions,
              progress: Callable[[int, int], None] | None = None) -> Iterator[Outcome]:
    """The single-process path: slides one after another, progress reported per tile row."""
    for job in jobs:
        try:
            yield run_slide(job, transform, options, progress)
        except Exception as err:  # no retry here: report and go on
            yield Outcome(job, error=f"{job.source}: {type(err).__name__}: {err}",
                               traceback=traceback.format_exc())


@contextlib.contextmanager
def cluster_client(workers: int | None = None, scheduler: str | None = None):
    """A Dask client: of the scheduler at ``scheduler``, or of an embedded LocalCluster of ``workers``
    single-threaded processes (closed on exit)."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def _use_threads(threads: int | None) -> None:
    """Size numba and torch in a worker's task: to ``threads`` (this run's ``--threads`` shared over the
    workers of an embedded cluster), or to the worker's cores shared over the tasks it runs at once. A
    worker is a new process: the client's thread count does not reach it by itself, and numba would
    start one thread per core in every worker."""
    if threads is None:
        try:
            from dask.distributed import get_worker

            threads = max(1, usable_cores() // get_worker().state.nthreads)
        except Exception:  # not in a worker
            return
    limit_threads(threads)


def worker_threads(threads: int | None, workers: int | None, scheduler: str | None) -> int | None:
    """Threads per task on the cluster: ``threads`` shared over the ``workers`` of an embedded
    cluster; None (each worker's own cores) on a cluster at ``scheduler``."""
    if scheduler or not threads:
        return None
    return max(1, threads // max(workers or usable_cores(), 1))


def _worker_name() -> str:
    try:
        from dask.distributed import get_worker

        return f"worker {get_worker().address}"
    except Exception:  # not in a worker
        return "this process"


def _missing_input(job: Job) -> Outcome | None:
    """A failed outcome when the worker cannot see the slide (its file system does not hold it)."""
    if job.source.exists():
        return None
    return Outcome(job, error=f"{job.source}: not found on {_worker_name()}; every worker must read the "
                              "inputs at the same path (a shared mount)")


def _absolute(job: Job) -> Job:
    """The job with absolute paths, as the client sees them (a worker's working folder is not ours)."""
    return Job(Path(os.path.abspath(job.source)), Path(os.path.abspath(job.output)))


def _scratch(*parts) -> Path:
    """A worker-local scratch folder for one task (a retry on the same worker finds its work again)."""
    key = hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "stainlab-return" / key


def _slide_task(job: Job, transform: Transform, options: SlideOptions,
                threads: int | None = None) -> tuple[Outcome, int | None]:
    """:func:`run_slide` on a worker writing to the shared output folder: the outcome and the size of
    the file the worker wrote (for the client to check that it sees the same file)."""
    _use_threads(threads)
    missing = _missing_input(job)
    if missing:
        return missing, None
    outcome = run_slide(job, transform, options)
    return outcome, (outcome.result.output.stat().st_size if outcome.result else None)


def _slide_back_task(job: Job, transform: Transform, options: SlideOptions,
                     threads: int | None = None) -> tuple[Outcome, bytes | None]:
    """:func:`run_slide` on a worker writing into its own scratch folder: the outcome and the encoded
    output, for the client to write."""
    _use_threads(threads)
    missing = _missing_input(job)
    if missing:
        return missing, None
    scratch = _scratch(job.source, job.output)
    local = scratch / job.output.name
    outcome = run_slide(Job(job.source, local), transform, dataclasses.replace(options, overwrite=True))
    outcome.job = job
    if outcome.error:
        return outcome, None
    try:
        size = local.stat().st_size
        if size > RETURN_MAX_BYTES:
            return Outcome(job, error=f"{job.output}: {size / 2**30:.1f} GiB is more than --return-to-client "
                                      f"brings back ({RETURN_MAX_BYTES / 2**30:g} GiB); give an output folder "
                                      "every worker can write at the same path (a shared mount)"), None
        data = local.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    outcome.result.output = job.output
    return outcome, data


def _seen(check: Callable[[], bool], wait: float) -> bool:
    """Whether ``check`` holds, trying again for up to ``wait`` seconds (a shared mount can show a
    worker's file a moment late)."""
    deadline = time.monotonic() + wait
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))


def _has_size(path: Path, size: int) -> bool:
    try:
        with open(path, "rb") as fh:  # opening revalidates what a network file system has cached
            return os.fstat(fh.fileno()).st_size == size
    except OSError:
        return False


def _not_delivered(job: Job, what: str) -> Outcome:
    return Outcome(job, error=f"{job.source}: the worker wrote {what} on its own file system, not where this "
                              f"process sees it; {SHARED_HINT}")


def _delivered(job: Job, outcome: Outcome, payload, return_to_client: bool, overwrite: bool) -> Outcome:
    """The client's side of a finished slide task: write the returned bytes, or check that the file the
    worker wrote is visible here."""
    if outcome.error:
        return outcome
    if return_to_client:
        try:
            with atomic_path(job.output, overwrite=overwrite) as tmp:
                tmp.write_bytes(payload)
        except FileExistsError as err:
            return Outcome(job, error=str(err))
        except OSError as err:
            return Outcome(job, error=f"{job.output}: cannot write ({err.strerror or err})")
        return outcome
    if not _seen(lambda: _has_size(job.output, payload), SHARED_WAIT):
        return _not_delivered(job, job.output)
    return outcome


def _refused_here(job: Job, overwrite: bool) -> Outcome | None:
    """--return-to-client: what the worker cannot check for the client's output folder."""
    if job.output.resolve() == job.source.resolve():
        return Outcome(job, error=f"{job.output}: would replace its own input; choose another output folder")
    if job.output.exists() and not overwrite:
        return Outcome(job, error=f"{job.output}: exists (use --overwrite to replace it)")
    return None


def run_cohort(jobs: list[Job], transform: Transform, options: SlideOptions, workers: int | None = None,
               scheduler: str | None = None, retries: int = DEFAULT_RETRIES,
               progress: Callable[[int, int], None] | None = None,
               return_to_client: bool = False, threads: int | None = None) -> Iterator[Outcome]:
    """Run the slides on a Dask cluster (an embedded LocalCluster of ``workers`` processes, or the
    scheduler at ``scheduler``, e.g. ``tcp://host:8786``); yield outcomes as slides finish. Progress is
    reported per finished slide. Outputs go to a shared folder (checked) or, with ``return_to_client``,
    come back to this process (see the module's note). ``threads`` (the compute threads of the whole
    run) are shared over the workers of an embedded cluster (:func:`worker_threads`)."""
    from dask.distributed import as_completed

    task = _slide_back_task if return_to_client else _slide_task
    per_task = worker_threads(threads, workers, scheduler)
    with cluster_client(workers, scheduler) as client:
        shared = client.scatter(transform, broadcast=True, hash=False)
        futures = {}
        for i, job in enumerate(jobs):
            refused = _refused_here(job, options.overwrite) if return_to_client else None
            if refused:
                yield refused
                continue
            futures[client.submit(task, _absolute(job), shared, options, per_task,
                                  key=f"slide-{i}-{job.source.name}", retries=retries, pure=False)] = job
        stopped = None  # why the slides not finished yet were cancelled
        pending = dict(futures)
        for future in as_completed(futures):
            job = pending.pop(future)
            if future.cancelled():
                outcome = Outcome(job, error=f"{job.source}: cancelled: {stopped}")
            else:
                try:
                    outcome, payload = future.result()
                    outcome.job = job
                    outcome = _delivered(job, outcome, payload, return_to_client, options.overwrite)
                except Exception as err:  # failed on every try (or its worker died each time)
                    outcome = Outcome(job, error=f"{job.source}: failed after {retries + 1} tries "
                                                 f"({type(err).__name__}: {err})")
                if stopped is None and outcome.error and "on its own file system" in outcome.error:
                    stopped = ("a slide before it was written where this process cannot see it; "
                               + SHARED_HINT)
                    client.cancel([f for f in futures if not f.done()])
            if progress and outcome.result:
                progress(outcome.result.tiles - outcome.result.resumed,
                         outcome.result.width * outcome.result.height)
            yield outcome
        for job in pending.values():  # cancelled futures that as_completed did not hand back
            yield Outcome(job, error=f"{job.source}: cancelled: {stopped}")


def _rows_back_task(job: Job, plan: SlidePlan, fn, start: int, stop: int, threads: int | None = None):
    """:func:`_rows_task` into a scratch store of the worker's own: the rows' totals and their encoded
    tiles, for the client to store (or the slide's failed outcome)."""
    scratch = _scratch(plan.output, start, stop)
    local = dataclasses.replace(plan, output=scratch / plan.output.name)
    try:
        stats = _rows_task(job, local, fn, start, stop, threads)
        if isinstance(stats, Outcome):
            return stats
        store = local.store()
        return stats, [store.get(0, row) for row in range(start, stop)]  # encoded tiles
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_slide_tiles(job: Job, transform: Transform, options: SlideOptions, workers: int | None = None,
                    scheduler: str | None = None, rows_per_task: int = DEFAULT_ROWS_PER_TASK,
                    retries: int = DEFAULT_RETRIES, progress: Callable[[int, int], None] | None = None,
                    return_to_client: bool = False, threads: int | None = None) -> Outcome:
    """One large slide spread over a Dask cluster by runs of tile rows.

    This process plans the slide and builds the function every window goes through (for a per-pixel
    method the colour table from tissue sampled over the whole slide), scatters it to every worker
    once, and the workers fill the work store with ``rows_per_task`` rows per task (a task recomputes
    the windows of the row just outside its run, so every row comes out as in one process). A failed
    task is retried; rows already stored are kept for the next run. This process then writes the
    pyramid. The work store must be on a folder every worker can write (checked after each task), or
    with ``return_to_client`` the tasks return their rows' encoded tiles and this process stores them."""
    from dask.distributed import as_completed

    start = time.perf_counter()
    original, job = job, _absolute(job)
    try:
        plan = plan_slide(job.source, job.output, transform, options)
        fn = slide_function(plan, transform, options)
        missing = plan.missing_rows()
        result = SlideResult(plan.source, plan.output, plan.level, plan.grid.width, plan.grid.height, len(plan.grid),
                             resumed=(plan.grid.rows - len(missing)) * plan.grid.cols, notes=list(plan.notes))
        task = _rows_back_task if return_to_client else _rows_task
        with cluster_client(workers, scheduler) as client:
            shared = client.scatter(fn, broadcast=True, hash=False)
            per_task = worker_threads(threads, workers, scheduler)
            futures = {client.submit(task, job, plan, shared, first, stop, per_task, retries=retries, pure=False):
                       (first, stop)
                       for first, stop in row_runs(missing, rows_per_task)}
            store = plan.store()
            for future in as_completed(futures):
                stats = future.result()
                if isinstance(stats, Outcome):  # an input problem: the slide cannot be finished
                    client.cancel(list(futures))
                    stats.job = original
                    return stats
                first, stop = futures[future]
                if return_to_client:
                    stats, rows = stats
                    for row, tiles in zip(range(first, stop), rows):
                        store.put(0, row, tiles)
                elif not _seen(lambda: all(store.has(0, row) for row in range(first, stop)), SHARED_WAIT):
                    client.cancel(list(futures))
                    return _not_delivered(original, f"tile rows {first}-{stop - 1} of {job.output.name} into "
                                                    f"{store.folder}")
                result.transformed += stats.transformed
                if progress:
                    progress(stats.tiles, stats.pixels)
        finish_slide(plan, options)
    except (StainlabError, FileExistsError) as err:
        return _failed(original, err)
    except Exception as err:  # a task failed on every try
        return Outcome(original, error=f"{job.source}: {type(err).__name__}: {err}", traceback=traceback.format_exc())
    result.seconds = time.perf_counter() - start
    result.output = original.output
    return _done(original, result)
