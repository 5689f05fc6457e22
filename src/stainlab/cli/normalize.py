"""``stainlab normalize``: image files or folders through one transform, resumable (see :mod:`stainlab.batch`)."""

from __future__ import annotations

import time

from stainlab import batch
from stainlab.cli import messages
from stainlab.cli.args import add_device_options, add_method_options, positive_int, subcommand, transform_from
from stainlab.errors import InputError
from stainlab.io.images import list_images

FORMATS = {"png": ".png", "tif": ".tif", "jpg": ".jpg"}


def run(args) -> int:
    sources = list_images(args.sources, recursive=args.recursive)
    if not sources:
        raise InputError(f"{', '.join(args.sources)}: no image files found "
                         "(.png, .jpg, .tif, .bmp; --recursive searches sub-folders)")
    transform = transform_from(args)
    suffix = FORMATS[args.format]
    plan = batch.plan(sources, args.out, lambda source: source.stem + suffix,
                      batch.Producer.of(transform, format=args.format), args.overwrite)
    messages.skipped(args.out, plan.skipped, "inputs")
    start = time.perf_counter()
    with messages.progress_bar(len(plan.jobs), "image") as bar:
        outcomes = batch.run_files(transform, plan.jobs, args.workers, threads=args.threads)
        failed = messages.report(outcomes, args.debug, bar)
    messages.result(f"normalized {len(plan.jobs) - len(failed)} of {len(plan.jobs) + len(plan.skipped)} images "
                    f"with {transform.name} into {args.out} in {time.perf_counter() - start:.1f} s "
                    f"({len(plan.skipped)} skipped, {len(failed)} failed)")
    return 1 if failed else 0


def add(sub, common) -> None:
    parser = subcommand(
        sub, "normalize", "normalize images to a reference appearance",
        "Normalize image files (or every image in folders) to a reference appearance. Outputs keep\n"
        "the input's name (new suffix per --format) in OUTDIR. A bad file is reported and the others\n"
        "go on. OUTDIR records what made each output, so running the same command again resumes it,\n"
        "and an output of another method or reference is refused rather than silently kept.\n"
        "Exit status: 0 if every input was normalized or skipped, 1 if any failed, 2 for bad usage.",
        "examples:\n  stainlab normalize tiles/ -m macenko -r reference.png -o normalized/\n"
        "  stainlab normalize a.tif b.tif -m reinhard -r ref1.png -r ref2.png -o out/ --format tif\n"
        "  stainlab normalize tiles/ -t macenko.json -o normalized/ --workers 4 --overwrite\n"
        "  stainlab normalize tiles/ -m unet --model runs/unet/student.safetensors -o unet-out/", common)
    parser.add_argument("sources", nargs="+", metavar="SRC", help="image files and/or folders of images")
    add_method_options(parser)
    add_device_options(parser)
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="png",
                        help="output format (default: png; tif is lossless, jpg quality 95)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="normalize N files at a time in separate processes (default: 1)")
    parser.add_argument("--recursive", action="store_true", help="also read images in sub-folders of SRC")
    parser.set_defaults(run=run)
