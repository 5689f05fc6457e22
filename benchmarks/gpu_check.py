"""A short prepared GPU check of the torch engine (issue 15): tiles per second on CUDA for the batches
of ``torch_engine.py`` (32 tiles of 256 px from the CMU-1 region and the shared H&E source), stainlab's
torch engine against torchstain's torch backend (looped over the batch), Macenko and Reinhard, plus the
engine's agreement with the NumPy exact path. Under 5 minutes on one GPU.

    benchmarks/_work/venv/bin/python benchmarks/gpu_check.py                      # CUDA -> results/gpu_check.json
    benchmarks/_work/venv/bin/python benchmarks/gpu_check.py --device cpu --quick # the same code on the CPU, printed

Without a CUDA device it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import stainlab
from stainlab.io.atomic import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402
from torch_engine import (METHODS, ROOT, SHARED, agreement, as_batch, grid_tiles, load_slide,  # noqa: E402
                          random_tiles, read_rgb, torchstain_normalizers)

RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"


def timed(fn, device: torch.device, repeats: int) -> list[float]:
    """Wall times of ``fn`` after one warm-up call, synchronising the device around each."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="4 tiles of 128 px, 2 repeats")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON results (default on CUDA without --quick: {RESULTS.relative_to(ROOT)}; else printed only)")
    args = parser.parse_args()
    started = provenance()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
              "run it on a GPU machine, or pass --device cpu --quick to try the code path", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    count, side, repeats = (4, 128, 2) if args.quick else (32, 256, 10)
    region, _ = load_slide()
    source, reference = read_rgb(SHARED / "he_source_rgba.png"), read_rgb(SHARED / "he_target_rgba.png")
    batches = {"cmu1_region": grid_tiles(region, count, side), "shared_source": random_tiles(source, count, side)}
    peers = torchstain_normalizers(reference, str(device))
    report = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "tiles_per_batch": count, "tile_px": side, "speed": {}, "agreement": {}}
    for method in METHODS:
        t = stainlab.load(method).fit(reference)
        for name, tiles in batches.items():
            batch = as_batch(tiles).to(device)
            chw = [(tile * 255) for tile in batch]
            ours = timed(lambda: t(batch), device, repeats)
            theirs = timed(lambda: [peers[method](tile) for tile in chw], device, repeats)
            row = {"stainlab_torch_tiles_per_s": count / statistics.median(ours),
                   "torchstain_torch_tiles_per_s": count / statistics.median(theirs)}
            row["speedup_x"] = row["stainlab_torch_tiles_per_s"] / row["torchstain_torch_tiles_per_s"]
            report["speed"].setdefault(method, {})[name] = row
            report["agreement"].setdefault(method, {})[name] = agreement(t, tiles, str(device))["mean"]
    report["provenance"] = provenance(started)
    print(json.dumps(report, indent=1))
    out = args.out or (RESULTS if device.type == "cuda" and not args.quick else None)
    if out is not None:
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
