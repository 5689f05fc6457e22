"""Every classical method scored against exact ground truth on re-stained real tissue.

Real H&E tissue (../shared/data's two torchstain images when present, scikit-image's IHC image
otherwise) is cut into 256x256 tiles. For each simulator preset the tiles are re-stained (the inputs,
``A/``) and rendered under one common reference staining, Macenko's published H&E stain vectors (the
ground truth, ``B/``). Each method is fitted on the first tile's ground truth and scored on the others
with the evaluation harness (PSNR, SSIM, CIEDE2000, MAE; unnormalized inputs as the baseline).

    python benchmarks/restain.py                 # all presets -> benchmarks/results/restain.{json,md}
    python benchmarks/restain.py --presets long-he understained

Reports with montages and charts per preset are written under benchmarks/_work/restain/<preset>/.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

import stainlab
from stainlab.color.stains import MACENKO_REFERENCE_HE
from stainlab.data import PairedFolders, Staining, extract_tiles, make_benchmark
from stainlab.evaluate import Harness, write_report
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image
from stainlab.metrics import channel_wasserstein

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402  (benchmarks/provenance.py: commit and dirty flag)

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
PRESETS = ("long-he", "understained", "scanner-led", "stain-rotation", "faded")
TRUTH_STAINING = Staining(stains=MACENKO_REFERENCE_HE, name="macenko-reference-he")
TILE = 256


def tissue_tiles() -> tuple[list[np.ndarray], str]:
    """256x256 tiles of real tissue with at least half tissue, and where they came from."""
    files = [SHARED / "he_source_rgba.png", SHARED / "he_target_rgba.png"]
    if all(f.is_file() for f in files):
        images, origin = [read_image(f)[0] for f in files], "../shared/data he_source_rgba.png, he_target_rgba.png"
    else:
        from skimage import data

        images, origin = [data.immunohistochemistry()], "scikit-image immunohistochemistry()"
    tiles = [t.image for im in images for t in extract_tiles(im, tile=TILE, overlap=TILE // 4, min_tissue=0.5)]
    return tiles, origin


def run(presets, methods, work: Path, seed: int) -> dict:
    tiles, origin = tissue_tiles()
    summary = {"command": " ".join(["python benchmarks/restain.py", *sys.argv[1:]]), "tissue": origin,
               "tiles": len(tiles), "tile": TILE, "seed": seed, "truth_staining": TRUTH_STAINING.to_dict(),
               "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                           "stainlab": stainlab.__version__},
               "presets": {}}
    for preset in presets:
        started = time.perf_counter()
        folder = work / preset
        data = make_benchmark(tiles, preset, folder / "data", seed, reference=TRUTH_STAINING, overwrite=True)
        results = Harness(PairedFolders.open(data), folder, progress=sys.stderr.isatty()).evaluate(methods)
        write_report(results, folder)
        summary["presets"][preset] = {"images": results["images"], "table": results["table"],
                                      "seconds": round(time.perf_counter() - started, 1)}
        print(f"{preset}: {results['images']} scored tiles in {summary['presets'][preset]['seconds']} s; "
              f"report {folder / 'report.html'}")
    return summary


def real_pair(methods) -> dict | None:
    """The two real H&E images of ../shared/data, unaligned: the source normalized to the target's look,
    scored by the weight-free CIELAB Wasserstein distance between output and target colours."""
    files = [SHARED / "he_source_rgba.png", SHARED / "he_target_rgba.png"]
    if not all(f.is_file() for f in files):
        return None
    source, target = (read_image(f)[0] for f in files)
    scores = {"unnormalized": channel_wasserstein(source, target)}
    for name in methods:
        scores[name] = channel_wasserstein(stainlab.load(name).fit(target)(source), target)
    return {name: round(float(v), 3) for name, v in scores.items()}


def markdown(summary: dict, metric: str, better: str) -> str:
    presets = list(summary["presets"])
    methods = [row["method"] for row in summary["presets"][presets[0]]["table"]]
    lines = [f"| method | {' | '.join(presets)} | mean |", "|" + " --- |" * (len(presets) + 2)]
    for method in methods:
        values = []
        for preset in presets:
            row = next(r for r in summary["presets"][preset]["table"] if r["method"] == method)
            values.append(row[metric])
        shown = [f"{v:.2f}" if v is not None else "-" for v in values]
        finite = [v for v in values if v is not None]
        lines.append(f"| {method} | {' | '.join(shown)} | {np.mean(finite):.2f} |")
    return f"{metric} ({better} is better)\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--methods", nargs="+",
                        default=stainlab.transforms.normalizers())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "restain")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    started = provenance()
    summary = run(args.presets, args.methods, args.work, args.seed)
    summary["real_pair_wasserstein_lab"] = real_pair(args.methods)
    summary["provenance"] = provenance(started)
    atomic_write_text(args.out / "restain.json", json.dumps(summary, indent=1))
    tables = (f"# Classical methods vs exact ground truth on re-stained real tissue\n\n"
              f"`{summary['command']}`: {summary['tiles']} tiles of {summary['tissue']} "
              f"({summary['tile']}x{summary['tile']}; the first is the reference, the others are scored), "
              f"re-stained by each preset (seed {summary['seed']}); ground truth rendered under Macenko's "
              f"reference H&E stain vectors.\n\n"
              + markdown(summary, "ciede2000", "lower") + "\n" + markdown(summary, "psnr", "higher")
              + "\n" + markdown(summary, "ssim", "higher"))
    if summary["real_pair_wasserstein_lab"]:
        tables += ("\nReal, unaligned pair (../shared/data he_source -> he_target): CIELAB Wasserstein distance "
                   "between output and target colours (lower is better)\n\n| method | distance |\n| --- | --- |\n"
                   + "".join(f"| {k} | {v:.2f} |\n" for k, v in summary["real_pair_wasserstein_lab"].items()))
    atomic_write_text(args.out / "restain.md", tables)
    print(tables)


if __name__ == "__main__":
    main()
