"""The one prepared GPU check (issues 14 and 15), under 8 minutes on one GPU. Three parts:

- ``engine`` (issue 15): tiles per second on CUDA for the batches of ``torch_engine.py`` (32 tiles of
  256 px from the CMU-1 region and the shared H&E source), stainlab's torch engine against torchstain's
  torch backend (looped over the batch), Macenko and Reinhard, and the engine's agreement with the
  NumPy exact path (needs torchstain: run it from benchmarks/_work/venv; skipped where it is missing);
- ``training`` (issue 14): every recipe at paper size (``--preset paper``) for ``--steps`` steps in bf16
  and fp32 (``train_throughput.measure``: a real training run; steps/s, tiles/s, peak GPU memory),
  cases left out once ``TRAINING_BUDGET_S`` has passed, then CycleGAN in bf16 with ``channels_last``;
- ``inference`` (issue 14): 5000 tiles of 256 px through CycleGAN's generator, paper 000's U-Net,
  StainNet as a network and as its lookup table, and DeReStainer, each through its transform on the GPU
  (uint8 in, uint8 out: ``transform_many`` in batches that fit), against paper 000 Table I's 271 s,
  205 s and 123 s for CycleGAN, U-Net and StainNet on its GPU. Networks have seeded random weights: the
  arithmetic is the trained ones'.

    benchmarks/_work/venv/bin/python benchmarks/gpu_check.py                      # CUDA -> results/gpu_check.json
    benchmarks/_work/venv/bin/python benchmarks/gpu_check.py --device cpu --quick # the same code on the CPU, printed

Without a CUDA device it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import stainlab
from stainlab.io.atomic import atomic_write_text
from stainlab.nets.derestainer import DeReStainer
from stainlab.nets.files import build_network, save_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402
from train_throughput import bench_data, measure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"
PARTS = ("engine", "training", "inference")
TRAINING_BUDGET_S = 270  # training cases start only while this much time has not passed
INFERENCE_TILES, INFERENCE_SIDE = 5000, 256  # paper 000, Table I
PAPER_000_TABLE_I_S = {"cyclegan": 271.0, "unet": 205.0, "stainnet": 123.0}
# (kind, architecture, constructor kwargs) of the inference networks at their papers' sizes
INFERENCE_NETWORKS = (("cyclegan", "resnet-generator", {}), ("unet", "unet", {}), ("stainnet", "stainnet", {}),
                      ("derestainer", "derestainer", {}))


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


def engine_part(device: torch.device, quick: bool) -> dict:
    """Issue 15's check: the torch engine against torchstain's torch backend."""
    from torch_engine import (METHODS, SHARED, agreement, as_batch, grid_tiles, load_slide, random_tiles,
                              read_rgb, torchstain_normalizers)

    count, side, repeats = (4, 128, 2) if quick else (32, 256, 10)
    region, _ = load_slide()
    source, reference = read_rgb(SHARED / "he_source_rgba.png"), read_rgb(SHARED / "he_target_rgba.png")
    batches = {"cmu1_region": grid_tiles(region, count, side), "shared_source": random_tiles(source, count, side)}
    peers = torchstain_normalizers(reference, str(device))
    report = {"tiles_per_batch": count, "tile_px": side, "speed": {}, "agreement": {}}
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
    return report


def training_part(device: torch.device, quick: bool, steps: int, folder: Path) -> dict:
    """Every recipe at paper size (tiny with --quick) in bf16 and fp32; peak GPU memory on CUDA."""
    import stainlab.networks as networks

    data = bench_data(4 if quick else 8, 256 if quick else 1024)
    preset, steps = ("tiny", 3) if quick else ("paper", steps)
    start, runs, left_out = time.perf_counter(), [], []
    for recipe in networks.recipes():
        for precision in ("bf16", "fp32"):
            if time.perf_counter() - start > TRAINING_BUDGET_S:
                left_out.append(f"{recipe} {precision}")
                continue
            row = measure(recipe, preset, precision, str(device), steps, data, folder)
            print(json.dumps(row), flush=True)
            runs.append(row)
    last = measure("cyclegan", preset, "bf16", str(device), steps, data, folder, {"channels_last": True})
    runs.append({**last, "channels_last": True})  # where the NHWC layout pays: the convolution-heavy GAN
    return {"preset": preset, "steps": steps, "runs": runs, "left_out_for_time": left_out}


class StainNetOnDevice:
    """StainNet's 1x1 convolutions over whole tiles on a device, batches of 256 (uint8 in and out)."""

    def __init__(self, net, device: torch.device) -> None:
        self.net, self.device = net.to(device).eval(), device

    def transform_many(self, tiles):
        from stainlab.nets.inference import from_net

        out = []
        with torch.no_grad():
            for i in range(0, len(tiles), 256):
                batch = torch.from_numpy(np.stack(tiles[i:i + 256])).to(self.device)
                out += list(from_net(self.net(batch.permute(0, 3, 1, 2).float().div(127.5).sub(1.0))))
        return out


