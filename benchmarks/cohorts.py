"""Cohorts on Dask: slides/hour for 8 copies of one slide, with 1 and 2 workers (issue 16).

The input is the synthetic 20,000 x 20,000 JPEG-tiled pyramidal TIFF of real tissue that
``benchmarks/slides.py`` builds from the CMU-1 region (400 MPix; ``--quick``: 4,096 x 4,096), hard-linked
8 times into ``benchmarks/_work/cohorts/slides/``. Each configuration runs ``stainlab slide`` as a user
would (``python -m stainlab slide SLIDES -m macenko -r cmu_small_region.svs -o OUT --overwrite ...``) in a
fresh process, with the machine's cores (2 on the development machine) split so that it is not
oversubscribed:

* ``in-process``: ``--workers 1 --threads 2``: the slides one after another in the command's own process
  (``run_local``), 2 compute threads. The 1-worker baseline.
* ``cluster-1``: a true 1-worker Dask cluster. ``--workers 1`` never starts one (it means "in this process"),
  so a user starts it (``dask scheduler``; ``dask worker --nworkers 1 --nthreads 1`` with
  ``NUMBA_NUM_THREADS=2``) and passes ``--scheduler``. Its start-up is not in the wall time (a user's
  cluster is already up); the embedded LocalCluster's start-up is in ``cluster-2``'s.
* ``cluster-2``: ``--workers 2 --threads 2``: the embedded LocalCluster, 2 worker processes of 1 Dask
  thread; each slide task sizes numba and torch to its share of ``--threads`` (1 each).

Threads per worker: Dask workers are new processes, and numba's thread count is per thread, starting at
``NUMBA_NUM_THREADS`` (all cores) in every new thread, so ``--threads`` applied in the command's own process
never reached them (each worker ran numba on every core: 2 workers x 2 threads on 2 cores). Since
60a50fb every cluster task calls ``limit_threads`` with its share (``stainlab.wsi.cohort.worker_threads``),
or, on a user's cluster, with the worker's cores over its task slots. Each worker's count is recorded
here, not assumed: this file is also a Dask preload (``dask_setup``/``dask_teardown``) that, as the worker
closes, asks its task thread for ``numba.get_num_threads()`` and writes it down (``workers_seen`` in the
results; ``busy_threads``: the CPU seconds of each process's threads).

Full run: 8 x 400 MPix = 3.2 GPix a configuration, three configurations; at the 8.7 MPix/s that
``slides.py`` measured for one 400 MPix slide in one process, about 6 minutes each, about 20 minutes in
all (plus building the slide once, shared with ``slides.py``). ``--copies 4`` halves it.

Before the configurations the command runs once on one copy, untimed (:func:`warm_up`), so that numba's
compiled kernels are in its disk cache: a tree fresh from git compiles them in its first run (in a fresh
worktree the first configuration took 118 s, 50 of them normalizing).

Per configuration: wall seconds of the command, slides/hour, MPix/s, CPU seconds of every process
(``getrusage(RUSAGE_CHILDREN)`` in a wrapper process around the command and the cluster; ``cpu_use`` is
that over wall seconds x cores) and the share of the machine other processes took meanwhile
(``other_processes_cpu_share``, from /proc/stat: trust timings only when it is near 0), the largest
single-process peak RSS (``ru_maxrss`` of the same) and the peak of the summed RSS of the whole process
tree (sampled every 0.2 s with psutil); every output is opened with tifffile, its levels counted and
checked against the input, its smallest level decoded and hashed (identical across configurations for a
deterministic method), and deleted.

    .venv/bin/python benchmarks/cohorts.py --quick   # 8 x 4,096^2, a few minutes -> benchmarks/_work/cohorts-quick.json
    .venv/bin/python benchmarks/cohorts.py           # 8 x 20,000^2 -> benchmarks/results/cohorts.json + .md
    .venv/bin/python benchmarks/cohorts.py --configs in-process cluster-2   # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
WORK = ROOT / "_work"
COHORTS = WORK / "cohorts"
RESULTS = ROOT / "results"
COPIES = 8
METHOD = "macenko"
PROBE_ENV = "STAINLAB_COHORTS_PROBE"  # the folder this file, as a Dask preload, writes each worker's threads to
CONFIGS = ("in-process", "cluster-1", "cluster-2")


# -- this file as a Dask worker preload: what a worker's task thread really uses ----------------------------
def _thread_report() -> dict:
    import numba

    return {"numba_threads": numba.get_num_threads(), "numba_threading_layer": _layer(),
            "thread": threading.current_thread().name}


def _layer() -> str | None:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run in this process
        return None


def dask_setup(worker) -> None:  # noqa: D103  (Dask preload hook)
    pass


def dask_teardown(worker) -> None:
    """As the worker closes: numba's thread count in its task thread (the executor's thread that ran the
    slides), the environment it was started with, and its OS threads; one JSON file per worker process."""
    folder = os.environ.get(PROBE_ENV)
    if not folder:
        return
    record = {"pid": os.getpid(), "address": worker.address, "dask_threads": worker.state.nthreads,
              "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
              "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
              "os_threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None}
    try:
        record["task_thread"] = worker.executors["default"].submit(_thread_report).result(timeout=30)
    except Exception as err:  # the executor is gone: the count a new thread starts with
        record["task_thread"] = {**_thread_report(), "note": f"executor unavailable ({type(err).__name__})"}
    Path(folder, f"{os.getpid()}.json").write_text(json.dumps(record))


# -- inputs ------------------------------------------------------------------------------------------------------
def source_slide(side: int) -> tuple[Path, Path]:
    """The synthetic ``side`` x ``side`` slide of slides.py (built there once, then reused) and the CMU-1
    region (the reference)."""
    from slides import cmu_slide, synthetic_slide  # benchmarks/slides.py

    from stainlab.wsi.readers import open_slide

    cmu = cmu_slide()
    with open_slide(cmu) as slide:
        tissue = slide.read(0, 0, 0, slide.levels[0].height, slide.levels[0].width)
    return synthetic_slide(side, side, tissue), cmu


def cohort_folder(source: Path, copies: int) -> tuple[Path, str]:
    """``copies`` names for ``source`` in a folder of their own: hard links (the reader takes them as any
    file), copies where the file system refuses links."""
    folder = COHORTS / "slides"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    how = "hard links"
    for i in range(copies):
        target = folder / f"slide{i:02d}.ome.tif"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
            how = "copies"
    return folder, how


def warm_up(source: Path, reference: Path, cores: int) -> None:
    """The command on ``source`` alone, untimed, its output removed: numba's kernels compiled into its disk
    cache before any configuration is timed."""
    out = COHORTS / "warm-up"
    subprocess.run(command("in-process", source, reference, out, cores, None) + ["-q"], check=True,
                   capture_output=True)
    shutil.rmtree(out, ignore_errors=True)


# -- one configuration, measured from a wrapper process -----------------------------------------------------------
def command(config: str, slides: Path, reference: Path, out: Path, cores: int, scheduler: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "stainlab", "slide", str(slides), "-m", METHOD, "-r", str(reference),
           "-o", str(out), "--overwrite", "--threads", str(cores)]
    if config == "in-process":
        return cmd + ["--workers", "1"]
    if config == "cluster-1":
        return cmd + ["--scheduler", scheduler]
    return cmd + ["--workers", "2"]


def worker_environment(config: str, cores: int, probe: Path) -> dict:
    """The environment of the command (and, for cluster-1, of the Dask processes)."""
    env = {**os.environ, PROBE_ENV: str(probe), "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([__file__])}
    env.pop("NUMBA_NUM_THREADS", None)
    return env


class TreeSampler(threading.Thread):
    """The peak of the summed RSS of this process's descendants, and the CPU seconds of each one's
    threads (the most each thread was seen with: a thread that has exited is no longer listed)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop, self.names, self.cpu = 0, threading.Event(), {}, {}

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.is_set():
            total = 0
            for proc in me.children(recursive=True):
                try:
                    total += proc.memory_info().rss
                    seen = self.cpu.setdefault(proc.pid, {})
                    for t in proc.threads():
                        seen[t.id] = max(seen.get(t.id, 0.0), t.user_time + t.system_time)
                    if proc.pid not in self.names:
                        self.names[proc.pid] = " ".join(proc.cmdline()[1:4])[:80]
                except psutil.Error:  # gone, a zombie, or not ours to read
                    continue
            self.peak = max(self.peak, total)
            self.stop.wait(0.2)

    def busy_threads(self) -> list[dict]:
        """Per process, the CPU seconds of its threads that used at least half a second, busiest first."""
        return [{"process": self.names.get(pid, "?"),
                 "cpu_s_by_thread": [round(s, 1) for s in sorted(cpu.values(), reverse=True) if s >= 0.5][:8]}
                for pid, cpu in self.cpu.items() if any(s >= 0.5 for s in cpu.values())]


