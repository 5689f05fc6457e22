"""The ``stainlab`` command line.

``stainlab methods | fit | normalize | evaluate | data make-benchmark | demo``. Problems are reported one line each as
``stainlab: error: FILE: reason`` (``--debug`` adds tracebacks); ``normalize`` goes on past bad files,
skips outputs that already exist (so re-running a crashed job resumes it) and exits 1 if any input
failed. :func:`main` returns the exit status, so tests and scripts can call it directly.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from stainlab import __version__
from stainlab.errors import InputError, NotFittedError, StainlabError
from stainlab.io.images import list_images, read_image, write_image
from stainlab.slide_command import add_slide_command
from stainlab.transforms import registry
from stainlab.transforms.base import Transform

PROG = "stainlab"
FORMATS = {"png": ".png", "tif": ".tif", "jpg": ".jpg"}
PROGRESS_MIN_FILES = 4  # a progress bar for more than a few files

EPILOG = """\
examples:
  stainlab methods
  stainlab normalize tiles/ -m macenko -r reference.png -o normalized/
  stainlab fit -m vahadane -r ref1.png -r ref2.png -o vahadane.json
  stainlab normalize tiles/ -t vahadane.json -o normalized/ --workers 4
  stainlab demo

Images are read as 8-bit RGB: grey is replicated, 16-bit scaled (x/257), alpha dropped when opaque or
composited on white; each conversion is reported. Inputs are never modified; outputs are written
atomically. Run `stainlab COMMAND --help` for the options of each command."""


# -- messages -------------------------------------------------------------------------------------------
def _print_lines(kind: str, message: str) -> None:
    from tqdm import tqdm

    for line in str(message).splitlines() or [""]:
        tqdm.write(f"{PROG}: {kind}: {line}", file=sys.stderr)


def error(message: str) -> None:
    """Print ``stainlab: error: ...`` (one line per line of ``message``) on stderr."""
    _print_lines("error", message)


def warn(message: str) -> None:
    """Print ``stainlab: warning: ...`` on stderr."""
    _print_lines("warning", message)


def describe(err: BaseException, path=None) -> str:
    """One-line reason for ``err``, prefixed with ``path`` unless the message already names it."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        message = f"{err.filename}: {err.strerror}"
    elif isinstance(err, (StainlabError, OSError)):
        message = str(err)
    elif isinstance(err, ImportError):
        message = f"cannot import a module stainlab needs ({err})"
    elif isinstance(err, MemoryError):
        message = "out of memory"
    else:
        message = f"internal error: {type(err).__name__}: {err} (run with --debug for the traceback)"
    if path is not None and not message.startswith(str(path)):
        message = f"{path}: {message}"
    return message


