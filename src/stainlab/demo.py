"""``stainlab demo``: every method on real tissue with an exact answer, in a few seconds.

The tissue is scikit-image's real IHC image (haematoxylin + DAB, shipped with the package). Sources are
synthesised by re-staining crops of it: Ruifrok colour deconvolution (Ruifrok & Johnston 2001, Eq. 3-6:
``OD = C W``, so ``C = OD W^-1`` with the H and DAB vectors completed to a 3x3 basis) separates the
stain concentrations, which are scaled per stain and rendered back through Beer-Lambert
(``I = I0 exp(-C W)``), some under tinted illumination (a per-channel ``I0``). The unaltered crop of the
same tissue is therefore the exact ground truth of what a normalizer should produce, and the demo
scores every method by its mean CIEDE2000 to it.

Written under ``OUT/``: ``inputs/`` (reference and sources), ``truth/``, one folder of outputs per
method, ``montage.png`` (rows = sources; columns = source, reference, truth, each method) and
``summary.json``.

With ``learned=True`` (``stainlab demo --learned``, what ``make demo`` runs) the demo also trains, in a
couple of minutes, the ``tiny`` presets of paper 003's CycleGAN (skips + structural cycle loss) and of
paper 000's U-Net student distilled from it, on the four re-stained looks (A) and unaltered crops of the
same image (B, unpaired), under ``OUT/runs/``; both are then scored like the other methods. They have
seen this tissue while training, so their scores flatter them: it shows the workflow, not a benchmark
(that is ``benchmarks/learned.py``).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stainlab.color.lab import rgb_to_lab
from stainlab.color.deconvolution import combine, separate
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import write_image
from stainlab.io.montage import montage
from stainlab.metrics import delta_e_2000
from stainlab.transforms import registry
from stainlab.transforms.lut import to_uint8

CROP = 256
REFERENCE_AT = (128, 128)  # centre of the 512x512 image: epithelium, stroma and glass


@dataclass(frozen=True)
class Restain:
    """How one source is made: which crop, stain concentration factors and illumination tint."""

    name: str
    label: str
    at: tuple[int, int]
    hematoxylin: float = 1.0
    dab: float = 1.0
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)  # I0 per channel, relative to white


SOURCES = (
    Restain("strong-hematoxylin", "haematoxylin x1.8", (0, 0), hematoxylin=1.8),
    Restain("weak-dab", "DAB x0.45", (0, 256), dab=0.45),
    Restain("yellow-light", "yellow light", (256, 0), light=(1.0, 0.9, 0.68)),
    Restain("faded-blue", "faded, blue light", (256, 256), hematoxylin=0.6, dab=0.6, light=(0.82, 0.9, 1.0)),
)


# -- data ---------------------------------------------------------------------------------------------------------
def crop(image: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    y, x = at
    return np.ascontiguousarray(image[y:y + CROP, x:x + CROP])


def restain(image: np.ndarray, how: Restain) -> np.ndarray:
    """Re-render ``image`` with scaled H and DAB concentrations under tinted light (Beer-Lambert)."""
    concentrations = separate(image, "hdab") * np.array([how.hematoxylin, how.dab, 1.0])
    return to_uint8(combine(concentrations, "hdab") * np.asarray(how.light))


def delta_e(image: np.ndarray, truth_lab: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference between an RGB image and a CIELAB one."""
    return float(np.mean(delta_e_2000(rgb_to_lab(image), truth_lab)))


