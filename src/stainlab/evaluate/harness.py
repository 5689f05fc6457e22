"""The evaluation harness: every method on the same data, scored against exact ground truth.

Each method is anything :func:`stainlab.load` accepts, so learned models join with no change here, with
optional parameters (``{"macenko": {"alpha": 2}}``). It is fitted once on the reference (a fitted ``.json``
is scored as saved, with its own target), applied to every source image of a :class:`PairedFolders` set
(``A/`` = what a normalizer sees, ``B/`` = the ground truth, as the restaining simulator writes it),
and scored with paired metrics; unpaired data (e.g. HEV) is scored by colour-distribution distance to
the target domain. The untouched sources are scored too (``unnormalized``), so every number has its
baseline.

The reference must look like the truth, or every method is charged for the difference. By default it
is the benchmark's own ``reference.png`` (an image in the truth's look, :mod:`stainlab.data.benchmark`),
else the set's representative (:func:`stainlab.data.looks.typical`: of the truths, or of the target
domain when unpaired), whose pair is then not scored; the report says which and why. A reference given
by the user whose median tissue colour is more than :data:`~stainlab.data.looks.LOOK_TOLERANCE`
CIEDE2000 from the truths' (and is not the image the benchmark was rendered for) is scored as given,
with a warning naming the distance.

Networks among the methods run on ``device`` in batches of ``batch_size`` images, as ``stainlab normalize``
sets them (:func:`stainlab.build.run_on`); classical methods run on the CPU. Neither changes a saved run's
identity.

Resumable: each method's per-image results are saved (atomically) after every image (batch) under
``OUT/runs/``; a re-run with the same reference, metrics, spec, parameters and files skips what is done.
A method that fails is reported with its error and the others go on. The folder must be empty or a
report (:mod:`stainlab.evaluate.folder`); after a run it holds this run's methods only.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stainlab import metrics
from stainlab.build import run_on
from stainlab.data.benchmark import META, REFERENCE
from stainlab.data.folders import PairedFolders, UnpairedFolders, read_pair
from stainlab.data.looks import LOOK_TOLERANCE, fingerprint, look_distance, tissue_colour, typical
from stainlab.errors import InputError
from stainlab.evaluate import folder
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image, write_image
from stainlab.transforms import load, registry

# name -> (function of (output, truth), True when higher is better)
METRICS = {
    "psnr": (metrics.psnr, True),
    "ssim": (metrics.ssim, True),
    "ciede2000": (metrics.ciede2000, False),
    "mae": (metrics.mae, False),
    # weight-free colour-distribution distance (CIELAB, per channel), comparable without pairing
    "wasserstein": (metrics.channel_wasserstein, False),
}
BASELINE = "unnormalized"
INPUT_COLUMNS = ("source", "truth")  # montage columns of the inputs; no method may take these labels
MONTAGE_ROWS = 4
UNPAIRED_METRICS = ("wasserstein",)  # need no pixel correspondence: scored against the pooled target set
TARGET_POOL_PIXELS = 1 << 18
LOOK_SAMPLE = 64  # truths (evenly spread) whose median tissue colour a given reference is compared with


@dataclass
class MethodRun:
    """Per-image scores and timings of one method (or of the unnormalized baseline)."""

    name: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)   # image key -> metric -> value
    seconds: dict[str, float] = field(default_factory=dict)             # image key -> transform seconds
    fit_seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self, metric_names: list[str]) -> dict:
        row = {"method": self.name, "images": len(self.scores), "error": self.error}
        for m in metric_names:
            values = [np.inf if s[m] is None else s[m] for s in self.scores.values()]  # None: saved inf
            row[m] = float(np.mean(values)) if values else None
        row["seconds_per_image"] = float(np.mean(list(self.seconds.values()))) if self.seconds else None
        row["fit_seconds"] = self.fit_seconds
        return row


def score(output: np.ndarray, truth: np.ndarray, metric_names: list[str]) -> dict[str, float]:
    return {m: float(METRICS[m][0](output, truth)) for m in metric_names}


def short_label(spec: str) -> str:
    """A readable label for a method spec: a learned ``KIND:PATH`` reads ``KIND:STEM``, a fitted
    ``.json`` its file name, a method name itself."""
    kind, colon, path = spec.partition(":")
    if colon and kind in registry.learned_kinds():
        return f"{kind}:{Path(path).stem}"
    return Path(spec).name if spec.endswith(".json") else spec


def labelled(items: list[str]) -> dict[str, str]:
    """``{label: spec}`` for method items, each ``SPEC`` (labelled by :func:`short_label`, or by the whole
    spec where two short labels would read the same) or ``LABEL=SPEC``."""
    given = []
    for item in items:
        label, sep, spec = (part.strip() for part in item.partition("="))
        if not label or (sep and not spec):
            raise InputError(f"{item!r}: a method is SPEC or LABEL=SPEC, with neither part empty")
        given.append((label, spec) if sep else (None, label))
    shorts = [short_label(spec) for label, spec in given if label is None]
    methods: dict[str, str] = {}
    for label, spec in given:
        label = label or (short_label(spec) if shorts.count(short_label(spec)) == 1 else spec)
        if label in methods:
            raise InputError(f"{label}: given twice among the methods; label one of them as LABEL=SPEC")
        methods[label] = spec
    return methods


def check_methods(methods: dict[str, str], params: dict[str, dict]) -> None:
    """Raise :class:`InputError` for labels that would share a file and for parameters of no method or
    unknown to it, before any work (an unknown method does not: it is reported beside the others)."""
    taken = {folder_name(label): label for label in (BASELINE, *INPUT_COLUMNS)}
    for label in methods:
        other = taken.setdefault(folder_name(label), label)
        if other in (BASELINE, *INPUT_COLUMNS):
            raise InputError(f"{label}: the report's own {other!r} column; label the method otherwise")
        if other != label:
            raise InputError(f"{label}: its files would be those of {other!r}; label one of them otherwise")
    for label, values in params.items():
        spelled = ", ".join(f"{label}.{key}={value}" for key, value in values.items())
        if label not in methods:
            raise InputError(f"{spelled}: no method labelled {label!r} (methods: {', '.join(methods)})")
        try:
            load(methods[label], **values)
        except InputError as err:
            raise InputError(f"{spelled}: {_unknown_parameters(methods[label], values) or err}") from None


def _unknown_parameters(spec: str, values: dict) -> str | None:
    """``"macenko has no parameter foo (its parameters: alpha, ...)"`` when ``values`` names any, else None."""
    if spec.endswith(".json"):
        return None  # a fitted file takes no parameters at all, which its own error says
    try:
        known = load(spec).get_params()
    except InputError:
        return None
    unknown = [key for key in values if key not in known]
    return (f"{spec} has no parameter {', '.join(unknown)} (its parameters: {', '.join(known)})"
            if unknown else None)


def target_pool(paths: list[Path], pixels: int = TARGET_POOL_PIXELS, seed: int = 0) -> np.ndarray:
    """A seeded sample of the target domain's pixels, as one (N, 1, 3) image (equal share per image)."""
    rng = np.random.default_rng(seed)
    share = max(1, pixels // len(paths))
    samples = []
    for path in paths:
        flat = read_image(path)[0].reshape(-1, 3)
        samples.append(flat[rng.choice(len(flat), size=min(share, len(flat)), replace=False)])
    return np.concatenate(samples)[:, None, :]


class Harness:
    """Runs methods over one data set with one reference and writes what it finds under ``out``.

    Paired data (:class:`PairedFolders`): each output is scored against its own ground truth.
    Unpaired data (:class:`UnpairedFolders`, e.g. the HEV layout: sources in ``a``, the target domain in
    ``b``): each output is scored by distribution distance to a pooled sample of the target domain, and
    the reference defaults to the first target image.

    ``device`` and ``batch_size``: where the networks among the methods run, and how many images go
    through one network call (None: the CPU; on a GPU as many as fit, on the CPU one). An unavailable
    device raises :class:`InputError` here, before any work.
    """

    def __init__(self, data: PairedFolders | UnpairedFolders, out, reference: np.ndarray | None = None,
                 metric_names=None, progress: bool = True, semantic=None, reference_source: str = "given",
                 device: str | None = None, batch_size: int | None = None) -> None:
        self.device, self.batch_size = _run_options(device, batch_size)
        self.paired = isinstance(data, PairedFolders)
        metric_names = list(metric_names or (("psnr", "ssim", "ciede2000", "mae") if self.paired
                                             else UNPAIRED_METRICS))
        unknown = sorted(set(metric_names) - set(METRICS))
        if unknown:
            raise InputError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
        if not self.paired and set(metric_names) - set(UNPAIRED_METRICS):
            raise InputError(f"unpaired data can be scored with {', '.join(UNPAIRED_METRICS)} only; "
                             f"{', '.join(sorted(set(metric_names) - set(UNPAIRED_METRICS)))} need pairs")
        self.data, self.out, self.metric_names, self.progress = data, Path(out), metric_names, progress
        self._specs: dict[str, tuple[str, dict]] = {}  # label -> (spec, parameters): the runs' identity
        # virtual stainers: paper 002's HER2-level scores (a stainlab.evaluate.semantic.SemanticScorer)
        self.semantic, self.pixel_metrics = semantic, list(metric_names)
        if semantic is not None and not self.paired:
            raise InputError("semantic (HER2-level) scores need paired data with ground-truth IHC")
        if semantic is not None:
            self.metric_names = metric_names + [m for m in semantic.names if m not in metric_names]
        self.reference_source, self.reference_warning = reference_source, None
        if self.paired:
            if len(data) == 0:
                raise InputError(f"{data.root}: no image pairs to evaluate")
            self.pairs = dict(zip((a.stem for a, _ in data.pairs), data.pairs))
            made = _benchmark_reference(data.root)
            if reference is None:
                reference = self._default_reference(made)
            elif semantic is None and (made is None or made["fingerprint"] != fingerprint(reference)):
                self.reference_warning = self._look_warning(reference)  # a virtual stainer's truth is IHC
        else:
            self.pairs = {a.stem: (a, None) for a in data.a}
            self.target = target_pool(data.b)
            if reference is None:
                choice = typical([tissue_colour(read_image(p)[0]) for p in data.b], [p.name for p in data.b])
                reference = read_image(data.b[choice.index])[0]
                self.reference_source = f"the target domain's representative, {choice.why}"
        self.reference = reference
        self.montage_keys = list(self.pairs)[:MONTAGE_ROWS]
        folder.claim(self.out)

    def _default_reference(self, made: dict | None) -> np.ndarray:
        """The benchmark's ``reference.png`` (``made``: its record in meta.json), else the truths'
        representative, whose pair leaves the scored set."""
        if made is not None:
            self.reference_source = f"{REFERENCE} of the benchmark: {made['why']}"
            return read_image(self.data.root / REFERENCE)[0]
        keys = list(self.pairs)
        choice = typical([tissue_colour(read_image(self.pairs[k][1])[0]) for k in keys], keys)
        self.reference_source = f"the ground truths' representative, not scored: {choice.why}"
        reference = read_image(self.pairs.pop(keys[choice.index])[1])[0]
        if not self.pairs:
            raise InputError(f"{self.data.root}: one pair only, which serves as the reference; give -r or more pairs")
        return reference

    def _look_warning(self, reference: np.ndarray) -> str | None:
        """A warning (also issued) when ``reference`` looks unlike the ground truth, else None."""
        truths = [b for _, b in self.pairs.values()]
        sample = [truths[i] for i in np.unique(np.linspace(0, len(truths) - 1, LOOK_SAMPLE).astype(int))]
        distance = look_distance(tissue_colour(reference), [tissue_colour(read_image(p)[0]) for p in sample])
        if distance <= LOOK_TOLERANCE:
            return None
        message = (f"the reference ({self.reference_source}) looks unlike the ground truth: its median tissue "
                   f"colour is {distance:.1f} CIEDE2000 from the truth's, and every method is charged for that "
                   "difference; score it on truth rendered in its look (stainlab data make-benchmark --reference "
                   "REF, or --data PRESET -r REF)")
        warnings.warn(message, stacklevel=3)
        return message

    def _load(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Source and what its output is scored against (its truth, or the pooled target domain)."""
        a_path, b_path = self.pairs[key]
        return read_pair(a_path, b_path) if self.paired else (read_image(a_path)[0], self.target)

    # -- running ----------------------------------------------------------------------------------
    def _run_file(self, name: str) -> Path:
        return self.out / "runs" / f"{folder_name(name)}.json"

    def _identity(self, name: str) -> dict:
        """What a saved run's scores depend on: reference, metrics, the method's spec, its parameters and
        the files it names (size and modification time: a retrained model is scored again), the semantic
        library."""
        spec, params = self._specs.get(name, (name, {}))
        files = [p for p in {Path(spec), Path(spec.partition(":")[2])} if str(p) not in ("", ".") and p.is_file()]
        return {"reference": fingerprint(self.reference), "metrics": self.metric_names, "spec": spec,
                "params": params, "files": sorted([str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files),
                "semantic": None if self.semantic is None else fingerprint(self.semantic.library)}

    def _load_run(self, name: str) -> MethodRun:
        path = self._run_file(name)
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("identity") == json.loads(json.dumps(self._identity(name))):
                return MethodRun(**saved["run"])
        return MethodRun(name)

    def _save_run(self, run: MethodRun) -> None:
        payload = {"identity": self._identity(run.name), "run": run.__dict__}
        atomic_write_text(self._run_file(run.name), json.dumps(_finite(payload)))

    def run_baseline(self) -> MethodRun:
        return self._run(BASELINE, transform=None)

    def run_method(self, name: str, spec: str | None = None, params: dict | None = None) -> MethodRun:
        """Score the method ``spec`` (a name, ``KIND:PATH`` or fitted .json; default ``name``) with the
        parameters ``params`` as ``name``."""
        spec, params = spec or name, dict(params or {})
        self._specs[name] = (spec, params)
        run = self._load_run(name)
        if len(run.scores) == len(self.pairs) and run.error is None:
            return run
        try:
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                transform = load(spec, **params)
                if transform.run_options:  # a network; a classical method stays on the CPU
                    transform = run_on(transform, self.device, self.batch_size)
                if not (spec.endswith(".json") and transform.fitted):  # a fitted file keeps its target
                    transform.fit(self.reference)
            run.fit_seconds = time.perf_counter() - started
            run.warnings = list(dict.fromkeys(str(w.message) for w in caught))
        except Exception as err:  # noqa: BLE001 - a failing method is reported, never fatal
            run.error = f"{type(err).__name__}: {err}"
            self._save_run(run)
            return run
        return self._run(name, transform, run)

    def _run(self, name: str, transform, run: MethodRun | None = None) -> MethodRun:
        run = run or self._load_run(name)
        run.error = None
        todo = [k for k in self.pairs if k not in run.scores]
        many = getattr(transform, "transform_many", None)  # a network: images in batches
        with tqdm(total=len(todo), desc=name, unit="image", disable=not self.progress or not todo,
                  leave=False) as bar:
            while todo:
                loaded = [self._load(todo[0])]
                size = 1 if many is None else transform.batch_size_of(*loaded[0][0].shape[:2])
                loaded += [self._load(key) for key in todo[1:size]]
                keys, todo = todo[:len(loaded)], todo[len(loaded):]
                sources, where = [source for source, _ in loaded], ", ".join(keys)
                try:
                    started = time.perf_counter()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        if transform is None:
                            outputs = sources
                        else:
                            outputs = [transform(sources[0])] if len(sources) == 1 else many(sources)
                    seconds = (time.perf_counter() - started) / len(keys)  # each image's share of the call
                    run.warnings = list(dict.fromkeys(run.warnings + [f"{where}: {w.message}" for w in caught]))
                except Exception as err:  # noqa: BLE001
                    run.error = f"{where}: {type(err).__name__}: {err}"
                    break
                for key, output, (_, truth) in zip(keys, outputs, loaded):
                    run.seconds[key] = seconds
                    run.scores[key] = score(output, truth, self.pixel_metrics)
                    if self.semantic is not None:
                        run.scores[key].update(self.semantic.score(key, output))
                    if key in self.montage_keys and transform is not None:  # the baseline's are the sources
                        write_image(self.out / "outputs" / folder_name(name) / f"{key}.png", output, overwrite=True)
                self._save_run(run)
                bar.update(len(keys))
        self._save_run(run)
        return run

    def _write_inputs(self) -> None:
        """The reference and the montage's sources (and truths) beside the report."""
        write_image(self.out / "reference.png", self.reference, overwrite=True)
        for key in self.montage_keys:
            a_path, b_path = self.pairs[key]
            write_image(self.out / "outputs" / "source" / f"{key}.png", read_image(a_path)[0], overwrite=True)
            if self.paired:
                write_image(self.out / "outputs" / "truth" / f"{key}.png", read_image(b_path)[0], overwrite=True)

    def _prune(self, labels) -> None:
        """Clear the runs and montage outputs of methods and images this run did not ask for."""
        keep = {self._run_file(name) for name in (BASELINE, *labels)}
        keep |= {self.out / "outputs" / folder_name(name) / f"{key}.png"
                 for name in (*INPUT_COLUMNS, *labels) for key in self.montage_keys}
        folder.prune(self.out, keep)

    def evaluate(self, methods: list[str] | dict[str, str], params: dict[str, dict] | None = None) -> dict:
        """Run the baseline and every method; return (and write) ``results.json``'s content.

        ``methods``: specs (labelled by :func:`labelled`), or ``{label: spec}`` to score e.g.
        ``"unet:runs/a/student.safetensors"`` under a label of your own. ``params``: ``{label: {name:
        value}}``, each method's parameters. The runs and outputs of methods not asked for are removed."""
        methods = methods if isinstance(methods, dict) else labelled(list(methods))
        params = {label: dict(values) for label, values in (params or {}).items() if values}
        check_methods(methods, params)
        self._write_inputs()
        runs = [self.run_baseline()] + [self.run_method(label, spec, params.get(label))
                                        for label, spec in methods.items()]
        results = {
            "data": str(self.data.root), "paired": self.paired, "reference": self.reference_source,
            "reference_image": "reference.png", "reference_warning": self.reference_warning,
            "methods": {label: {"spec": spec, "params": params.get(label, {})} for label, spec in methods.items()},
            "metrics": self.metric_names,
            "higher_is_better": {m: METRICS[m][1] if m in METRICS else True for m in self.metric_names},
            "images": len(self.pairs), "montage": self.montage_keys,
            "table": [r.summary(self.metric_names) for r in runs],
            "per_image": {r.name: r.scores for r in runs},
            "warnings": {r.name: r.warnings for r in runs if r.warnings},
        }
        atomic_write_text(self.out / "results.json", json.dumps(_finite(results), indent=1))
        self._prune(methods)
        return results


def _run_options(device: str | None, batch_size: int | None) -> tuple[str | None, int | None]:
    """``device`` and ``batch_size`` once they are known to work here (else :class:`InputError`)."""
    from stainlab.nets.devices import torch_device
    from stainlab.transforms.checks import check_int
    from stainlab.transforms.learned import MAX_BATCH_SIZE

    if device is not None:
        torch_device(device)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
    return device, batch_size


def _benchmark_reference(root: Path) -> dict | None:
    """The record of a benchmark folder's ``reference.png`` in its meta.json, when it has one."""
    try:
        made = json.loads((root / META).read_text(encoding="utf-8")).get("reference_image")
    except (OSError, ValueError, AttributeError):
        return None
    return made if isinstance(made, dict) and (root / REFERENCE).is_file() else None


def folder_name(name: str) -> str:
    """A method label as one safe path component (``unet:/a/b.safetensors`` -> ``unet__a_b.safetensors``)."""
    return name.replace("/", "_").replace(":", "_").replace("\\", "_")


def _finite(value):
    """JSON-safe copy: non-finite floats (PSNR of identical images is inf) become None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
