"""Every normalizer scored against exact ground truth on re-stained real tissue, its speed, and the real
unaligned pair.

Real H&E tissue (../shared/data's two torchstain images when present, scikit-image's IHC image
otherwise, both fully covered by tissue, and the CMU-1 small region, whose tiles hold glass too) is cut
into 256x256 tiles (``stainlab data make-benchmark``'s tiling). For each simulator
preset (all of them by default: the staining presets, which the two-stain Beer-Lambert model of Macenko
and Vahadane can express, and the scanner presets of glass colour, cross-talk, tone curves, saturation
and JPEG, which it cannot) the tiles are re-stained (the inputs, ``A/``) and rendered in one look, that
of the real target image he_target (its stain vectors, its stain depth, its glass: the ground truth,
``B/``; each source image's depth is brought to the target's, see :mod:`stainlab.data.benchmark`). The
tile with the most tissue and the most typical colour is held out and its truth is the reference
(``reference.png``), so every method is fitted on an image in exactly the look it is scored against;
each method (all registered normalizers by default, so a newly registered one joins with no change
here) is scored on the other tiles with the evaluation harness (PSNR, SSIM, CIEDE2000, MAE;
unnormalized inputs as the baseline).

Speed: each method's seconds per 512x512 image, fitting excluded, the median of a few runs on one real
tissue image after a first, untimed run (which compiles).

The real unaligned pair (../shared/data he_source -> he_target, when present): each method maps the
source onto the target's look, scored by two distribution distances to the target, since no pixel
truth exists: the per-channel CIELAB Wasserstein distance over all pixels, and the sliced Wasserstein
distance in CIELAB over tissue pixels (which sees hues recombined, not only each channel's histogram).
Histogram matching, the method that matches distributions by construction, is always listed.

    python benchmarks/restain.py                 # all presets, all methods -> benchmarks/results/restain.{json,md}
    python benchmarks/restain.py --presets long-he scanner-other --methods reinhard macenko histogram

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
from stainlab.color.light import estimate_light
from stainlab.color.tissue import tissue_mask
from stainlab.data import PRESETS, PairedFolders, make_benchmark
from stainlab.data.looks import look_of
from stainlab.evaluate import Harness, write_report
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image
from stainlab.metrics import channel_wasserstein, sliced_wasserstein

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classical import load_slide  # noqa: E402  (benchmarks share the slide loader)
from provenance import provenance  # noqa: E402  (benchmarks/provenance.py: commit and dirty flag)

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
PAIR = (SHARED / "he_source_rgba.png", SHARED / "he_target_rgba.png")
TILE = 256
TIMED_SIDE = 512
TIMED_RUNS = 5
YARDSTICK = "histogram"  # matches each channel's distribution by construction: the real pair's yardstick


def tissue() -> tuple[list, np.ndarray, str]:
    """The real tissue to cut into tiles (image files or arrays), the image whose look the truth takes,
    and where they came from: the two torchstain images (fully covered by tissue, no glass) or
    scikit-image's IHC image, and the CMU-1 small region (:func:`classical.load_slide`), whose tiles of
    at least half tissue also hold glass, as most tiles of a slide do."""
    slide, slide_origin = load_slide()
    if all(f.is_file() for f in PAIR):
        return ([*PAIR, slide], read_image(PAIR[1])[0],
                f"../shared/data he_source_rgba.png, he_target_rgba.png and {slide_origin}")
    from skimage import data

    image = data.immunohistochemistry()
    return [image, slide], image, f"scikit-image immunohistochemistry() and {slide_origin}"


def run(presets, methods, work: Path, seed: int) -> dict:
    sources, target, origin = tissue()
    look = look_of(target)
    summary = {"command": " ".join(["python benchmarks/restain.py", *sys.argv[1:]]), "tissue": origin,
               "tile": TILE, "seed": seed,
               "truth_look": look.to_dict(),
               "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                           "stainlab": stainlab.__version__},
               "presets": {}}
    for preset in presets:
        started = time.perf_counter()
        folder = work / preset
        data = make_benchmark(sources, preset, folder / "data", seed, reference=look, tile=TILE, min_tissue=0.5,
                              overwrite=True)
        results = Harness(PairedFolders.open(data), folder, progress=sys.stderr.isatty()).evaluate(methods)
        summary["tiles"] = results["images"] + 1  # the scored tiles and the one held out as the reference
        write_report(results, folder)
        summary["presets"][preset] = {"images": results["images"], "reference": results["reference"],
                                      "table": results["table"], "seconds": round(time.perf_counter() - started, 1)}
        print(f"{preset}: {results['images']} scored tiles in {summary['presets'][preset]['seconds']} s; "
              f"report {folder / 'report.html'}")
    return summary


def timing_images() -> tuple[np.ndarray, np.ndarray, str]:
    """A 512x512 real-tissue image to time methods on, a reference to fit them on, and where both came
    from. The torchstain source (438 px high) is extended to 512 rows by mirroring its own tissue."""
    if all(f.is_file() for f in PAIR):
        source, reference = (read_image(f)[0] for f in PAIR)
        origin = "../shared/data he_source_rgba.png mirrored to 512x512, fitted on he_target_rgba.png"
    else:
        from skimage import data

        source = reference = data.immunohistochemistry()
        origin = "scikit-image immunohistochemistry() 512x512, fitted on itself"
    rows, cols = max(0, TIMED_SIDE - source.shape[0]), max(0, TIMED_SIDE - source.shape[1])
    image = np.pad(source, ((0, rows), (0, cols), (0, 0)), mode="reflect")[:TIMED_SIDE, :TIMED_SIDE]
    return np.ascontiguousarray(image), reference, origin


def seconds_per_image(methods) -> dict:
    """Each method's seconds to transform one 512x512 image (fit excluded): the median of TIMED_RUNS
    runs after one untimed run."""
    image, reference, origin = timing_images()
    seconds = {}
    for name in methods:
        transform = stainlab.load(name).fit(reference)
        transform(image)
        runs = []
        for _ in range(TIMED_RUNS):
            started = time.perf_counter()
            transform(image)
            runs.append(time.perf_counter() - started)
        seconds[name] = round(float(np.median(runs)), 4)
    return {"image": origin, "side": TIMED_SIDE, "runs": TIMED_RUNS, "seconds": seconds}


def tissue_pixels(image: np.ndarray) -> np.ndarray:
    """The tissue pixels of an image, as an (N, 1, 3) image, tissue taken against its own light."""
    pixels = image.reshape(-1, 3)
    return pixels[tissue_mask(pixels, light=estimate_light(pixels).rgb)][:, None, :]


def real_pair(methods) -> dict | None:
    """The two real H&E images of ../shared/data, unaligned: the source normalized to the target's look,
    scored by two distribution distances to the target (no pixel truth exists): CIELAB Wasserstein per
    channel over all pixels, and sliced CIELAB Wasserstein over tissue pixels."""
    if not all(f.is_file() for f in PAIR):
        return None
    source, target = (read_image(f)[0] for f in PAIR)
    target_tissue = tissue_pixels(target)
    outputs = {"unnormalized": source}
    for name in dict.fromkeys([*methods, YARDSTICK]):
        outputs[name] = stainlab.load(name).fit(target)(source)
    return {name: {"wasserstein_lab": round(channel_wasserstein(out, target), 3),
                   "sliced_wasserstein_lab_tissue": round(sliced_wasserstein(tissue_pixels(out), target_tissue), 3)}
            for name, out in outputs.items()}


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
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS), metavar="PRESET")
    parser.add_argument("--methods", nargs="+",
                        default=stainlab.transforms.normalizers())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "restain")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    started = provenance()
    summary = run(args.presets, args.methods, args.work, args.seed)
    summary["seconds_per_512"] = seconds_per_image(args.methods)
    summary["real_pair"] = real_pair(args.methods)
    summary["provenance"] = provenance(started)
    atomic_write_text(args.out / "restain.json", json.dumps(summary, indent=1))
    tables = (f"# Normalizers vs exact ground truth on re-stained real tissue\n\n"
              f"`{summary['command']}`: {summary['tiles']} tiles of {summary['tissue']} "
              f"({summary['tile']}x{summary['tile']}; the one with the most tissue and the most typical colour "
              f"is held out as the reference, the others are scored), re-stained by each preset (seed "
              f"{summary['seed']}); ground truth rendered in the target image's look (its stain vectors, stain "
              f"depth and glass).\n\n"
              + markdown(summary, "ciede2000", "lower") + "\n" + markdown(summary, "psnr", "higher")
              + "\n" + markdown(summary, "ssim", "higher"))
    timing = summary["seconds_per_512"]
    tables += (f"\nSeconds per {timing['side']}x{timing['side']} image, fit excluded (median of {timing['runs']} "
               f"runs; {timing['image']})\n\n| method | ms per image |\n| --- | --- |\n"
               + "".join(f"| {k} | {1e3 * v:.1f} |\n" for k, v in timing["seconds"].items()))
    if summary["real_pair"]:
        tables += ("\nReal, unaligned pair (../shared/data he_source -> he_target): distances between output and "
                   "target colours, lower is better: CIELAB Wasserstein per channel over all pixels, and sliced "
                   "CIELAB Wasserstein over tissue pixels\n\n| method | Wasserstein | sliced, tissue |\n"
                   "| --- | --- | --- |\n"
                   + "".join(f"| {k} | {v['wasserstein_lab']:.2f} | {v['sliced_wasserstein_lab_tissue']:.2f} |\n"
                             for k, v in summary["real_pair"].items()))
    atomic_write_text(args.out / "restain.md", tables)
    print(tables)


if __name__ == "__main__":
    main()
