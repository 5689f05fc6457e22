"""Cohorts on Dask: a 2-worker LocalCluster equals the single-process run; failures are reported
(input problems at once, others after retries) and never stop the other slides."""

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import data

from stainlab.batch import Job
from stainlab.wsi.cohort import run_cohort, run_local, run_slide, run_slide_tiles
from stainlab.io.images import write_image
from stainlab.wsi.normalize import SlideOptions
from stainlab.transforms.base import Transform


class FlakyBlur(Transform):
    """Context-aware and deterministic (a 3x3 box blur), but its first call in any process fails
    while ``marker`` does not exist yet: a transient failure that a retry gets past."""

    name = "flaky-blur"
    requires_fit = False

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def _transform(self, image):
        marker = Path(self.marker)
        if not marker.exists():
            marker.touch()
            raise RuntimeError("transient failure")
        padded = np.pad(image.astype(np.uint16), ((1, 1), (1, 1), (0, 0)), mode="edge")
        h, w = image.shape[:2]
        total = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
        return ((total + 4) // 9).astype(np.uint8)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    ihc = data.immunohistochemistry()
    slides = [write_image(folder / f"s{i}.png", np.ascontiguousarray(ihc[i * 90:i * 90 + 200, i * 40:i * 40 + 260]))
              for i in range(3)]
    bad = folder / "bad.png"
    bad.write_bytes(slides[0].read_bytes()[:400])
    return slides, bad


def jobs_for(sources, out):
    return [Job(src, out / f"{src.stem}.ome.tif") for src in sources]


def test_two_worker_cluster_equals_the_single_process_run(tmp_path, cohort):
    slides, bad = cohort
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0)
    local = jobs_for(slides, tmp_path / "local")
    (tmp_path / "marker-local").touch()
    assert [o.error for o in run_local(local, FlakyBlur(str(tmp_path / "marker-local")), options)] == [None] * 3
    cluster_jobs = jobs_for([*slides, bad], tmp_path / "cluster")
    outcomes = {o.job.source: o for o in run_cohort(cluster_jobs, FlakyBlur(str(tmp_path / "marker")), options,
                                                    workers=2, retries=1)}
    assert (tmp_path / "marker").exists()                     # one task failed once and was retried
    assert "bad.png: truncated or corrupt" in outcomes[bad].error
    for job_a, job_b in zip(local, cluster_jobs):
        assert outcomes[job_b.source].error is None and outcomes[job_b.source].result.transformed == 20
        a, b = tifffile.imread(job_a.output), tifffile.imread(job_b.output)
        assert a.shape == (200, 260, 3) and np.array_equal(a, b)


def test_one_slide_spread_over_two_workers_equals_the_single_process_run(tmp_path):
    image = np.ascontiguousarray(data.immunohistochemistry()[:450, :300])
    source = write_image(tmp_path / "big.png", image)
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0)
    (tmp_path / "marker-local").touch()
    local = run_slide(Job(source, tmp_path / "local.ome.tif"), FlakyBlur(str(tmp_path / "marker-local")), options)
    spread = run_slide_tiles(Job(source, tmp_path / "spread.ome.tif"), FlakyBlur(str(tmp_path / "marker")),
                             options, workers=2, rows_per_task=2, retries=1)
    assert spread.error is None and (spread.result.tiles, spread.result.transformed) == (40, 40)
    assert (tmp_path / "marker").exists()                     # a task failed once and was retried
    a, b = tifffile.imread(local.result.output), tifffile.imread(spread.result.output)
    assert a.shape == (450, 300, 3) and np.array_equal(a, b)  # 8 rows in 4 tasks: the same pixels
    for level in (1, 2):  # halved from the stored JPEG rows, not from the rows before encoding
        a, b = (tifffile.imread(run.result.output, level=level).astype(int) for run in (local, spread))
        assert a.shape == b.shape and np.abs(a - b).mean() < 2 + level  # JPEG 90 error, growing per level


