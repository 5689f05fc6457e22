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

With ``learned=True`` (``stainlab demo --learned``, what ``make demo`` runs) the demo also trains a
StainNet (Kang et al. 2021, the 1x1-convolution student of paper 000) per re-stained look, in seconds:
each learns the look from pixel-aligned (re-stained, unaltered) pairs of the *other three* quarters of
the image, with paper 000's student loss and optimiser (L1, SGD, cosine annealing), and is scored on the
quarter it never saw. That is the setting of a lab with paired scans of its own staining; the classical
methods get the reference image only.

With ``teacher_student=True`` (``--teacher-student``) it also runs paper 000's workflow at the ``tiny``
preset: paper 003's CycleGAN (skips + structural cycle loss) as the teacher and a U-Net student
distilled from it, on the four looks (A) and unaltered crops (B, unpaired), under ``OUT/runs/``, into a
second montage, ``montage-teacher-student.png``. It takes minutes on a CPU and is far from converged at
that size (its outputs are worse than the unnormalized input); it shows the steps, not the quality
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


QUARTERS = ((0, 0), (0, 256), (256, 0), (256, 256))  # the 512x512 image in four crops
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
def normalize_all(spec, reference: np.ndarray, sources: dict[str, np.ndarray]):
    """Fit ``spec`` on the reference and transform every source: ``spec`` is a method name or a learned
    ``KIND:PATH``, or ``{source key: spec}`` when each source has its own model.

    Returns ``(outputs, mean fit seconds per model, mean seconds per image, warning messages)``; raises whatever the
    method raises (the caller reports it)."""
    per_source = spec if isinstance(spec, dict) else dict.fromkeys(sources, spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        transforms = {each: registry.load(each).fit(reference) for each in dict.fromkeys(per_source.values())}
        fit_seconds = (time.perf_counter() - start) / len(transforms)
        outputs, seconds = {}, []
        for key, image in sources.items():
            start = time.perf_counter()
            outputs[key] = transforms[per_source[key]](image)
            seconds.append(time.perf_counter() - start)
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    return outputs, fit_seconds, float(np.mean(seconds)), messages


def _scores(outputs: dict[str, np.ndarray], truth_labs: dict[str, np.ndarray]) -> dict:
    """CIEDE2000 of each output to the ground truth (in CIELAB) of its source, and their mean."""
    errors = {key: round(delta_e(image, truth_labs[key]), 3) for key, image in outputs.items()}
    return {"delta_e2000_mean": round(float(np.mean(list(errors.values()))), 3), "delta_e2000": errors}


# -- learned methods ----------------------------------------------------------------------------------------------
STAINNET = {"layers": 3, "channels": 32}  # the StainNet authors' published size
STAINNET_STEPS = 400  # 1.5 CIEDE2000 to the truth on the held-out quarters; 2 s per look on one CPU core
STAINNET_BATCH = 2048  # pixels per step
STAINNET_LR = 0.05  # paper 000 anneals SGD from 0.01 over 300 epochs; a 400-step run starts higher


def fit_stainnet(pairs: list[tuple[np.ndarray, np.ndarray]], steps: int, seed: int = 0):
    """A StainNet that maps the colours of the inputs of pixel-aligned ``(input, target)`` pairs to
    those of the targets: paper 000's student training (L1 loss, SGD with momentum, cosine annealing to
    0, Sec. III-D) on ``STAINNET_BATCH`` random pixels a step."""
    import torch

    from stainlab.nets.stainnet import StainNet

    def pixels(images):  # every pixel, as a float NCHW column one pixel wide, in [-1, 1]
        flat = np.concatenate([image.reshape(-1, 3) for image in images])
        return torch.from_numpy(flat.T.copy()).float().div(127.5).sub(1.0)[None, :, :, None]

    torch.manual_seed(seed)
    inputs, targets = pixels([a for a, _ in pairs]), pixels([b for _, b in pairs])
    net = StainNet(**STAINNET)
    optimizer = torch.optim.SGD(net.parameters(), lr=STAINNET_LR, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    draw = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, inputs.shape[2], (STAINNET_BATCH,), generator=draw)
        loss = torch.nn.functional.l1_loss(net(inputs[:, :, index]), targets[:, :, index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return net.eval()


def train_stainnets(out: Path, tissue: np.ndarray) -> tuple[dict[str, str], dict]:
    """One StainNet per look, trained on the other three quarters re-stained that way and saved under
    ``OUT/runs/stainnet/``; returns ``({source name: "stainnet:PATH"}, what was trained, for the summary)``."""
    from stainlab.nets.files import save_model

    started, specs = time.perf_counter(), {}
    for how in SOURCES:
        truths = [crop(tissue, at) for at in QUARTERS if at != how.at]
        net = fit_stainnet([(restain(truth, how), truth) for truth in truths], STAINNET_STEPS)
        path = save_model(out / "runs" / "stainnet" / f"{how.name}.safetensors", net, "stainnet", STAINNET,
                          trained_on=f"demo: {how.label}, the other three quarters")
        specs[how.name] = f"stainnet:{path}"
    size = f"{STAINNET['layers']} x {STAINNET['channels']}"
    trained = {"how": f"one StainNet ({size}) per look, {STAINNET_STEPS} SGD steps of {STAINNET_BATCH} pixels "
                      "(L1, cosine) on the other three quarters re-stained that way; scored on the held-out quarter",
               "train_seconds": round(time.perf_counter() - started, 2)}
    return specs, trained


def train_teacher_student(out: Path, tissue: np.ndarray) -> dict[str, str]:
    """Tiny teacher CycleGAN and distilled U-Net on the demo tissue; ``{column label: KIND:PATH}``."""
    from stainlab.training import TrainingData, train

    spots = [*QUARTERS, (128, 128), (64, 192)]
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
def run(out="stainlab-demo", methods: list[str] | None = None, learned: bool = False,
        teacher_student: bool = False) -> dict:
    """Write the demo under ``out`` and return the summary: ``methods`` (default: every normalizer),
    with ``learned`` also StainNets trained here, with ``teacher_student`` the tiny teacher-student
    workflow in a second montage (see the module docstring)."""
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
    given = [("source", list(sources.values()), [s.label for s in SOURCES]),
             ("reference", [reference] * len(SOURCES), [""] * len(SOURCES)),
             ("truth", list(truths.values()), [""] * len(SOURCES))]
    specs = {name: name for name in methods or registry.normalizers()}
    if learned:
        print("stainlab demo: training a StainNet per look on the other quarters (seconds)", flush=True)
        specs["stainnet"], trained = train_stainnets(out, tissue)
    columns = _run_methods(specs, reference, sources, truth_labs, out, summary)
    if learned and "stainnet" in summary["methods"]:
        summary["methods"]["stainnet"]["trained"] = trained
    write_image(out / "montage.png", np.asarray(montage(given + columns)), overwrite=True)
    if teacher_student:
        tiny = {"note": "paper 000's teacher-student workflow at the tiny preset: not converged, shows the steps; "
                        "trained on these crops, so in-sample", "methods": {}, "skipped": {}}
        columns = _run_methods(train_teacher_student(out, tissue), reference, sources, truth_labs, out, tiny)
        write_image(out / "montage-teacher-student.png", np.asarray(montage(given[:1] + given[2:] + columns)),
                    overwrite=True)
        summary["teacher_student"] = tiny
    summary["seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    _report(out, summary)
    return summary


def _run_methods(specs: dict, reference, sources, truth_labs, out: Path, summary: dict) -> list:
    """Run and score every spec into ``summary["methods"]`` (or ``["skipped"]`` with the reason) and
    write its outputs; returns the montage columns."""
    columns = []
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
    return columns


def _write_folder(folder: Path, images: dict[str, np.ndarray]) -> None:
    for key, image in images.items():
        write_image(folder / f"{key}.png", image, overwrite=True)


def _report(out: Path, summary: dict) -> None:
    print(f"stainlab demo: {len(SOURCES)} re-stained crops of scikit-image's IHC image normalized with "
          f"{len(summary['methods'])} methods in {summary['seconds']:.1f} s")
    print(f"  {'method':<16} {'s/image':>8}  mean CIEDE2000 to truth")
    print(f"  {'(unnormalized)':<16} {'':>8}  {summary['unnormalized']['delta_e2000_mean']:6.2f}")
    tiny = summary.get("teacher_student", {}).get("methods", {})
    for name, result in [*summary["methods"].items(), *tiny.items()]:
        print(f"  {name:<16} {result['seconds_per_image']:8.4f}  {result['delta_e2000_mean']:6.2f}")
    print(f"montage:  {out / 'montage.png'}")
    if tiny:
        print(f"          {out / 'montage-teacher-student.png'} (tiny teacher-student workflow: not converged)")
    print(f"outputs:  {out}/<method>/, inputs in {out / 'inputs'}, ground truth in {out / 'truth'}")
    print(f"summary:  {out / 'summary.json'}")
