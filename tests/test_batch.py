"""The batch runner: workers that die cost only their file, and die with their parent."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from batch_helpers import KillOnMarker
from stainlab import batch
from stainlab.io.images import read_image, write_image
from synth import he_image


def _inputs(folder: Path, count: int, marked=()) -> list[batch.Job]:
    jobs = []
    for i in range(count):
        image = he_image((24, 32), seed=i)
        image[0, 0, 0] = 13 if i in marked else 14
        source = write_image(folder / "in" / f"t{i}.png", image)
        jobs.append(batch.Job(source, folder / "out" / f"t{i}.png"))
    return jobs


def test_a_killed_worker_fails_only_its_file_after_one_retry(tmp_path):
    jobs = _inputs(tmp_path, 6, marked={2})
    outcomes = {o.job.source.name: o for o in batch.run_files(KillOnMarker(), jobs, workers=2)}
    assert len(outcomes) == 6
    failed = outcomes.pop("t2.png")
    assert failed.error == f"{jobs[2].source}: the worker process died on it 2 times (killed by SIGKILL, " \
                           "probably out of memory)"
    assert not jobs[2].output.exists()
    for outcome in outcomes.values():
        assert outcome.error is None
        assert np.array_equal(read_image(outcome.job.output)[0], 255 - read_image(outcome.job.source)[0])


def test_a_file_whose_worker_died_once_succeeds_in_a_fresh_worker(tmp_path):
    jobs = _inputs(tmp_path, 4, marked={1})
    transform = KillOnMarker(once=str(tmp_path / "died-once"))
    outcomes = list(batch.run_files(transform, jobs, workers=2))
    assert [o.error for o in outcomes] == [None] * 4 and (tmp_path / "died-once").exists()
    assert all(job.output.exists() for job in jobs)


def test_killing_the_parent_leaves_no_worker_behind(tmp_path):
    jobs = _inputs(tmp_path, 2)
    pids = tmp_path / "pids"
    pids.mkdir()
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from batch_helpers import Sleepy
        from stainlab import batch
        jobs = [batch.Job(Path(s), Path(o)) for s, o in {[(str(j.source), str(j.output)) for j in jobs]!r}]
        for outcome in batch.run_files(Sleepy({str(pids)!r}), jobs, workers=2):
            pass
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def test_planning_removes_the_partial_files_a_killed_run_left(tmp_path):
    jobs = _inputs(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    partial = out / ".t0.png.k2j4x.part.png"  # the name io.atomic gives a file being written
    partial.write_bytes(b"half an image")
    unrelated = out / ".notes.txt"
    unrelated.write_text("mine")
    plan = batch.plan([job.source for job in jobs], out, lambda s: s.name, batch.Producer("p", "test"))
    assert len(plan.jobs) == 2 and not partial.exists() and unrelated.read_text() == "mine"


def test_threads_follow_the_free_cores_or_the_option(monkeypatch):
    import numba

    from stainlab import threads
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.6, 0.0, 0.0))
    assert threads.free_cores() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (40.0, 0.0, 0.0))
    assert threads.free_cores() == 1
    before = numba.get_num_threads()
    try:
        assert threads.limit_threads(1) == 1 and numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


def test_kernels_take_only_the_cores_other_processes_leave_spare(monkeypatch):
    """Another process keeping one of two cores busy makes the pixel kernels run on the calling thread."""
    import numba

    from stainlab import threads
    from stainlab.color import pixels
    clock, busy, own = [1.0], [101.9], [10.9]
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(threads, "_busy_seconds", lambda: busy[0])
    monkeypatch.setattr(threads, "_own_seconds", lambda: own[0])
    monkeypatch.setattr(threads, "_last", (0.0, 100.0, 10.0, 2))
    assert threads.spare_cores() == 1                  # 1.9 core-seconds busy in a second, 0.9 of them ours
    assert pixels.parts(1 << 16) == 1
    clock[0], busy[0] = 1.1, 200.0                     # within the period: the last look stands
    assert threads.spare_cores() == 1
    clock[0], busy[0], own[0] = 2.0, 103.8, 12.7       # 1.9 busy, 1.8 ours: the other process is gone
    assert threads.spare_cores() == 2
    assert pixels.parts(1 << 16) == min(2, numba.get_num_threads())
    assert pixels.parts(100) == 1


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="no /proc/stat")
def test_the_busy_time_of_this_process_cores_is_read():
    from stainlab import threads
    before = threads._busy_seconds()
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        pass
    assert threads._busy_seconds() - before >= 0.1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[1].split()[0] == "Z")  # a zombie is dead