def test_a_corrupt_tile_fails_a_spread_slide_in_one_line_without_retries(tmp_path, capfd):
    source = tmp_path / "cut.tif"
    tifffile.imwrite(source, np.ascontiguousarray(data.immunohistochemistry()[:256, :256]), tile=(64, 64),
                     photometric="rgb", compression="zlib")
    with tifffile.TiffFile(source) as tif:
        offset, count = tif.pages[0].dataoffsets[-1], tif.pages[0].databytecounts[-1]
    raw = bytearray(source.read_bytes())
    raw[offset:offset + count] = bytes(count)  # the last tile: read by a task, not by the tissue sampler
    source.write_bytes(bytes(raw))
    (tmp_path / "marker").touch()
    outcome = run_slide_tiles(Job(source, tmp_path / "o.ome.tif"), FlakyBlur(str(tmp_path / "marker")),
                              SlideOptions(tile=64, overlap=16, min_tissue=0.0), workers=2, rows_per_task=1)
    assert outcome.result is None and "cut.tif: truncated or corrupt slide data in segment 15" in outcome.error
    err = capfd.readouterr().err
    assert "Compute Failed" not in err and "Traceback" not in err  # returned by the task, not retried


def test_input_problems_are_outcomes_and_other_failures_are_raised_for_retry(tmp_path, cohort):
    slides, bad = cohort
    options = SlideOptions(tile=64)
    outcome = run_slide(Job(bad, tmp_path / "bad.ome.tif"), FlakyBlur(str(tmp_path / "m")), options)
    assert outcome.result is None and "bad.png: truncated or corrupt" in outcome.error
    with pytest.raises(RuntimeError, match="transient failure"):
        run_slide(Job(slides[0], tmp_path / "a.ome.tif"), FlakyBlur(str(tmp_path / "m")), options)
    outcomes = list(run_local(jobs_for(slides, tmp_path / "o"), FlakyBlur(str(tmp_path / "m2")), options))
    assert "transient failure" in outcomes[0].error and [o.error for o in outcomes[1:]] == [None, None]


# -- a cluster whose workers do not share the client's output folder ------------------------------------------------

def own_file_system(shared: str, own: str) -> None:
    """Run on each worker: what it writes under ``shared`` lands under ``own/PID`` instead, as on a
    machine whose file system does not hold the client's output folder (the same path, another disk)."""
    import dataclasses
    import os

    from stainlab.wsi import cohort as module

    own = f"{own}/{os.getpid()}"

    def mapped(path):
        text = str(path)
        return Path(own + text[len(shared):]) if text.startswith(shared) else Path(path)

    slide, rows = module.normalize_slide, module.compute_rows
    module.normalize_slide = lambda source, output, *a, **k: slide(source, mapped(output), *a, **k)
    module.compute_rows = lambda plan, *a, **k: rows(dataclasses.replace(plan, output=mapped(plan.output)), *a, **k)


@pytest.fixture(scope="module")
def apart(tmp_path_factory):
    """A 2-worker cluster (reached by address, as with --scheduler) whose workers write everything under
    ``shared`` into folders of their own; yields (address, shared, own)."""
    import logging

    from dask.distributed import Client, LocalCluster

    root = tmp_path_factory.mktemp("apart")
    shared, own = root / "shared", root / "own"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.run(own_file_system, str(shared), str(own))
        yield cluster.scheduler_address, shared, own


def written_slides(folder: Path) -> list[str]:
    """The finished slides under ``folder``. Cancelled tasks may still be running on the workers when the
    client has its answers, and remove their work folders as we look: ``Path.rglob`` raised
    FileNotFoundError on such a folder (this test failed that way, now and then), ``os.walk`` skips it."""
    return [name for _, _, names in os.walk(folder) for name in names if name.endswith(".ome.tif")]