# -- shared pieces of the commands ----------------------------------------------------------------------------
def _parse_value(text: str):
    """``true``/``false``/``none`` and JSON numbers or lists become Python values; anything else a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), _parse_value(value.strip())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _read_with_notes(path: Path):
    image, notes = read_image(path)
    for note in notes:
        warn(f"{path}: {note}")
    return image


def fitted_transform(method: str, references: list[str], params: dict) -> Transform:
    """A new ``method`` transform fitted on the reference files/folders (reference-free methods may
    have none). Fitting errors name the reference files."""
    transform = registry.load(method, **params)  # a name, or KIND:PATH for a learned model
    paths = list_images(references) if references else []
    if references and not paths:
        raise InputError(f"{', '.join(references)}: no reference images found")
    if not paths:
        if transform.requires_fit:
            raise InputError(f"{method}: needs a reference image; give one with -r REF")
        return transform
    images = [_read_with_notes(p) for p in paths]
    try:
        return transform.fit(images)
    except InputError as err:
        raise InputError(f"{', '.join(map(str, paths))}: {err}") from None


def method_spec(args) -> str:
    """``-m KIND`` with ``--model PATH`` as the ``KIND:PATH`` spec of :func:`stainlab.load`."""
    if getattr(args, "model", None):
        if not args.method or ":" in args.method:
            raise InputError("--model goes with -m KIND (e.g. -m unet --model run/student.safetensors)")
        return f"{args.method}:{args.model}"
    return args.method


def load_fitted(path: str) -> Transform:
    """A fitted transform from a file written by ``stainlab fit`` (or ``Transform.save``)."""
    if not Path(path).is_file():
        raise InputError(f"{path}: fitted-transform file not found")
    transform = registry.load(path)
    if not transform.fitted:
        raise NotFittedError(f"{path}: holds an unfitted {transform.name} transform; create it with "
                             "`stainlab fit`")
    return transform


# -- normalize: planning, one file, many files ------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    overwrite: bool


@dataclass
class Outcome:
    job: Job
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None


def plan_outputs(sources: list[Path], out_dir: Path, suffix: str) -> dict[Path, Path]:
    """``{source: output}`` keeping each input's stem; clashing names or an output that would
    replace its own input raise :class:`InputError` before any work is done."""
    by_output: dict[Path, list[Path]] = {}
    for source in sources:
        by_output.setdefault(out_dir / f"{source.stem}{suffix}", []).append(source)
    problems = [f"{out}: would be written by each of {', '.join(map(str, srcs))}; rename them or use "
                "separate runs" for out, srcs in by_output.items() if len(srcs) > 1]
    inputs = {source.resolve() for source in sources}
    problems += [f"{out}: would replace an input file; choose another output folder"
                 for out in by_output if out.resolve() in inputs]
    if problems:
        raise InputError("\n".join(problems))
    return {srcs[0]: out for out, srcs in by_output.items()}


def normalize_file(transform: Transform, job: Job) -> Outcome:
    """Read, transform and write one file; every failure is caught and reported in the outcome."""
    outcome = Outcome(job)
    try:
        image, outcome.notes = read_image(job.source)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = transform(image)
        outcome.notes += [str(w.message) for w in caught]
        write_image(job.output, result, overwrite=job.overwrite)
    except Exception as err:  # one bad file never stops the others
        outcome.error = describe(err, job.source)
        outcome.traceback = traceback.format_exc()
    return outcome


_WORKER_TRANSFORM: Transform | None = None


def _init_worker(transform_dict: dict, threads: int) -> None:
    """Process-pool initializer: rebuild the fitted transform once per worker."""
    import numba

    global _WORKER_TRANSFORM
    _WORKER_TRANSFORM = registry.from_dict(transform_dict)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _normalize_in_worker(job: Job) -> Outcome:
    return normalize_file(_WORKER_TRANSFORM, job)


def run_jobs(transform: Transform, jobs: list[Job], workers: int):
    """Yield one :class:`Outcome` per job, in completion order; ``workers > 1`` uses a process pool
    that receives the fitted transform once (as its dict) per worker."""
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            yield normalize_file(transform, job)
        return
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(transform.to_dict(), threads))
    try:
        futures = {pool.submit(_normalize_in_worker, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as err:  # a worker died (out of memory, killed...)
                job = futures[future]
                yield Outcome(job, error=f"{job.source}: worker process failed ({type(err).__name__}: {err})")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- commands --------------------------------------------------------------------------------------------------
def cmd_methods(args) -> int:
    table = registry.methods()
    width = max(map(len, table))
    for name, description in table.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_fit(args) -> int:
    out = Path(args.out)
    if out.suffix != ".json":
        raise InputError(f"{out}: a fitted transform is saved as .json")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out}: exists (use --overwrite to replace it)")
    transform = fitted_transform(method_spec(args), args.reference, dict(args.param))
    transform.save(out)
    print(f"{PROG}: fitted {transform!r}; saved to {out}")
    return 0


def cmd_normalize(args) -> int:
    if args.transform and (args.reference or args.param or args.model):
        raise InputError("-t FITTED.json already holds the reference and parameters; drop -r/--param/--model")
    sources = list_images(args.sources, recursive=args.recursive)
    if not sources:
        raise InputError(f"{', '.join(args.sources)}: no image files found "
                         "(.png, .jpg, .tif, .bmp; --recursive searches sub-folders)")
    out_dir = Path(args.out)
    outputs = plan_outputs(sources, out_dir, FORMATS[args.format])
    transform = (load_fitted(args.transform) if args.transform
                 else fitted_transform(method_spec(args), args.reference or [], dict(args.param)))
    jobs = [Job(src, out, args.overwrite) for src, out in outputs.items()]
    existing = [job for job in jobs if job.output.exists()] if not args.overwrite else []
    if existing:
        warn(f"{out_dir}: {len(existing)} output(s) exist already, their inputs skipped "
             "(--overwrite replaces them)")
        jobs = [job for job in jobs if job not in existing]
    start = time.perf_counter()
    failed = _run_with_progress(transform, jobs, args)
    print(f"{PROG}: normalized {len(jobs) - len(failed)} of {len(sources)} images with {transform.name} "
          f"into {out_dir} in {time.perf_counter() - start:.1f} s "
          f"({len(existing)} skipped, {len(failed)} failed)")
    for outcome in sorted(failed, key=lambda o: o.job.source):
        error(outcome.error)
    return 1 if failed else 0


def _run_with_progress(transform: Transform, jobs: list[Job], args) -> list[Outcome]:
    """Run the jobs with a progress bar (more than a few files, stderr on a terminal); print the
    conversion notes and warnings of each file as it finishes; return the failed outcomes."""
    from tqdm import tqdm

    failed = []
    with tqdm(total=len(jobs), unit="image", file=sys.stderr, desc=PROG,
              disable=True if len(jobs) < PROGRESS_MIN_FILES else None) as bar:
        for outcome in run_jobs(transform, jobs, args.workers):
            for note in outcome.notes:
                warn(f"{outcome.job.source}: {note}")
            if outcome.error:
                failed.append(outcome)
                if args.debug and outcome.traceback:
                    bar.write(outcome.traceback, file=sys.stderr)
            bar.update()
    return failed


def cmd_demo(args) -> int:
    from stainlab import demo

    demo.run(Path(args.out), learned=args.learned)
    return 0


def cmd_make_benchmark(args) -> int:
    from stainlab.data.benchmark import make_benchmark

    out = make_benchmark(args.source, args.preset, args.out, args.seed, mode=args.mode,
                         levels=args.level, split=args.split, overwrite=args.overwrite)
    print(f"{PROG}: wrote a {args.mode} benchmark ({args.preset if args.mode == 'restain' else 'H&E -> IHC'}, "
          f"seed {args.seed}) to {out}")
    return 0


def evaluation_data(spec: str, source, seed: int, out: Path, unpaired: bool = False):
    """The data to score: the folder ``spec`` (paired A/ B/; unpaired A/ B/ with ``unpaired``; or the HEV
    layout, unpaired HE -> Long HE), else a simulator preset rendered into ``out/data`` from ``source``
    (scikit-image's IHC image when none is given), reused when it is already there."""
    from stainlab.data.benchmark import META, make_benchmark
    from stainlab.data.folders import PairedFolders, UnpairedFolders, hev, is_hev_layout
    from stainlab.data.presets import PRESETS

    if Path(spec).is_dir():
        from stainlab.data.folders import is_bci_layout
        from stainlab.evaluate.semantic import bci_pairs

        if is_bci_layout(spec) and not unpaired:
            return bci_pairs(spec, "test")
        if unpaired:
            return UnpairedFolders.open(spec)
        return hev(spec) if is_hev_layout(spec) else PairedFolders.open(spec)
    if spec not in PRESETS:
        raise InputError(f"{spec}: neither a folder with A/ and B/ nor a preset ({', '.join(PRESETS)})")
    folder = out / "data"
    meta = folder / META
    if meta.is_file():
        made = json.loads(meta.read_text(encoding="utf-8"))
        if made.get("preset") != spec or made.get("seed") != seed:
            raise InputError(f"{folder}: holds preset {made.get('preset')!r} seed {made.get('seed')}; "
                             "use another -o or delete it")
    else:
        make_benchmark(source or _demo_tissue(), spec, folder, seed)
    return PairedFolders.open(folder)


def _demo_tissue() -> list:
    """The four 256x256 quarters of scikit-image's real IHC image."""
    from skimage import data

    from stainlab.data.tiles import extract_tiles

    return [t.image for t in extract_tiles(data.immunohistochemistry(), tile=256, overlap=0, min_tissue=0.0)]


def cmd_evaluate(args) -> int:
    from stainlab.evaluate import Harness, markdown_table, write_report

    out = Path(args.out)
    data = evaluation_data(args.data, args.source, args.seed, out, args.unpaired)
    reference = _read_with_notes(Path(args.reference)) if args.reference else None
    methods = args.methods.split(",") if args.methods else registry.normalizers()
    metric_names = args.metrics.split(",") if args.metrics else None
    semantic = None
    if args.classifier:
        from stainlab.evaluate.semantic import SemanticScorer

        semantic = SemanticScorer.from_classifier(args.classifier, data)
    harness = Harness(data, out, reference, metric_names, progress=sys.stderr.isatty(), semantic=semantic)
    results = harness.evaluate(methods)
    files = write_report(results, out)
    print(markdown_table(results), end="")
    for row in results["table"]:
        if row["error"]:
            error(f"{row['method']}: {row['error']}")
    print(f"{PROG}: report {files['html']}; tables {files['csv']}, {files['markdown']}, {files['json']}")
    return 1 if any(row["error"] for row in results["table"]) else 0


def cmd_train(args) -> int:
    from stainlab.training import TrainingData, train

    overrides = dict(args.set)
    for flag in ("steps", "teacher", "student", "device", "ablation", "comparator"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    for flag in ("skips", "ssim_cycle"):
        if getattr(args, flag):
            overrides[flag] = True
    if args.features is not None:
        overrides["features"] = None if args.features == "vgg16" else args.features
    data = TrainingData.from_folder(args.data)
    result = train(args.recipe, data, args.out, preset=args.preset, overrides=overrides, seed=args.seed,
                   resume=args.resume, overwrite=args.overwrite, progress=sys.stderr.isatty())
    last = result.history[-1] if result.history else {}
    losses = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "epoch", "lr", "seconds"))
    print(f"{PROG}: trained {args.recipe} for {result.step} steps into {result.run_dir} ({losses})")
    if args.recipe == "comparator":  # a HER2 classifier, not a transform
        for path in result.models.values():
            print(f"  {path}   use as: train derestainer --comparator {path}, or evaluate --classifier {path}")
        return 0
    kind = {"distill": "unet" if overrides.get("student", "unet") == "unet" else "stainnet"}.get(args.recipe,
                                                                                                args.recipe)
    for path in result.models.values():
        print(f"  {path}   use as: -m {kind} --model {path}")
    return 0


