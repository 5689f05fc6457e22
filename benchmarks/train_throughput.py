"""Training throughput of every recipe (issue 14): steps/s and tiles/s at paper size and tiny size, in
fp32 and bf16, and the agreement of a 2-process gloo run with one process.

Each case is a real ``stainlab.training.train`` run (loader, precision, optimiser steps, logging) on
tiles of real H&E (../shared/data's ``he_source_rgba.png`` mirrored out to 1024 px, paper 002's tile
size; its simulated IHC at a HER2 level (stainlab.data.simulate.he_to_ihc) as the B side; a
seeded texture where the file is missing). The rate is taken between the log rows of the first and the
last step, so start-up, the first (warm-up) step, pictures and exports are left out. Paper size means
the recipe's own defaults (``--preset paper``): networks, tile and batch as the papers give them; on a
CPU a paper-size step takes minutes, so those runs time one step after the warm-up, and on a CPU without
bf16 instructions (AVX-512 BF16, AMX), where torch emulates bf16 about 20x slower than fp32, only
pix2pix (the cheapest) runs paper size in bf16.
Recipes that need another run's file get one with seeded random weights (distill's CycleGAN teacher,
derestainer's ResNet-50 comparator); pcnet's Gram loss uses random VGG16 features (the ImageNet file
is not on this machine; the cost is the same).

The agreement case trains the tiny CycleGAN (image pool off: a pool holds each process's own fakes)
with the same global batch and seed in one process and in two (``processes=2``: gloo on the CPU) and
records the largest relative difference of the logged losses and of the generator's output.
``--compile`` adds the tiny pix2pix with and without ``torch.compile`` (about 2 minutes of compiling).

    .venv/bin/python benchmarks/train_throughput.py --compile  # ~45 min on 2 cores -> results/train_throughput.json
    .venv/bin/python benchmarks/train_throughput.py --quick    # 2 recipes, tiny only: the code path
    .venv/bin/python benchmarks/train_throughput.py --gloo-only --out benchmarks/results/train_gloo.json

:func:`measure` and :func:`bench_data` are also what ``gpu_check.py`` runs on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import stainlab.networks as networks
from stainlab.data.simulate import he_to_ihc
from stainlab.io.images import read_image
from stainlab.nets.derestainer import her2_comparator
from stainlab.nets.files import build_network, save_model
from stainlab.nets.inference import to_net
from stainlab.training import TrainingData, make_config, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
RESULTS = HERE / "results" / "train_throughput.json"
sys.path.insert(0, str(HERE))
from provenance import provenance, write_results  # noqa: E402

TILE = 1024  # paper 002: 1024 px tiles, of which 512 px crops train DeReStainer
IMAGES = 8
LEVELS = [0, 1, 2, 3] * (IMAGES // 4)
QUIET = {"checkpoint_every": 10**9, "picture_every": 10**9, "log_every": 1}
EMULATED_BF16 = ("pix2pix",)  # at paper size on a CPU without bf16 instructions only the cheapest runs bf16


def bench_data(count: int = IMAGES, side: int = TILE) -> TrainingData:
    """``count`` paired tiles of ``side`` px: real H&E (mirrored out) and a restained copy, with levels."""
    path = SHARED / "he_source_rgba.png"
    if path.is_file():
        source = read_image(path)[0]
    else:
        source = np.random.default_rng(0).integers(40, 230, (438, 584, 3), dtype=np.uint8)
    reps = [-(-side // n) + 1 for n in source.shape[:2]]
    big = np.pad(source, [(0, n * (r - 1)) for n, r in zip(source.shape[:2], reps)] + [(0, 0)], mode="symmetric")
    rng = np.random.default_rng(1)
    a = []
    for _ in range(count):
        top, left = (int(rng.integers(n - side + 1)) for n in big.shape[:2])
        a.append(np.ascontiguousarray(big[top:top + side, left:left + side]))
    b = [he_to_ihc(image, LEVELS[i], seed=i) for i, image in enumerate(a)]
    return TrainingData(a, b, True, f"{count} H&E tiles of {side} px", LEVELS[:count])


def needed_files(recipe: str, preset: str, folder: Path) -> dict:
    """Settings pointing a recipe at the files it needs, written with seeded random weights."""
    if recipe == "distill":
        kwargs = {"ngf": 8, "n_blocks": 2} if preset == "tiny" else {}
        torch.manual_seed(0)
        path = folder / f"teacher_{preset}.safetensors"
        save_model(path, build_network("resnet-generator", kwargs), "resnet-generator", kwargs, recipe="cyclegan",
                   direction="A->B")
        return {"teacher": str(path)}
    if recipe == "derestainer":
        arch = "resnet18" if preset == "tiny" else "resnet50"  # paper 002, Sec. 3.1: ResNet-50
        path = folder / f"comparator_{arch}.safetensors"
        kwargs = {"arch": arch, "levels": 4}
        save_model(path, her2_comparator(arch, 4, "random", 0), "her2-classifier", kwargs, recipe="comparator")
        return {"comparator": str(path)}
    if recipe == "pcnet":
        return {"features": "random"}
    return {}


def measure(recipe: str, preset: str, precision: str, device: str, steps: int, data: TrainingData,
            folder: Path, extra: dict | None = None) -> dict:
    """One training run of ``steps`` steps: steps/s and tiles/s between the first and the last step."""
    overrides = {**QUIET, **needed_files(recipe, preset, folder), "steps": steps, "precision": precision,
                 "device": device, **(extra or {})}
    config = make_config(recipe, preset, overrides)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    run = folder / f"{recipe}_{preset}_{precision}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(recipe, data, run, preset=preset, overrides=overrides, progress=False, overwrite=True)
    first, last = result.history[0], result.history[-1]
    rate = (last["step"] - first["step"]) / (last["seconds"] - first["seconds"])
    row = {"recipe": recipe, "preset": preset, "precision": precision, "size": config.size,
           "batch_size": config.batch_size, "steps_timed": last["step"] - first["step"],
           "steps_per_s": round(rate, 4), "tiles_per_s": round(rate * config.batch_size, 3),
           "parameters": sum(p.numel() for f in result.models.values() for p in _tensors(f))}
    if device.startswith("cuda"):
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def _tensors(path: Path):
    from safetensors.torch import load_file

    return load_file(path).values()


def gloo_agreement(data: TrainingData, folder: Path, steps: int = 6) -> dict:
    """The tiny CycleGAN trained by one process and by two (gloo) on the same global batch and seed,
    and, as the floor of what float rounding alone does to a GAN under Adam, by one process on one
    thread instead of all (the same arithmetic summed in another order)."""
    from stainlab.nets.files import load_model

    settings = {**QUIET, "steps": steps, "batch_size": 4, "pool_size": 0, "size": 128}
    runs, threads = {}, torch.get_num_threads()
    for name, processes, use_threads in (("one", 1, threads), ("two", 2, threads), ("one_thread", 1, 1)):
        torch.set_num_threads(use_threads)
        start = time.perf_counter()
        runs[name] = train("cyclegan", data, folder / f"gloo_{name}", preset="tiny", overrides=settings,
                           progress=False, overwrite=True, processes=processes)
        runs[name].wall = time.perf_counter() - start
    torch.set_num_threads(threads)
    x = to_net(np.stack([image[:256, :256] for image in data.a[:2]]))
    with torch.no_grad():
        out = {name: load_model(folder / f"gloo_{name}" / "G_AB.safetensors")[0](x) for name in runs}
    losses = [key for key in runs["one"].history[0] if key not in ("step", "epoch", "lr", "seconds")]

    def differences(other: str) -> dict:
        worst = max(abs(b[k] - a[k]) / max(abs(a[k]), 1e-12)
                    for a, b in zip(runs["one"].history, runs[other].history) for k in losses)
        gap = (out["one"] - out[other]).abs() * 127.5
        return {"largest_relative_loss_difference": float(worst), "largest_output_difference_of_255": float(gap.max()),
                "mean_output_difference_of_255": float(gap.mean())}

    return {"recipe": "cyclegan", "preset": "tiny", "steps": steps, "global_batch": 4, "processes": 2,
            **differences("two"), "rounding_floor_one_thread_vs_all": differences("one_thread"),
            "wall_s": {name: round(run.wall, 2) for name, run in runs.items()}}


def compile_case(data: TrainingData, folder: Path, steps: int = 12) -> dict:
    rows = {}
    for compiled in (False, True):
        start = time.perf_counter()
        rows[compiled] = measure("pix2pix", "tiny", "fp32", "cpu", steps, data, folder, {"compile": compiled})
        rows[compiled]["wall_s"] = round(time.perf_counter() - start, 1)
    return {"eager": rows[False], "compiled": rows[True],
            "speedup_x": round(rows[True]["steps_per_s"] / rows[False]["steps_per_s"], 3)}


def markdown(report: dict) -> str:
    lines = ["| recipe | preset | tile x batch | fp32 steps/s | bf16 steps/s | fp32 tiles/s | bf16 tiles/s |",
             "|---|---|---|---|---|---|---|"]
    by = {(r["recipe"], r["preset"], r["precision"]): r for r in report["runs"]}
    for recipe, preset in dict.fromkeys((r["recipe"], r["preset"]) for r in report["runs"]):
        fp32, bf16 = by.get((recipe, preset, "fp32")), by.get((recipe, preset, "bf16"))
        cells = [f"{row[key]:.3g}" if row else "" for key in ("steps_per_s", "tiles_per_s") for row in (fp32, bf16)]
        lines.append(f"| {recipe} | {preset} | {fp32['size']} x {fp32['batch_size']} | {cells[0]} | {cells[1]} | "
                     f"{cells[2]} | {cells[3]} |")
    g = report.get("gloo")
    if g:
        floor = g.get("rounding_floor_one_thread_vs_all", {})
        lines += ["", f"2 gloo processes vs 1 (tiny CycleGAN, {g['steps']} steps, global batch {g['global_batch']}): "
                      f"logged losses within {g['largest_relative_loss_difference']:.2e} relative; generator outputs "
                      f"within {g['largest_output_difference_of_255']:.2f} of 255 "
                      f"(mean {g['mean_output_difference_of_255']:.3f})."]
        if floor:
            lines.append(f"One process on one thread vs all threads (rounding alone): losses within "
                         f"{floor['largest_relative_loss_difference']:.2e}, outputs within "
                         f"{floor['largest_output_difference_of_255']:.2f} (mean {floor['mean_output_difference_of_255']:.3f}).")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="cyclegan and distill, tiny only, few steps")
    parser.add_argument("--gloo-only", action="store_true", help="only the 2-process agreement (a minute)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the tiny pix2pix")
    parser.add_argument("--out", type=Path, default=None, help=f"results (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    started = provenance()
    torch.set_num_threads(torch.get_num_threads())
    recipes = ["cyclegan", "distill"] if args.quick else list(networks.recipes())
    presets = {"tiny": 4 if args.quick else 6, **({} if args.quick else {"paper": 2})}
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    data = bench_data()
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "native_bf16": native_bf16}, "runs": [], "left_out": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for preset, steps in ({} if args.gloo_only else presets).items():
            for recipe in recipes:
                for precision in ("fp32", "bf16"):
                    if preset == "paper" and precision == "bf16" and not native_bf16 and recipe not in EMULATED_BF16:
                        report["left_out"].append(f"{recipe} paper bf16: emulated on this CPU (see the tiny runs)")
                        continue
                    row = measure(recipe, preset, precision, "cpu", steps, data, folder)
                    print(json.dumps(row), flush=True)
                    report["runs"].append(row)
        report["gloo"] = gloo_agreement(data, folder, 3 if args.quick else 6)
        if args.compile:
            report["compile"] = compile_case(data, folder)
    report["provenance"] = provenance(started)
    if (args.quick or args.gloo_only) and args.out is None:
        print(markdown(report))
        return 0
    write_results(args.out or RESULTS, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