def test_outputs_written_out_of_the_clients_sight_fail_loudly_or_come_back(tmp_path, cohort, apart, monkeypatch):
    import stainlab.wsi.cohort as module

    monkeypatch.setattr(module, "SHARED_WAIT", 0.0)
    address, shared, own = apart
    slides, _ = cohort
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0)
    (tmp_path / "marker").touch()
    blur = FlakyBlur(str(tmp_path / "marker"))
    lost = list(run_cohort(jobs_for(slides, shared / "lost"), blur, options, scheduler=address))
    assert len(lost) == 3 and all(o.error and o.result is None for o in lost)
    assert any("the worker wrote" in o.error and "on its own file system" in o.error and "--return-to-client"
               in o.error for o in lost)
    assert all("on its own file system" in o.error or "cancelled: " in o.error for o in lost)
    assert not any((shared / "lost" / f"{s.stem}.ome.tif").exists() for s in slides)
    assert written_slides(own)  # written, but on the workers' own disks

    local = list(run_local(jobs_for(slides, tmp_path / "local"), blur, options))
    back = {o.job.source: o for o in run_cohort(jobs_for(slides, shared / "back"), blur, options, scheduler=address,
                                                return_to_client=True)}
    for a in local:
        b = back[a.job.source]
        assert b.error is None and b.result.output == b.job.output == shared / "back" / a.job.output.name
        assert np.array_equal(tifffile.imread(a.job.output), tifffile.imread(b.job.output))
    again = list(run_cohort(jobs_for(slides[:1], shared / "back"), blur, options, scheduler=address,
                            return_to_client=True))
    assert "exists (use --overwrite" in again[0].error  # checked by the client: the worker cannot see it


def test_a_spread_slide_whose_rows_stay_on_the_workers_fails_or_returns_them(tmp_path, apart, monkeypatch):
    import stainlab.wsi.cohort as module

    monkeypatch.setattr(module, "SHARED_WAIT", 0.0)
    address, shared, _ = apart
    source = write_image(tmp_path / "big.png", np.ascontiguousarray(data.immunohistochemistry()[:300, :200]))
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0)
    (tmp_path / "marker").touch()
    blur = FlakyBlur(str(tmp_path / "marker"))
    lost = run_slide_tiles(Job(source, shared / "lost.ome.tif"), blur, options, scheduler=address, rows_per_task=2)
    assert lost.result is None and "tile rows" in lost.error and "on its own file system" in lost.error
    assert not (shared / "lost.ome.tif").exists()
    local = run_slide(Job(source, tmp_path / "local.ome.tif"), blur, options)
    back = run_slide_tiles(Job(source, shared / "back.ome.tif"), blur, options, scheduler=address, rows_per_task=2,
                           return_to_client=True)
    assert back.error is None and back.result.transformed == 20
    assert np.array_equal(tifffile.imread(local.result.output), tifffile.imread(shared / "back.ome.tif"))


def test_the_slide_command_exits_1_when_a_worker_kept_the_output(tmp_path, cohort, apart, monkeypatch):
    import stainlab.wsi.cohort as module
    from stainlab.cli import main

    monkeypatch.setattr(module, "SHARED_WAIT", 0.0)
    address, shared, _ = apart
    slides, _ = cohort
    args = ["slide", *map(str, slides[:2]), "-m", "reinhard", "-r", str(slides[2]), "--tile", "64",
            "--scheduler", address]
    assert main([*args, "-o", str(shared / "cli-lost")]) == 1
    assert main([*args, "-o", str(shared / "cli-back"), "--return-to-client"]) == 0
    assert sorted(p.name for p in (shared / "cli-back").glob("*.ome.tif")) == ["s0.ome.tif", "s1.ome.tif"]


# -- threads per worker ---------------------------------------------------------------------------------------------
def test_the_run_threads_are_shared_over_the_workers_and_set_in_each_task(tmp_path, cohort):
    import numba

    from stainlab.wsi.cohort import _slide_task, worker_threads

    assert worker_threads(4, 2, None) == 2 and worker_threads(2, 4, None) == 1
    assert worker_threads(4, 2, "tcp://host:8786") is None  # a user's cluster: each worker's own cores
    slides, _ = cohort
    before = numba.get_num_threads()
    (tmp_path / "m").touch()  # no transient failure
    try:
        outcome, size = _slide_task(Job(slides[0], tmp_path / "a.ome.tif"), FlakyBlur(str(tmp_path / "m")),
                                    SlideOptions(tile=64), threads=1)
        assert outcome.error is None and size > 0
        assert numba.get_num_threads() == 1  # the task's thread, as in a worker process
    finally:
        numba.set_num_threads(before)
