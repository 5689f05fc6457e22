"""Tiles per second of a network over a slide's windows (issue 16, "whole slides": learned methods).

Paper 000's U-Net student (:class:`stainlab.nets.unet.UNet`) with seeded random weights, saved as a
model file and loaded as ``unet:PATH`` (the :class:`~stainlab.transforms.learned.NetworkTransform` that
``stainlab slide -m unet:PATH`` runs), goes over a slide of real H&E tissue (../shared/data's
``he_source_rgba.png``, mirrored out to the slide's size; a seeded random texture where that file is
missing) in 512 px tiles with 64 px of context (paper 000, Sec. IV; the slide command's defaults),
through the slide tiler (:func:`stainlab.wsi.tiling.run_tiled`: windows read, run, feathered). Every
core is tissue, so every window is a network window and no glass probe is timed.

For each network (64 base channels as in the paper, and 16) the slide runs with one window per network
call (``batch_size=1``: the old path), with ``FORCED`` windows per call, and with the batch size chosen by
free memory (``batch_size=None``) where that is not 1 (on the CPU it is 1: these runs are why),
alternately, ``REPEATS`` times each; the figure is the fastest run of each (the least disturbed on a
shared machine; every run is recorded). The outputs must agree (the largest difference is recorded).
Slides are 6 cores wide, so each row has 4 interior windows of one shape (and 2 edge windows of
another): batches of up to 4. Two network tiles: ``tile=640`` runs each 640 px window (512 + 2 x 64)
in one piece, as ``benchmarks/slides.py`` does; with the transform's default ``tile=512`` the windows were
cut into overlapping 512 px network tiles (four for an interior window) until the slide tiler began to
send windows that exceed the network tile by no more than its overlap through whole
(``NetworkTransform.transform_many(windows=True)``): the committed results (b4b5d93) are from before,
and today both tiles run the same path (measured for the 16-channel network only: the 64-channel one
would take minutes per case on two cores).

    .venv/bin/python benchmarks/slide_networks.py     # about 4 minutes on 2 shared cores -> results/slide_networks.json

CPU only here: run it with ``--device cuda`` on a GPU machine for the GPU figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import stainlab
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image
from stainlab.nets.files import save_model
from stainlab.nets.unet import UNet
from stainlab.wsi.tiling import TileGrid, run_tiled

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
sys.path.insert(0, str(HERE))
from provenance import provenance  # noqa: E402  (benchmarks/provenance.py: commit and dirty flag)

TILE, OVERLAP = 512, 64
# (base channels, network tile, slide height x width in cores): the 64-channel network on one row
# (~5 s a window on 2 shared cores)
CASES = ((16, TILE + 2 * OVERLAP, (2, 6)), (16, TILE, (2, 6)), (64, TILE + 2 * OVERLAP, (1, 6)))
REPEATS = 2
FORCED = 4  # windows per call asked for with --batch-size


def tissue_slide(rows: int, cols: int) -> tuple[np.ndarray, str]:
    """A ``rows x cols`` core slide of real H&E (mirrored out to size), or of seeded random texture."""
    height, width = rows * TILE, cols * TILE
    path = SHARED / "he_source_rgba.png"
    if path.is_file():
        image, _ = read_image(path)
        reps = (-(-height // image.shape[0]), -(-width // image.shape[1]))
        tiled = np.pad(image, ((0, (reps[0] - 1) * image.shape[0]), (0, (reps[1] - 1) * image.shape[1]), (0, 0)),
                       mode="symmetric")
        return np.ascontiguousarray(tiled[:height, :width]), str(path.name)
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, (height, width, 3), dtype=np.uint8), "seeded random texture"


def _label(batch_size: int | None):
    return batch_size or "by memory"


def run_case(base_channels: int, net_tile: int, cores: tuple[int, int], device: str, work: Path) -> dict:
    torch.manual_seed(0)
    model = save_model(work / f"unet{base_channels}.safetensors", UNet(base_channels=base_channels), "unet",
                       {"base_channels": base_channels})
    slide, source = tissue_slide(*cores)
    grid = TileGrid(*slide.shape[:2], TILE, OVERLAP)
    record = {"base_channels": base_channels, "network_tile": net_tile, "slide": f"{slide.shape[1]}x{slide.shape[0]}",
              "source": source, "tiles": len(grid), "device": device, "runs": []}

    def load(batch_size):
        return stainlab.load(f"unet:{model}", tile=net_tile, overlap=OVERLAP, device=device, batch_size=batch_size)

    side = min(TILE + 2 * OVERLAP, net_tile)
    record["chosen_by_memory"] = chosen = load(None).batch_size_of(side, side)  # an interior window's
    settings = (1, FORCED) if chosen == 1 else (1, FORCED, None)
    outputs = []
    for batch_size in settings * REPEATS:
        t = load(batch_size)
        calls = []  # windows per network call (and, by memory, one call on a small crop per size)
        t._net.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        outputs.append(run_tiled(slide, t, TILE, OVERLAP, min_tissue=0.01))
        seconds = time.perf_counter() - start
        record["runs"].append({"batch_size": _label(batch_size), "network_calls": len(calls),
                               "largest_call": max(calls), "seconds": round(seconds, 2),
                               "tiles_per_s": round(len(grid) / seconds, 4),
                               "load_average_before": round(load_before, 2),
                               "load_average_after": round(os.getloadavg()[0], 2)})
        print(json.dumps(record["runs"][-1]), flush=True)
    record["max_abs_difference"] = int(max(np.abs(outputs[0].astype(np.int16) - out).max() for out in outputs))
    best = {_label(setting): min(r["seconds"] for r in record["runs"] if r["batch_size"] == _label(setting))
            for setting in settings}
    record["tiles_per_s"] = {str(setting): round(len(grid) / seconds, 4) for setting, seconds in best.items()}
    record["speedup_over_batch_1"] = {str(setting): round(best[1] / seconds, 3) for setting, seconds in best.items()
                                      if setting != 1}
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "slide_networks")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started, start = provenance(), time.perf_counter()
    cases = [run_case(*case, args.device, args.work) for case in CASES]
    summary = {
        "what": "tiles/s of paper 000's U-Net (random weights) over all-tissue slides through the slide tiler, "
                f"{TILE} px tiles with {OVERLAP} px overlap: one window per network call, {FORCED} per call, and "
                "batches chosen by free memory where that is not 1",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "note": "a shared 2-core machine: other engineers' test runs used the cores at the same time "
                            "(see each run's load averages), so the seconds are upper bounds"},
        "cases": cases, "seconds": round(time.perf_counter() - start, 1)}
    summary["provenance"] = provenance(started)
    atomic_write_text(args.out / "slide_networks.json", json.dumps(summary, indent=1))
    for case in cases:
        print(f"U-Net {case['base_channels']} channels, network tile {case['network_tile']}: tiles/s by batch size "
              f"{case['tiles_per_s']} (speed-up {case['speedup_over_batch_1']}, chosen by memory "
              f"{case['chosen_by_memory']}, largest difference {case['max_abs_difference']})")


if __name__ == "__main__":
    main()