# -- the parser ---------------------------------------------------------------------------------------------------
def _subcommand(sub, name: str, help_: str, description: str, epilog: str, common) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, description=description, epilog=epilog, parents=[common],
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_method_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("-r", "--reference", action="append", metavar="REF", required=required,
                        help="reference image or folder giving the target appearance; repeat to fit "
                             "on several (pooled)")
    parser.add_argument("--model", metavar="PATH",
                        help="model file of a learned method: -m unet --model run/student.safetensors "
                             "is -m unet:run/student.safetensors")
    parser.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="method parameter, e.g. --param mask=true or --param lut_bits=8 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Stain normalization of histology images: map H&E or IHC colours onto a reference "
                    "appearance\nwith classical methods (Reinhard, Macenko, Vahadane, histogram "
                    "matching, ...).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    methods = _subcommand(sub, "methods", "list the normalization methods",
                          "List every normalization method with a one-line description and its paper.",
                          "example:\n  stainlab methods", common)
    methods.set_defaults(run=cmd_methods)

    fit = _subcommand(
        sub, "fit", "fit a method to reference images and save it as JSON",
        "Fit a method to one or more reference images and save the fitted transform as JSON, to\n"
        "normalize later runs to exactly the same target with `stainlab normalize -t FITTED.json`.",
        "examples:\n  stainlab fit -m macenko -r reference.png -o macenko.json\n"
        "  stainlab fit -m reinhard -r refs/ --param mask=true -o reinhard-masked.json", common)
    fit.add_argument("-m", "--method", required=True, metavar="METHOD",
                     help="method name (see `stainlab methods`)")
    _add_method_options(fit, required=True)
    fit.add_argument("-o", "--out", required=True, metavar="FITTED.json", help="where to save the transform")
    fit.add_argument("--overwrite", action="store_true", help="replace FITTED.json if it exists")
    fit.set_defaults(run=cmd_fit)

    norm = _subcommand(
        sub, "normalize", "normalize images to a reference appearance",
        "Normalize image files (or every image in folders) to a reference appearance. Outputs keep\n"
        "the input's name (new suffix per --format) in OUTDIR. A bad file is reported and the others\n"
        "go on; existing outputs are skipped, so re-running an interrupted job resumes it.\n"
        "Exit status: 0 if every input was normalized or skipped, 1 if any failed, 2 for bad usage.",
        "examples:\n  stainlab normalize tiles/ -m macenko -r reference.png -o normalized/\n"
        "  stainlab normalize a.tif b.tif -m reinhard -r ref1.png -r ref2.png -o out/ --format tif\n"
        "  stainlab normalize tiles/ -t macenko.json -o normalized/ --workers 4 --overwrite", common)
    norm.add_argument("sources", nargs="+", metavar="SRC", help="image files and/or folders of images")
    how = norm.add_mutually_exclusive_group(required=True)
    how.add_argument("-m", "--method", metavar="METHOD", help="method name (see `stainlab methods`)")
    how.add_argument("-t", "--transform", metavar="FITTED.json", help="a transform saved by `stainlab fit`")
    _add_method_options(norm, required=False)
    norm.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    norm.add_argument("--format", choices=sorted(FORMATS), default="png",
                      help="output format (default: png; tif is lossless, jpg quality 95)")
    norm.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    norm.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                      help="normalize N files at a time in separate processes (default: 1)")
    norm.add_argument("--recursive", action="store_true", help="also read images in sub-folders of SRC")
    norm.set_defaults(run=cmd_normalize)

    demo = _subcommand(
        sub, "demo", "run every method on scikit-image's IHC image and write a montage",
        "Re-stain crops of scikit-image's real IHC image (haematoxylin + DAB) to known wrong looks,\n"
        "normalize them back with every method, and write the outputs, a montage PNG and a\n"
        "summary.json with the time per image and CIEDE2000 to the exact ground truth.",
        "example:\n  stainlab demo --out stainlab-demo", common)
    demo.add_argument("--out", default="stainlab-demo", metavar="DIR", help="output folder (default: %(default)s)")
    demo.add_argument("--learned", action="store_true",
                      help="also train tiny learned normalizers (CycleGAN teacher, U-Net student; ~2 min on a CPU)")
    demo.set_defaults(run=cmd_demo)

    evaluate = _subcommand(
        sub, "evaluate", "score methods against ground truth and write a report",
        "Run each method on the same paired data (A/ = inputs, B/ = ground truth) and score it against\n"
        "the truth (PSNR, SSIM, CIEDE2000, MAE), with the unnormalized inputs as the baseline. DATA is\n"
        "such a folder, or a simulator preset rendered from --source (scikit-image's IHC image by\n"
        "default). The reference is -r, or the ground truth of the first pair (then not scored).\n"
        "Writes results.json/.csv/.md and report.html with a montage and charts; re-running resumes.",
        "examples:\n  stainlab evaluate --data long-he -o report/\n"
        "  stainlab evaluate --methods reinhard,macenko --data bench/ -r ref.png -o report/\n"
        "  stainlab evaluate --data understained --source tiles/ --seed 3 -o report/", common)
    evaluate.add_argument("--data", required=True, metavar="DIR_OR_PRESET",
                          help="paired folder (A/, B/) or a simulator preset name")
    evaluate.add_argument("--methods", metavar="M1,M2", help="methods to score (default: every normalizer)")
    evaluate.add_argument("-r", "--reference", metavar="REF", help="reference image (default: see above)")
    evaluate.add_argument("--source", action="append", metavar="IMG_OR_DIR",
                          help="real tissue for a preset (repeatable)")
    evaluate.add_argument("--seed", type=int, default=0, help="simulator seed for a preset (default: 0)")
    evaluate.add_argument("--metrics", metavar="M1,M2",
                          help="metrics: psnr, ssim, ciede2000, mae, wasserstein (default: the first four "
                               "for pairs, wasserstein for unpaired data)")
    evaluate.add_argument("--unpaired", action="store_true",
                          help="A/ and B/ are not pixel-aligned: score outputs by colour distance to B/ "
                               "(the HEV layout, HE/ and Long HE/, is recognised by itself)")
    evaluate.add_argument("--classifier", metavar="FILE",
                          help="virtual stainers on BCI-layout data (HE/test, IHC/test): paper 002's HER2-level "
                               "scores (top-1/3/5, kNN-10) and a perceptual hash with this `stainlab train "
                               "comparator` model file, a separate one from the training comparator")
    evaluate.add_argument("-o", "--out", required=True, metavar="REPORT_DIR", help="report folder")
    evaluate.set_defaults(run=cmd_evaluate)

    train = _subcommand(
        sub, "train", "train a learned normalizer (cyclegan, ccgan, pcnet, distill) or virtual stainer "
                      "(derestainer, pix2pix, comparator)",
        "Train a network on DATA/A (source look) and DATA/B (target look); pairs when the file names\n"
        "match (ccgan and pcnet need them). Defaults are the papers' settings; --preset tiny is a small\n"
        "run for a CPU in minutes. The run folder gets config.json, checkpoint.pt (--resume continues it),\n"
        "log.csv, losses.png, samples/ and the model files (*.safetensors) to use with -m KIND --model.",
        "examples:\n  stainlab train cyclegan --data tiles/ -o runs/teacher --skips --ssim-cycle\n"
        "  stainlab train distill --data tiles/ --teacher runs/teacher -o runs/unet\n"
        "  stainlab train distill --data tiles/ --teacher runs/teacher --student stainnet -o runs/stainnet\n"
        "  stainlab train ccgan --data pairs/ -o runs/ccgan --preset tiny\n"
        "  stainlab normalize tiles/ -m unet --model runs/unet/student.safetensors -o out/", common)
    train.add_argument("recipe", choices=("cyclegan", "ccgan", "pcnet", "distill", "pix2pix", "derestainer",
                                          "comparator"), help="what to train")
    train.add_argument("--data", required=True, metavar="DIR", help="folder with A/ and B/ (or the HEV layout)")
    train.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="run folder")
    train.add_argument("--preset", choices=("paper", "tiny"), default="paper",
                       help="paper: the papers' settings (default); tiny: small and quick, for a CPU")
    train.add_argument("--steps", type=_positive_int, help="optimisation steps (default: the preset's)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="start over in a RUN_DIR that holds a run")
    train.add_argument("--skips", action="store_true", help="cyclegan: paper 003's generator with skip connections")
    train.add_argument("--ssim-cycle", action="store_true",
                       help="cyclegan: paper 003's loss L_adv + 5 L_cycle + 5 L_ssim and its schedule")
    train.add_argument("--teacher", metavar="RUN_OR_FILE", help="distill: the trained CycleGAN (run folder)")
    train.add_argument("--student", choices=("unet", "stainnet"), help="distill: the student (default: unet)")
    train.add_argument("--ablation", choices=("full", "no_stain", "no_dab"),
                       help="derestainer: paper 002 Table 1b's ablation (default: full)")
    train.add_argument("--comparator", metavar="FILE|none",
                       help="derestainer: the HER2 classifier of `stainlab train comparator` (L_cmp), or none")
    train.add_argument("--features", metavar="vgg16|random|PATH",
                       help="pcnet: VGG16 weights for the Gram loss (default vgg16: vgg16-397923af.pth in the "
                            "torch cache; random: seeded random VGG16, offline)")
    train.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cpu)")
    train.add_argument("--set", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                       help="any recipe setting, e.g. --set lr=1e-4 --set batch_size=8 (repeatable)")
    train.set_defaults(run=cmd_train)

    add_slide_command(sub, common)

    data = _subcommand(sub, "data", "make data sets", "Make data sets for training and evaluation.",
                       "example:\n  stainlab data make-benchmark --preset long-he --source tiles/ --out bench/",
                       common)
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    bench = _subcommand(
        data_sub, "make-benchmark", "render pixel-aligned pairs with the restaining simulator",
        "Separate real tissue into stain concentrations and render it under a known staining preset:\n"
        "OUT/A/x.png is the re-stained input, OUT/B/x.png the exact ground truth, OUT/meta.json the\n"
        "parameters. --mode ihc writes H&E -> IHC pairs in the BCI layout (HE/, IHC/) instead.",
        "examples:\n  stainlab data make-benchmark --preset long-he --source tiles/ --out bench/\n"
        "  stainlab data make-benchmark --mode ihc --source he_tiles/ --level 2+ --out bci/", common)
    bench.add_argument("--preset", default="long-he", help="simulator preset (default: %(default)s)")
    bench.add_argument("--source", required=True, action="append", metavar="IMG_OR_DIR",
                       help="real tissue images or folders (repeatable)")
    bench.add_argument("--out", required=True, metavar="DIR", help="output folder")
    bench.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    bench.add_argument("--mode", choices=("restain", "ihc"), default="restain", help="pair kind")
    bench.add_argument("--level", choices=("0", "1+", "2+", "3+"), help="HER2 level for --mode ihc "
                       "(default: drawn from the seed)")
    bench.add_argument("--split", default="train", help="BCI split name for --mode ihc (default: train)")
    bench.add_argument("--overwrite", action="store_true", help="replace an existing benchmark folder")
    bench.set_defaults(run=cmd_make_benchmark)
    return parser


def main(argv=None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, usage errors
        return int(done.code or 0)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        error("interrupted; run the same command again to resume (finished outputs are kept)")
        return 130
    except Exception as err:
        error(describe(err))
        if args.debug:
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
