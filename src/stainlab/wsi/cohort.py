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
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

from stainlab.batch import Job, Outcome
from stainlab.errors import StainlabError
from stainlab.wsi.normalize import (SlideOptions, SlidePlan, SlideResult, compute_rows, finish_slide, normalize_slide,
                                   plan_slide, row_runs, slide_function)
from stainlab.wsi.tiling import RowStats
from stainlab.transforms.base import Transform

DEFAULT_RETRIES = 2
DEFAULT_ROWS_PER_TASK = 4  # tile rows per task when one slide is spread over the cluster


def _done(job: Job, result: SlideResult) -> Outcome:
    return Outcome(job, notes=list(result.notes), result=result)


def run_slide(job: Job, transform: Transform, options: SlideOptions,
              progress: Callable[[int, int], None] | None = None) -> Outcome:
    """One slide; input problems become the outcome's error, anything else is raised (to be retried)."""
    try:
        return _done(job, normalize_slide(job.source, job.output, transform, options, progress))
    except (StainlabError, FileExistsError) as err:
        return _failed(job, err)


def _rows_task(job: Job, plan: SlidePlan, fn, start: int, stop: int) -> RowStats | Outcome:
    """:func:`compute_rows` as a cluster task: the rows' totals, or the slide's failed outcome when the
    input is at fault (returned, not raised, so that Dask does not retry it)."""
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


def run_cohort(jobs: list[Job], transform: Transform, options: SlideOptions, workers: int | None = None,
               scheduler: str | None = None, retries: int = DEFAULT_RETRIES,
               progress: Callable[[int, int], None] | None = None) -> Iterator[Outcome]:
    """Run the slides on a Dask cluster (an embedded LocalCluster of ``workers`` processes, or the
    scheduler at ``scheduler``, e.g. ``tcp://host:8786``); yield outcomes as slides finish. Progress is
    reported per finished slide."""
    from dask.distributed import as_completed

    with cluster_client(workers, scheduler) as client:
        shared = client.scatter(transform, broadcast=True, hash=False)
        futures = {client.submit(run_slide, job, shared, options, key=f"slide-{i}-{job.source.name}",
                                 retries=retries, pure=False): job for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            job = futures[future]
            try:
                outcome = future.result()
            except Exception as err:  # failed on every try (or its worker died each time)
                outcome = Outcome(job, error=f"{job.source}: failed after {retries + 1} tries "
                                                  f"({type(err).__name__}: {err})")
            if progress and outcome.result:
                progress(outcome.result.tiles - outcome.result.resumed,
                         outcome.result.width * outcome.result.height)
            yield outcome


def run_slide_tiles(job: Job, transform: Transform, options: SlideOptions, workers: int | None = None,
                    scheduler: str | None = None, rows_per_task: int = DEFAULT_ROWS_PER_TASK,
                    retries: int = DEFAULT_RETRIES, progress: Callable[[int, int], None] | None = None) -> Outcome:
    """One large slide spread over a Dask cluster by runs of tile rows.

    This process plans the slide and builds the function every window goes through (for a per-pixel
    method the colour table from tissue sampled over the whole slide), scatters it to every worker
    once, and the workers fill the work store with ``rows_per_task`` rows per task (a task recomputes
    the windows of the row just outside its run, so every row comes out as in one process). A failed
    task is retried; rows already stored are kept for the next run. This process then writes the
    pyramid."""
    from dask.distributed import as_completed

    start = time.perf_counter()
    try:
        plan = plan_slide(job.source, job.output, transform, options)
        fn = slide_function(plan, transform, options)
        missing = plan.missing_rows()
        result = SlideResult(plan.source, plan.output, plan.level, plan.grid.width, plan.grid.height, len(plan.grid),
                             resumed=(plan.grid.rows - len(missing)) * plan.grid.cols, notes=list(plan.notes))
        with cluster_client(workers, scheduler) as client:
            shared = client.scatter(fn, broadcast=True, hash=False)
            futures = [client.submit(_rows_task, job, plan, shared, first, stop, retries=retries, pure=False)
                       for first, stop in row_runs(missing, rows_per_task)]
            for future in as_completed(futures):
                stats = future.result()
                if isinstance(stats, Outcome):  # an input problem: the slide cannot be finished
                    client.cancel(futures)
                    return stats
                result.transformed += stats.transformed
                if progress:
                    progress(stats.tiles, stats.pixels)
        finish_slide(plan, options)
    except (StainlabError, FileExistsError) as err:
        return _failed(job, err)
    except Exception as err:  # a task failed on every try
        return Outcome(job, error=f"{job.source}: {type(err).__name__}: {err}", traceback=traceback.format_exc())
    result.seconds = time.perf_counter() - start
    return _done(job, result)