# -- running the methods ------------------------------------------------------------------------------------------
def normalize_all(name: str, reference: np.ndarray, sources: dict[str, np.ndarray]):
    """Fit ``name`` (a method name or a learned ``KIND:PATH``) on the reference and transform every source.

    Returns ``(outputs, fit seconds, mean seconds per image, warning messages)``; raises whatever the
    method raises (the caller reports it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        transform = registry.load(name).fit(reference)
        fit_seconds = time.perf_counter() - start
        outputs, seconds = {}, []
        for key, image in sources.items():
            start = time.perf_counter()
            outputs[key] = transform(image)
            seconds.append(time.perf_counter() - start)
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    return outputs, fit_seconds, float(np.mean(seconds)), messages


def _scores(outputs: dict[str, np.ndarray], truth_labs: dict[str, np.ndarray]) -> dict:
    """CIEDE2000 of each output to the ground truth (in CIELAB) of its source, and their mean."""
    errors = {key: round(delta_e(image, truth_labs[key]), 3) for key, image in outputs.items()}
    return {"delta_e2000_mean": round(float(np.mean(list(errors.values()))), 3), "delta_e2000": errors}


def train_learned(out: Path, tissue: np.ndarray) -> dict[str, str]:
    """Tiny teacher CycleGAN and distilled U-Net on the demo tissue; ``{column label: KIND:PATH}``."""
    from stainlab.training import TrainingData, train

    spots = [(0, 0), (0, 256), (256, 0), (256, 256), (128, 128), (64, 192)]
    looks = [restain(crop(tissue, at), how) for how in SOURCES for at in spots]
    data = TrainingData(looks, [crop(tissue, at) for at in spots], paired=False,
                        description="demo: re-stained looks (A), unaltered crops (B)")
    teacher, student = out / "runs" / "cyclegan", out / "runs" / "unet"
    for folder, recipe, overrides in ((teacher, "cyclegan", {"skips": True, "ssim_cycle": True}),
                                      (student, "distill", {"teacher": str(teacher)})):
        print(f"stainlab demo: training {recipe} (tiny preset) into {folder}", flush=True)
        train(recipe, data, folder, preset="tiny", overrides=overrides, overwrite=True)
    return {"cyclegan-tiny": f"cyclegan:{teacher / 'G_AB.safetensors'}",
            "unet-tiny": f"unet:{student / 'student.safetensors'}"}


# -- the demo ------------------------------------------------------------------------------------------------------
def run(out="stainlab-demo", methods: list[str] | None = None, learned: bool = False) -> dict:
    """Write the demo under ``out`` (default: every normalizer; ``learned``: also train and score the
    tiny learned ones) and return the summary."""
    from skimage import data

    out = Path(out)
    started = time.perf_counter()
    tissue = data.immunohistochemistry()
    reference = crop(tissue, REFERENCE_AT)
    truths = {s.name: crop(tissue, s.at) for s in SOURCES}
    sources = {s.name: restain(truths[s.name], s) for s in SOURCES}
    _write_folder(out / "inputs", {"reference": reference, **sources})
    _write_folder(out / "truth", truths)
    truth_labs = {key: rgb_to_lab(image) for key, image in truths.items()}

    summary = {"reference": str(out / "inputs" / "reference.png"), "crop": CROP,
               "sources": {s.name: s.label for s in SOURCES},
               "unnormalized": _scores(sources, truth_labs), "methods": {}, "skipped": {}}
    columns = [("source", list(sources.values()), [s.label for s in SOURCES]),
               ("reference", [reference] * len(SOURCES), [""] * len(SOURCES)),
               ("truth", list(truths.values()), [""] * len(SOURCES))]
    specs = {name: name for name in methods or registry.normalizers()}
    if learned:
        specs.update(train_learned(out, tissue))
    for name, spec in specs.items():
        try:
            outputs, fit_seconds, per_image, messages = normalize_all(spec, reference, sources)
        except Exception as err:  # a method still being written or broken: say so, go on with the others
            summary["skipped"][name] = f"{type(err).__name__}: {err}"
            print(f"stainlab demo: skipped {name}: {type(err).__name__}: {err}")
            continue
        for message in messages:
            print(f"stainlab demo: {name}: {message}")
        _write_folder(out / name, outputs)
        scores = _scores(outputs, truth_labs)
        summary["methods"][name] = {"seconds_per_image": round(per_image, 4),
                                    "fit_seconds": round(fit_seconds, 4), **scores}
        columns.append((name, list(outputs.values()),
                         [f"dE00 {e:.1f}" for e in scores["delta_e2000"].values()]))

    write_image(out / "montage.png", np.asarray(montage(columns)), overwrite=True)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    _report(out, summary)
    return summary


def _write_folder(folder: Path, images: dict[str, np.ndarray]) -> None:
    for key, image in images.items():
        write_image(folder / f"{key}.png", image, overwrite=True)


def _report(out: Path, summary: dict) -> None:
    print(f"stainlab demo: {len(SOURCES)} re-stained crops of scikit-image's IHC image normalized with "
          f"{len(summary['methods'])} methods in {summary['seconds']:.1f} s")
    print(f"  {'method':<16} {'s/image':>8}  mean CIEDE2000 to truth")
    print(f"  {'(unnormalized)':<16} {'':>8}  {summary['unnormalized']['delta_e2000_mean']:6.2f}")
    for name, result in summary["methods"].items():
        print(f"  {name:<16} {result['seconds_per_image']:8.4f}  {result['delta_e2000_mean']:6.2f}")
    print(f"montage:  {out / 'montage.png'}")
    print(f"outputs:  {out}/<method>/, inputs in {out / 'inputs'}, ground truth in {out / 'truth'}")
    print(f"summary:  {out / 'summary.json'}")
