"""``stainlab slide``: normalize whole slides (or large images) into pyramidal OME-TIFFs.

The command builds the transform as ``stainlab normalize`` does (``-m METHOD -r REF``, ``-t
FITTED.json``, or a trained network with ``--model KIND:PATH``), then runs every slide through
:func:`stainlab.wsi.normalize.normalize_slide`: in this process for one slide (or ``--workers 1``), on an
embedded Dask LocalCluster for several, or on the cluster at ``--scheduler tcp://host:port``; one
slide with ``--workers N`` (or a scheduler) is spread over the cluster by runs of tile rows.
A slide given as a reference is sampled over its tissue instead of being read whole.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from stainlab.errors import InputError
from stainlab.wsi.pyramid import COMPRESSIONS, JPEG_QUALITY
from stainlab.wsi.readers import IMAGE_SUFFIXES, OPENSLIDE_SUFFIXES, ImageSlide, open_slide
from stainlab.wsi.tiling import DEFAULT_MIN_TISSUE, DEFAULT_OVERLAP, DEFAULT_TILE, TileGrid
from stainlab.wsi.normalize import PLAIN_FORMATS, PYRAMID, SlideOptions, output_path, sample_tissue
from stainlab.transforms import registry
from stainlab.transforms.base import Transform

SLIDE_SUFFIXES = IMAGE_SUFFIXES | OPENSLIDE_SUFFIXES
REFERENCE_SAMPLE_SIDE = 4096  # a reference slide larger than this a side is sampled over its tissue

DESCRIPTION = """\
Normalize whole slides or large images, tile by tile with no seams, into pyramidal tiled OME-TIFFs
(with the source's microns per pixel) that QuPath, napari and OpenSlide-style viewers open.
Per-pixel methods take their statistics from tissue sampled over the whole slide; context-aware
networks see each tile with --overlap pixels of context and are feathered across tile borders.
Background tiles are copied through. A crashed run resumes from the tile rows already finished.
Several slides run on an embedded Dask cluster (--workers), or on --scheduler tcp://host:port;
a single slide with --workers N is spread over the cluster by runs of tile rows.
Reads images, TIFF/OME-TIFF and .svs/.ndpi with tifffile; other vendor formats need OpenSlide:
pip install 'stainlab[slides]'. Exit status 1 if any slide failed."""

EPILOG = """\
examples:
  stainlab slide case1.svs -m macenko -r reference.png -o normalized/
  stainlab slide slides/ -t macenko.json -o normalized/ --mpp 0.5 --workers 4
  stainlab slide big.tif --model stainnet:stainnet.pth -o out/ --tile 1024
  stainlab slide cohort/ -t reinhard.json -o out/ --scheduler tcp://10.0.0.5:8786"""


def add_slide_command(sub, common) -> None:
    """Add ``stainlab slide`` to the sub-command parsers of :func:`stainlab.cli.build_parser`."""
    import argparse

    from stainlab.cli import _key_value, _positive_int

    parser = sub.add_parser("slide", help="normalize whole slides into pyramidal OME-TIFFs",
                            description=DESCRIPTION, epilog=EPILOG, parents=[common],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SRC", help="slide/image files and/or folders of them")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("-t", "--transform", metavar="FITTED.json", help="a transform saved by `stainlab fit`")
    how.add_argument("--model", metavar="M", help="a trained network: KIND:PATH (e.g. stainnet:net.pth), or "
                                                   "PATH with -m KIND")
    parser.add_argument("-m", "--method", metavar="METHOD", help="method name (see `stainlab methods`)")
    parser.add_argument("-r", "--reference", action="append", metavar="REF",
                        help="reference image, slide or folder (repeatable; slides are sampled over tissue)")
    parser.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="method parameter (repeatable)")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--level", type=int, metavar="L", help="pyramid level to normalize (default: 0)")
    where.add_argument("--mpp", type=float, metavar="X", help="target microns per pixel: the nearest level")
    parser.add_argument("--tile", type=_positive_int, default=DEFAULT_TILE, help="tile size (default: %(default)s)")
    parser.add_argument("--overlap", type=int, metavar="PIXELS",
                        help=f"context per tile side for context-aware methods (default: {DEFAULT_OVERLAP}, "
                             "at most a quarter of the tile)")
    parser.add_argument("--min-tissue", type=float, metavar="F",
                        help=f"tiles with a smaller tissue fraction are copied through (default: {DEFAULT_MIN_TISSUE} "
                             "for context-aware methods, 0 for per-pixel ones, whose glass would otherwise change "
                             "colour at tile borders)")
    parser.add_argument("--format", choices=(PYRAMID, *PLAIN_FORMATS), default=PYRAMID,
                        help="output: pyramidal OME-TIFF (default) or a plain image for small inputs")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="jpeg", help="pyramid tiles (default: jpeg)")
    parser.add_argument("--quality", type=_positive_int, default=JPEG_QUALITY,
                        help="JPEG quality (default: %(default)s)")
    parser.add_argument("--workers", type=_positive_int, metavar="N",
                        help="Dask worker processes (default: one per CPU for several slides; 1 = in this process)")
    parser.add_argument("--scheduler", metavar="ADDR", help="use the Dask cluster at ADDR (tcp://host:port)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.set_defaults(run=cmd_slide)


def list_slides(sources: list[str]) -> list[Path]:
    """Files named, and slide/image files inside folders (sorted, no hidden files)."""
    found: set[Path] = set()
    for source in map(Path, sources):
        if source.is_dir():
            found.update(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES
                         and not p.name.startswith("."))
        elif source.exists():
            found.add(source)
        else:
            raise InputError(f"{source}: no such file or folder")
    return sorted(found)


def reference_images(paths: list[str], options: SlideOptions) -> list[np.ndarray]:
    """Reference pixels: whole images, and tissue tiles sampled over large slides."""
    images = []
    for path in list_slides(paths):
        with open_slide(path) as slide:
            level = slide.level_for(mpp=options.mpp) if options.mpp and slide.mpp else 0
            lv = slide.levels[level]
            if isinstance(slide, ImageSlide) or max(lv.height, lv.width) <= REFERENCE_SAMPLE_SIDE:
                images.append(slide.read(level, 0, 0, lv.height, lv.width))
            else:
                grid = TileGrid(lv.height, lv.width, options.tile, 0)
                images += sample_tissue(slide, level, grid, options.sample_tiles)
    if not images:
        raise InputError(f"{', '.join(paths)}: no reference images found")
    return images


def build_transform(args, options: SlideOptions) -> Transform:
    """The transform asked for by -t, --model or -m, fitted on -r when it needs a reference."""
    from stainlab.cli import load_fitted

    if args.transform:
        if args.method or args.reference or args.param:
            raise InputError("-t FITTED.json already holds the method, reference and parameters; drop -m/-r/--param")
        return load_fitted(args.transform)
    if args.model:
        if args.method and not args.model.startswith(f"{args.method}:"):
            spec = f"{args.method}:{args.model}"
        elif ":" in args.model:
            spec = args.model
        else:
            raise InputError(f"--model {args.model}: give it as KIND:PATH (e.g. stainnet:{args.model}) or add -m KIND")
    elif args.method:
        spec = args.method
    else:
        raise InputError("choose the method: -m METHOD, -t FITTED.json or --model KIND:PATH")
    transform = registry.load(spec, **dict(args.param))
    if args.reference:
        try:
            transform.fit(reference_images(args.reference, options))
        except InputError as err:
            raise InputError(f"{', '.join(args.reference)}: {err}") from None
    elif transform.requires_fit:
        raise InputError(f"{transform.name}: needs a reference image; give one with -r REF")
    return transform


def _options(args) -> SlideOptions:
    return SlideOptions(level=args.level, mpp=args.mpp, tile=args.tile, overlap=args.overlap,
                        min_tissue=args.min_tissue, format=args.format, compression=args.compression,
                        quality=args.quality, overwrite=args.overwrite)


def plan_jobs(sources: list[Path], out_dir: Path, options: SlideOptions):
    """Jobs for the slides whose output is not there yet (all with overwrite), and the skipped ones."""
    from stainlab.wsi.cohort import SlideJob

    outputs: dict[Path, Path] = {}
    for source in sources:
        out = output_path(source, out_dir, options.format)
        if out in outputs:
            raise InputError(f"{out}: would be written by both {outputs[out]} and {source}; rename one")
        outputs[out] = source
    jobs = [SlideJob(src, out) for out, src in outputs.items()]
    skipped = [job for job in jobs if job.output.exists() and not options.overwrite]
    return [job for job in jobs if job not in skipped], skipped


def _grid_tiles(job, options: SlideOptions) -> int:
    """Tiles of one slide for the progress bar (0 when the slide cannot be opened: it fails later)."""
    try:
        with open_slide(job.source) as slide:
            lv = slide.levels[slide.level_for(options.level, options.mpp)]
            return len(TileGrid(lv.height, lv.width, options.tile, 0))
    except Exception:
        return 0


def cmd_slide(args) -> int:
    from tqdm import tqdm

    from stainlab.cli import PROG, error, warn
    from stainlab.wsi.cohort import run_cohort, run_local, run_slide_tiles

    options = _options(args)
    sources = list_slides(args.sources)
    if not sources:
        raise InputError(f"{', '.join(args.sources)}: no slide or image files found")
    jobs, skipped = plan_jobs(sources, Path(args.out), options)
    if skipped:
        warn(f"{args.out}: {len(skipped)} output(s) exist already, their slides skipped (--overwrite replaces them)")
    transform = build_transform(args, options)
    start, done_pixels = time.perf_counter(), [0]
    with tqdm(total=sum(_grid_tiles(job, options) for job in jobs), unit="tile", file=sys.stderr,
              desc=PROG, disable=None) as bar:
        def progress(tiles: int, pixels: int) -> None:
            done_pixels[0] += pixels
            bar.set_postfix_str(f"{done_pixels[0] / 1e6 / max(time.perf_counter() - start, 1e-9):.1f} MPix/s")
            bar.update(tiles)

        workers = args.workers or min(len(jobs), os.cpu_count() or 1)
        if len(jobs) == 1 and (args.scheduler or workers > 1):  # one slide: its tile rows on the cluster
            outcomes = [run_slide_tiles(jobs[0], transform, options, workers, args.scheduler, progress=progress)]
        elif args.scheduler or workers > 1:
            outcomes = run_cohort(jobs, transform, options, workers, args.scheduler, progress=progress)
        else:
            outcomes = run_local(jobs, transform, options, progress)
        failed = []
        for outcome in outcomes:
            if outcome.error:
                failed.append(outcome)
                error(outcome.error)
                if args.debug and outcome.traceback:
                    bar.write(outcome.traceback, file=sys.stderr)
            else:
                for note in outcome.result.notes:
                    warn(f"{outcome.job.source}: {note}")
    seconds = time.perf_counter() - start
    print(f"{PROG}: normalized {len(jobs) - len(failed)} of {len(sources)} slides with {transform.name} into "
          f"{args.out} in {seconds:.1f} s ({done_pixels[0] / 1e6 / max(seconds, 1e-9):.1f} MPix/s; "
          f"{len(skipped)} skipped, {len(failed)} failed)")
    return 1 if failed else 0