def inference_part(device: torch.device, quick: bool, folder: Path) -> dict:
    """5000 tiles of 256 px through each network's transform on ``device`` (uint8 in and out)."""
    count, side = (16, 64) if quick else (INFERENCE_TILES, INFERENCE_SIDE)
    rng = np.random.default_rng(0)
    tiles = [rng.integers(30, 240, (side, side, 3), dtype=np.uint8) for _ in range(count)]
    report = {"tiles": count, "tile_px": side, "networks": {}}
    for kind, arch, kwargs in INFERENCE_NETWORKS:
        torch.manual_seed(0)
        path = folder / f"{kind}.safetensors"
        net = DeReStainer() if arch == "derestainer" else build_network(arch, kwargs)
        save_model(path, net, arch, kwargs, recipe="gpu_check")
        t = stainlab.load(f"{kind}:{path}")
        # StainNet's transform is its lookup table (CPU); as a network it runs here through torch directly
        modes = {"network": StainNetOnDevice(net, device), "lookup_table": t} if kind == "stainnet" else {"network": t}
        for mode, t in modes.items():
            if mode == "network" and hasattr(t, "run_on"):
                t.run_on(str(device))
            run_all = getattr(t, "transform_many", None) or (lambda images, t=t: [t(image) for image in images])
            run_all(tiles[:2])  # warm-up (cuDNN algorithm choice)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            run_all(tiles)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            row = {"seconds": round(seconds, 3), "tiles_per_s": round(count / seconds, 2)}
            if kind in PAPER_000_TABLE_I_S and not quick:
                row["paper_000_table_i_s"] = PAPER_000_TABLE_I_S[kind]
                row["speedup_vs_paper_x"] = round(PAPER_000_TABLE_I_S[kind] / seconds, 2)
            report["networks"].setdefault(kind, {})[mode] = row
            print(kind, mode, json.dumps(row), flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps: the code path")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--steps", type=int, default=200, help="training steps per recipe and precision")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON results (default on CUDA without --quick: {RESULTS.relative_to(ROOT)}; else printed only)")
    args = parser.parse_args()
    started = provenance()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
              "run it on a GPU machine, or pass --device cpu --quick to try the code path", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    report = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__}
    parts = [part for part in args.parts.split(",") if part]
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            begun = time.perf_counter()
            try:
                if part == "engine":
                    report[part] = engine_part(device, args.quick)
                elif part == "training":
                    report[part] = training_part(device, args.quick, args.steps, Path(tmp))
                elif part == "inference":
                    report[part] = inference_part(device, args.quick, Path(tmp))
                else:
                    parser.error(f"unknown part {part!r}; known: {', '.join(PARTS)}")
            except ImportError as missing:  # torchstain outside benchmarks/_work/venv
                report[part] = {"skipped": f"{missing}"}
            report.setdefault("part_seconds", {})[part] = round(time.perf_counter() - begun, 1)
    report["provenance"] = provenance(started)
    print(json.dumps(report, indent=1))
    out = args.out or (RESULTS if device.type == "cuda" and not args.quick else None)
    if out is not None:
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