def start_cluster(cores: int, env: dict, folder: Path) -> tuple[list[subprocess.Popen], str]:
    """A 1-worker Dask cluster as a user starts one: ``dask scheduler`` and ``dask worker --nworkers 1
    --nthreads 1`` with every core for the worker's compute threads."""
    dask = str(Path(sys.executable).with_name("dask"))
    file = folder / "scheduler.json"
    file.unlink(missing_ok=True)
    logs = open(folder / "cluster.log", "w")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(file)], env=env, stdout=logs, stderr=logs)]
    deadline = time.monotonic() + 60
    while not file.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(file.read_text())["address"]
    worker_env = {**env, "NUMBA_NUM_THREADS": str(cores), "OMP_NUM_THREADS": str(cores)}
    procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                   "--local-directory", str(folder / "dask-worker")],
                                  env=worker_env, stdout=logs, stderr=logs))
    from dask.distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(1, timeout=120)
    return procs, address


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):  # the worker first, so that it closes (and its preload reports) cleanly
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has been busy since boot (NaN without /proc/stat)."""
    try:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    except (OSError, ValueError):
        return float("nan")
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_seconds(procs: list[subprocess.Popen]) -> float:
    """CPU seconds of this process's children that have been waited for, and of the live ``procs`` and
    their descendants (a cluster already running when the timing starts)."""
    import psutil

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def measure(spec: dict) -> dict:
    """In the wrapper process: (start the cluster,) run the command, time it, take CPU and memory."""
    cores, config, folder = spec["cores"], spec["config"], Path(spec["folder"])
    probe = folder / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir(parents=True)
    env = worker_environment(config, cores, probe)
    procs, scheduler = start_cluster(cores, env, folder) if config == "cluster-1" else ([], None)
    cmd = command(config, Path(spec["slides"]), Path(spec["reference"]), Path(spec["out"]), cores, scheduler)
    sampler = TreeSampler()
    sampler.start()
    own_before, busy_before = own_seconds(procs), machine_busy_seconds()
    start = time.perf_counter()
    with open(folder / "command.log", "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    stop_cluster(procs)
    own = own_seconds([]) - own_before
    others = machine_busy_seconds() - busy_before - own
    span = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = (folder / "command.log").read_text(errors="replace").replace("\r", "\n").splitlines()
    return {"rc": rc, "command": [Path(c).name if c == sys.executable else c for c in cmd],
            "scheduler": scheduler, "seconds": seconds,
            "cpu_seconds": round(own, 1),
            "other_processes_cpu_share": round(max(0.0, others / (span * len(os.sched_getaffinity(0)))), 2),
            "peak_rss_one_process_mib": round(after.ru_maxrss / 1024, 1),
            "peak_rss_all_processes_mib": round(sampler.peak / 2 ** 20, 1),
            "summary": next((line.strip() for line in reversed(log) if "normalized" in line), None),
            "log_tail": [line for line in log if line.strip()][-5:],
            "busy_threads": sampler.busy_threads(),
            "workers_seen": [json.loads(p.read_text()) for p in sorted(probe.glob("*.json"))]}


# -- outputs --------------------------------------------------------------------------------------------------------
def verify(out: Path, names: list[str], source: Path) -> dict:
    """Every output exists, opens with tifffile with as many levels as the input and the input's level-0
    size; its smallest level decodes (hashed, to compare configurations)."""
    import hashlib

    import tifffile

    with tifffile.TiffFile(source) as tif:
        want = [tuple(level.shape) for level in tif.series[0].levels]
    problems, hashes, sizes = [], {}, 0
    for name in names:
        path = out / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        sizes += path.stat().st_size
        try:
            with tifffile.TiffFile(path) as tif:
                levels = tif.series[0].levels
                shapes = [tuple(level.shape) for level in levels]
                smallest = levels[-1].asarray()
        except Exception as err:
            problems.append(f"{name}: does not open ({type(err).__name__}: {err})")
            continue
        if shapes[0] != want[0] or len(shapes) < len(want):
            problems.append(f"{name}: levels {shapes}, input {want}")
        hashes[name] = hashlib.sha256(smallest.tobytes()).hexdigest()[:16]
    return {"outputs": len(names) - sum(p.endswith("missing") for p in problems), "expected": len(names),
            "levels": len(shapes) if hashes else 0, "level_shapes": [list(s) for s in shapes] if hashes else [],
            "output_mib": round(sizes / 2 ** 20, 1), "problems": problems,
            "smallest_level_sha256": sorted(set(hashes.values()))}


def run_config(config: str, slides: Path, reference: Path, source: Path, cores: int, mpix: float) -> dict:
    """One configuration in a wrapper process of its own (its CPU time and peak RSS are its children's)."""
    folder = COHORTS / config
    out = folder / "out"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = {"config": config, "cores": cores, "folder": str(folder), "slides": str(slides),
            "reference": str(reference), "out": str(out)}
    proc = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode:
        return {"config": config, "error": proc.stderr.strip().splitlines()[-3:]}
    record = {"config": config, **json.loads(proc.stdout.strip().splitlines()[-1])}
    if record["rc"]:  # the command failed: its last lines, no rates
        shutil.rmtree(out, ignore_errors=True)
        return {**record, "error": f"exit status {record['rc']}: {' / '.join(record['log_tail'][-2:])}"}
    names = sorted(p.name for p in slides.iterdir())  # slideNN.ome.tif -> OUT/slideNN.ome.tif
    record["check"] = verify(out, names, source)
    seconds = record["seconds"]
    record.update(seconds=round(seconds, 2), slides_per_hour=round(len(names) * 3600 / seconds, 1),
                  mpix_per_s=round(len(names) * mpix / seconds, 2),
                  cpu_use=round(record["cpu_seconds"] / seconds / cores, 2))
    shutil.rmtree(out, ignore_errors=True)
    return record


# -- the benchmark --------------------------------------------------------------------------------------------------
def speedups(records: dict) -> dict:
    def ratio(a: str, b: str):
        if all(c in records and "error" not in records[c] for c in (a, b)):
            return round(records[b]["seconds"] / records[a]["seconds"], 2)
        return None

    pairs = {"cluster-2_over_in-process": ("cluster-2", "in-process"),
             "cluster-2_over_cluster-1": ("cluster-2", "cluster-1"),
             "cluster-1_over_in-process": ("cluster-1", "in-process")}
    return {name: r for name, (a, b) in pairs.items() if (r := ratio(a, b)) is not None}


def threads_seen(record: dict) -> str:
    seen = record.get("workers_seen") or []
    if not seen:
        return "this process: --threads" if record["config"] == "in-process" else "?"
    return ", ".join(f"{w['task_thread']['numba_threads']} (OMP {w['OMP_NUM_THREADS']})" for w in seen)


def markdown(results: dict) -> str:
    inputs = results["inputs"]
    lines = [f"{inputs['copies']} copies of a {inputs['side']} x {inputs['side']} slide ({inputs['mpix']} MPix, "
             f"{inputs['file_mib']} MiB) with `{METHOD}`, {results['machine']['cpus']} cores.", "",
             "| configuration | workers x compute threads | numba threads seen in each worker (OMP) | s "
             "| slides/hour | MPix/s | CPU use (others) | peak RSS: one process / all, MiB | outputs checked |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in results["configs"]:
        if "error" in r:
            lines.append(f"| {r['config']} | error: {r['error']} |" + " |" * 7)
            continue
        c = r["check"]
        ok = f"{c['outputs']}/{c['expected']}, {c['levels']} levels" + (f"; {c['problems']}" if c["problems"] else "")
        lines.append(f"| {r['config']} | {r['layout']} | {threads_seen(r)} | {r['seconds']} | {r['slides_per_hour']} "
                     f"| {r['mpix_per_s']} | {r['cpu_use']} ({r['other_processes_cpu_share']}) "
                     f"| {r['peak_rss_one_process_mib']} / {r['peak_rss_all_processes_mib']} | {ok} |")
    lines += ["", "Speed-ups (ratio of wall times): "
              + ", ".join(f"{k.replace('_over_', ' over ')} {v}x" for k, v in results["speedups"].items()) + ".",
              "", f"Outputs identical across configurations (smallest level): {results['outputs_identical']}."]
    return "\n".join(lines) + "\n"


LAYOUT = {"in-process": "1 process x 2", "cluster-1": "1 x 2 (dask worker --nworkers 1, NUMBA_NUM_THREADS=2)",
          "cluster-2": "2 x 1 (--threads 2 shared by the workers)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 copies of a 4,096 x 4,096 slide")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS,
                        help="configurations to run (default: all)")
    parser.add_argument("--copies", type=int, default=COPIES, help="copies of the slide (default: %(default)s)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    sys.path.insert(0, str(ROOT))
    from provenance import provenance, write_results  # benchmarks/provenance.py: commit and dirty flag

    started = provenance()
    cores = os.cpu_count() or 1
    side = 4096 if args.quick else 20_000
    configs = args.configs or CONFIGS
    start = time.perf_counter()
    source, reference = source_slide(side)
    built = time.perf_counter() - start
    slides, how = cohort_folder(source, args.copies)
    warm_up(source, reference, cores)
    mpix = side * side / 1e6
    results = {"machine": {"cpus": cores, "python": platform.python_version(), "platform": platform.platform(),
                           "load_average_start": os.getloadavg(),
                           "note": "2 CPU cores shared with other engineers' jobs: wall-clock on a shared CPU"},
               "inputs": {"copies": args.copies, "side": side, "mpix": round(mpix, 2), "how": how,
                          "source": source.name, "reference": reference.name, "method": METHOD,
                          "file_mib": round(source.stat().st_size / 2 ** 20, 1),
                          "slide_seconds": round(built, 1)},
               "configs": []}
    records = {}
    for config in configs:
        record = run_config(config, slides, reference, source, cores, mpix)
        record["layout"] = LAYOUT[config]
        records[config] = record
        results["configs"].append(record)
        print(json.dumps({k: v for k, v in record.items() if k not in ("busy_threads", "log_tail")}), flush=True)
    results["speedups"] = speedups(records)
    hashes = {h for r in records.values() for h in r.get("check", {}).get("smallest_level_sha256", [])}
    results["outputs_identical"] = len(hashes) == 1
    results["machine"]["load_average_end"] = os.getloadavg()
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["provenance"] = provenance(started)
    target = WORK / "cohorts-quick.json" if args.quick else RESULTS / "cohorts.json"
    write_results(target, results, markdown(results))


if __name__ == "__main__":
    main()
