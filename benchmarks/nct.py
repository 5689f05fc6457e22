"""Neural colour transfer (paper 001): speed per image and quality beside the classical methods.

    python benchmarks/nct.py                      # everything -> benchmarks/results/nct.{json,md}
    python benchmarks/nct.py --skip-quality       # speed only
    python benchmarks/nct.py --presets long-he    # fewer presets

Speed: seconds per 500x500 and 1000x1000 image (real H&E from ../shared/data resized to those sizes,
scikit-image's IHC image otherwise), the median of ``--repeats`` runs with the stages timed. The paper's
C code needs 30 s for 500x500 (paper 001 Sec. 2.2.6); the target here is under 10 s on a 2-core CPU.

Quality: one evaluation-harness run per simulator preset on 256x256 tiles of real tissue re-stained by
the preset, with ground truth rendered under Macenko's reference H&E stain vectors (the set-up of
``benchmarks/restain.py``), NCT (default and tuned weights) beside Reinhard, Macenko and histogram
matching; and the real, unaligned pair he_source -> he_target scored by the CIELAB channel Wasserstein
distance to the target (no pixel correspondence exists).

No VGG19 ImageNet weights are on the benchmark machine and nothing is downloaded, so NCT runs with
``features="random"`` (seeded random VGG19 weights); the JSON says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import stainlab
from stainlab.color.stains import MACENKO_REFERENCE_HE
from stainlab.data import PairedFolders, Staining, extract_tiles, make_benchmark
from stainlab.evaluate import Harness, write_report
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image
from stainlab.metrics import channel_wasserstein
from stainlab.nct import Timings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402  (benchmarks/provenance.py: commit and dirty flag)

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
PAIR = (SHARED / "he_source_rgba.png", SHARED / "he_target_rgba.png")
PRESETS = ("long-he", "understained", "scanner-led", "stain-rotation", "faded")
CLASSICAL = ("reinhard", "macenko", "histogram")
NCT_VARIANTS = {"nct": {"features": "random"}, "nct-tuned": {"features": "random", "lambdas": "tuned"}}
TRUTH_STAINING = Staining(stains=MACENKO_REFERENCE_HE, name="macenko-reference-he")
TILE = 256
SIZES = (500, 1000)


def real_images() -> tuple[np.ndarray, np.ndarray, str]:
    """(source, reference, where from): the shared H&E pair, or two regions of scikit-image's IHC image."""
    if all(p.is_file() for p in PAIR):
        return read_image(PAIR[0])[0], read_image(PAIR[1])[0], "../shared/data he_source_rgba.png -> he_target_rgba.png"
    from skimage import data

    ihc = data.immunohistochemistry()
    return ihc[:, :256], ihc[:, 256:], "scikit-image immunohistochemistry(), left half -> right half"


def resized(image: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC))


def speed(repeats: int) -> dict:
    source, reference, origin = real_images()
    t = stainlab.load("nct", features="random").fit(reference)
    t(resized(source, 64))  # compile the numba kernels outside the timings
    rows = {}
    for side in SIZES:
        image = resized(source, side)
        for work_side in ([512, None] if side > 512 else [512]):
            t = stainlab.load("nct", features="random", work_side=work_side).fit(reference)
            runs = []
            for _ in range(repeats):
                timings = Timings()
                started, cpu_started = time.perf_counter(), time.process_time()
                t.transform(image, timings=timings)
                runs.append((time.perf_counter() - started, time.process_time() - cpu_started, timings.seconds))
            runs.sort(key=lambda run: run[0])
            total, cpu, stages = runs[len(runs) // 2]
            key = f"{side}x{side}" + ("" if work_side == 512 else " (work_side=None: full resolution)")
            rows[key] = {"seconds_median": round(total, 2), "seconds_all": [round(r[0], 2) for r in runs],
                         "cpu_seconds_of_median_run": round(cpu, 2),
                         "stages_of_median_run": {k: round(v, 3) for k, v in stages.items()}}
            print(f"{key}: {total:.2f} s wall, {cpu:.2f} s CPU (runs {rows[key]['seconds_all']}, "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
    return {"source": origin, "repeats": repeats, "rows": rows}


def tissue_tiles() -> tuple[list[np.ndarray], str]:
    images = [read_image(p)[0] for p in PAIR] if all(p.is_file() for p in PAIR) else []
    origin = "../shared/data he_source_rgba.png, he_target_rgba.png"
    if not images:
        from skimage import data

        images, origin = [data.immunohistochemistry()], "scikit-image immunohistochemistry()"
    tiles = [t.image for im in images for t in extract_tiles(im, tile=TILE, overlap=TILE // 4, min_tissue=0.5)]
    return tiles, origin


def method_specs(work: Path) -> dict[str, str]:
    """Harness method names: the classical ones by name, the NCT variants as unfitted JSON files in
    ``work`` (the harness loads any spec and fits it on the reference), named relative to ``work``."""
    specs = {name: name for name in CLASSICAL}
    for name, params in NCT_VARIANTS.items():
        stainlab.load("nct", **params).save(work / f"{name}.json")
        specs[name] = f"{name}.json"
    return specs


def quality(presets, work: Path, seed: int) -> dict:
    tiles, origin = tissue_tiles()
    specs = method_specs(work)
    by_spec = {spec: name for name, spec in specs.items()}
    out = {"tissue": origin, "tiles": len(tiles), "tile": TILE, "presets": {}}
    for preset in presets:
        started = time.perf_counter()
        folder = work / preset
        data = make_benchmark(tiles, preset, folder / "data", seed, reference=TRUTH_STAINING, overwrite=True)
        with contextlib.chdir(work):  # the NCT specs are file names in work
            results = Harness(PairedFolders.open(data), folder, progress=sys.stderr.isatty()).evaluate(list(specs.values()))
        write_report(results, folder)  # before renaming: the report finds outputs under the harness's names
        for row in results["table"]:
            row["method"] = by_spec.get(row["method"], row["method"])
        out["presets"][preset] = {"images": results["images"], "table": results["table"],
                                  "seconds": round(time.perf_counter() - started, 1)}
        print(f"{preset}: {results['images']} tiles scored in {out['presets'][preset]['seconds']} s", flush=True)
    return out


def real_pair() -> dict:
    source, target, origin = real_images()
    scores = {"unnormalized": channel_wasserstein(source, target)}
    transforms = {name: stainlab.load(name) for name in CLASSICAL}
    transforms.update({name: stainlab.load("nct", **params) for name, params in NCT_VARIANTS.items()})
    for name, t in transforms.items():
        scores[name] = channel_wasserstein(t.fit(target)(source), target)
    return {"pair": origin, "wasserstein_lab": {k: round(float(v), 3) for k, v in scores.items()}}


def markdown(summary: dict) -> str:
    lines = ["# Neural colour transfer (paper 001): speed and quality", "",
             (f"`{summary['command']}` on {summary['machine']['cpus']} CPU cores "
              f"(load average {summary['machine']['load_before']} before, {summary['machine']['load_after']} "
              "after: the CPU was shared with other jobs). NCT uses `features=\"random\"` (seeded random VGG19; "
              "no ImageNet weights on this machine)."), "", "## Seconds per image", "",
             f"Source: {summary['speed']['source']}; median of {summary['speed']['repeats']} runs.", "",
             ("| image | median s (wall) | all runs | CPU s (all threads) | features | patchmatch | voting | "
              "local transfer | guided filter | colour |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, row in summary["speed"]["rows"].items():
        s = row["stages_of_median_run"]
        lines.append(f"| {key} | {row['seconds_median']:.2f} | {row['seconds_all']} | "
                     f"{row['cpu_seconds_of_median_run']:.2f} | "
                     + " | ".join(f"{s.get(k, 0):.2f}" for k in ("features", "patchmatch", "voting",
                                                                   "local_transfer", "guided_filter", "colour")) + " |")
    if "quality" in summary:
        q = summary["quality"]
        presets = list(q["presets"])
        lines += ["", "## Against exact ground truth (restaining simulator)", "",
                  (f"{q['tiles']} tiles of {q['tissue']} ({q['tile']}x{q['tile']}; the first tile's ground truth "
                   "is the reference, the others are scored), re-stained by each preset; ground truth under "
                   "Macenko's reference H&E stain vectors. One harness run per preset with all methods.")]
        for metric, better in (("ciede2000", "lower"), ("psnr", "higher"), ("ssim", "higher")):
            lines += ["", f"{metric} ({better} is better)", "", f"| method | {' | '.join(presets)} | mean |",
                      "|" + " --- |" * (len(presets) + 2)]
            for row in q["presets"][presets[0]]["table"]:
                values = [next(r for r in q["presets"][p]["table"] if r["method"] == row["method"])[metric]
                          for p in presets]
                lines.append(f"| {row['method']} | " + " | ".join(f"{v:.2f}" for v in values)
                             + f" | {np.mean(values):.2f} |")
        lines += ["", "seconds per 256x256 tile", "", "| method | " + " | ".join(presets) + " |",
                  "|" + " --- |" * (len(presets) + 1)]
        for row in q["presets"][presets[0]]["table"]:
            values = [next(r for r in q["presets"][p]["table"] if r["method"] == row["method"])["seconds_per_image"]
                      for p in presets]
            lines.append(f"| {row['method']} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    if "real_pair" in summary:
        r = summary["real_pair"]
        lines += ["", f"## Real, unaligned pair ({r['pair']})", "",
                  "CIELAB channel Wasserstein distance between output and target colours (lower is better)", "",
                  "| method | distance |", "| --- | --- |"]
        lines += [f"| {k} | {v:.2f} |" for k, v in r["wasserstein_lab"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "nct")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = provenance()
    summary = {"command": " ".join(["python benchmarks/nct.py", *sys.argv[1:]]),
               "features": "random (seeded random VGG19 weights; ImageNet weights absent, no downloads)",
               "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "stainlab": stainlab.__version__, "load_before": [round(x, 2) for x in os.getloadavg()]}}
    summary["speed"] = speed(args.repeats)
    if not args.skip_quality:
        summary["quality"] = quality(args.presets, args.work, args.seed)
        summary["real_pair"] = real_pair()
    summary["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    summary["provenance"] = provenance(started)
    atomic_write_text(args.out / "nct.json", json.dumps(summary, indent=1))
    text = markdown(summary)
    atomic_write_text(args.out / "nct.md", text)
    print(text)


if __name__ == "__main__":
    main()
