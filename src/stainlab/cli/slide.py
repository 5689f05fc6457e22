"""``stainlab slide``: normalize whole slides (or large images) into pyramidal OME-TIFFs.

The transform is built as for ``stainlab normalize`` (a reference slide is sampled over its tissue
instead of being read whole), the outputs are planned and resumed by :mod:`stainlab.batch`, and the
slides run through :mod:`stainlab.wsi.cohort`: in this process for one slide (or ``--workers 1``), on an
embedded Dask LocalCluster for several, or on the cluster at ``--scheduler tcp://host:port``; one
slide with ``--workers N`` (or a scheduler) is spread over the cluster by runs of tile rows. On a
cluster the output folder must be shared by every worker (checked) unless ``--return-to-client``.
"""

from __future__ import annotations

import functools
import os
import time

from stainlab import batch
from stainlab.cli import messages
from stainlab.cli.args import add_device_options, add_method_options, positive_int, subcommand, transform_from
from stainlab.errors import InputError
from stainlab.wsi.normalize import PLAIN_FORMATS, PYRAMID, SlideOptions, output_path
from stainlab.wsi.pyramid import COMPRESSIONS, JPEG_QUALITY
from stainlab.wsi.readers import open_slide
from stainlab.wsi.references import list_slides, read_references
from stainlab.wsi.tiling import DEFAULT_MIN_TISSUE, DEFAULT_OVERLAP, DEFAULT_TILE, TileGrid

DESCRIPTION = """\
Normalize whole slides or large images, tile by tile with no seams, into pyramidal tiled OME-TIFFs
(with the source's microns per pixel) that QuPath/Bio-Formats, napari/tifffile, OpenSlide and libvips
open with every level. Per-pixel methods take their statistics from tissue sampled over the whole
slide; context-aware networks see each tile with --overlap pixels of context and are feathered across
tile borders. Background tiles are not run through a network; their glass gets the colour the network
gives glass. A network runs on --device (cpu, or a GPU: cuda) and takes the tissue tiles of a tile row
in batches (--batch-size; default: on a GPU as many as fit in its free memory, on the CPU one). A
crashed run resumes from the tile rows already finished, also on another device.
Several slides run on an embedded Dask cluster (--workers), or on --scheduler tcp://host:port;
a single slide with --workers N is spread over the cluster by runs of tile rows.
On an existing cluster (start 'dask scheduler' on one machine and 'dask worker tcp://HOST:8786' on
each, all with stainlab installed) the paths are the client's, made absolute: every worker must read
the inputs and write the output folder at the same paths (a shared mount). A slide whose output a
worker wrote where this process cannot see it fails ('the worker wrote ... on its own file system'),
the slides not finished are cancelled and the exit status is 1; with --return-to-client the workers
send each output (up to 1 GiB encoded; a spread slide's tile rows) back and this process writes it.
Reads images, TIFF/OME-TIFF and .svs/.ndpi with tifffile; other vendor formats need OpenSlide:
pip install 'stainlab[slides]'. Exit status 1 if any slide failed."""

EPILOG = """\
examples:
  stainlab slide case1.svs -m macenko -r reference.png -o normalized/
  stainlab slide slides/ -t macenko.json -o normalized/ --mpp 0.5 --workers 4
  stainlab slide big.tif --model stainnet:stainnet.pth -o out/ --tile 1024
  stainlab slide case1.svs -m unet --model runs/unet/student.safetensors -o out/ --device cuda
  stainlab slide cohort/ -t reinhard.json -o /shared/out/ --scheduler tcp://10.0.0.5:8786
  stainlab slide cohort/ -t reinhard.json -o out/ --scheduler tcp://10.0.0.5:8786 --return-to-client"""


def _options(args) -> SlideOptions:
    return SlideOptions(level=args.level, mpp=args.mpp, tile=args.tile, overlap=args.overlap,
                        min_tissue=args.min_tissue, format=args.format, compression=args.compression,
                        quality=args.quality, overwrite=args.overwrite)


def _grid_tiles(job: batch.Job, options: SlideOptions) -> int:
    """Tiles of one slide for the progress bar (0 when the slide cannot be opened: it fails later)."""
    try:
        with open_slide(job.source) as slide:
            lv = slide.levels[slide.level_for(options.level, options.mpp)]
            return len(TileGrid(lv.height, lv.width, options.tile, 0))
    except Exception:
        return 0


def _outcomes(jobs: list[batch.Job], transform, options: SlideOptions, args, progress):
    from stainlab.wsi.cohort import run_cohort, run_local, run_slide_tiles

    on_gpu = getattr(transform, "device", "cpu").partition(":")[0] != "cpu"
    workers = args.workers or (1 if on_gpu else min(len(jobs), os.cpu_count() or 1))
    if len(jobs) == 1 and (args.scheduler or workers > 1):  # one slide: its tile rows on the cluster
        return [run_slide_tiles(jobs[0], transform, options, workers, args.scheduler, progress=progress,
                                return_to_client=args.return_to_client, threads=args.threads)]
    if args.scheduler or workers > 1:
        return run_cohort(jobs, transform, options, workers, args.scheduler, progress=progress,
                          return_to_client=args.return_to_client, threads=args.threads)
    return run_local(jobs, transform, options, progress)


def run(args) -> int:
    options = _options(args)
    sources = list_slides(args.sources)
    if not sources:
        raise InputError(f"{', '.join(args.sources)}: no slide or image files found")
    transform = transform_from(args, functools.partial(read_references, mpp=options.mpp, tile=options.tile))
    settings = {k: v for k, v in options.__dict__.items() if k != "overwrite"}
    plan = batch.plan(sources, args.out, lambda source: output_path(source, args.out, options.format).name,
                      batch.Producer.of(transform, **settings), args.overwrite)
    messages.skipped(args.out, plan.skipped, "slides")
    start, pixels = time.perf_counter(), [0]
    with messages.progress_bar(sum(_grid_tiles(job, options) for job in plan.jobs), "tile") as bar:
        def progress(tiles: int, done: int) -> None:
            pixels[0] += done
            bar.set_postfix_str(f"{pixels[0] / 1e6 / max(time.perf_counter() - start, 1e-9):.1f} MPix/s")
            bar.update(tiles)

        failed = messages.report(_outcomes(plan.jobs, transform, options, args, progress), args.debug)
    seconds = time.perf_counter() - start
    messages.result(f"normalized {len(plan.jobs) - len(failed)} of {len(plan.jobs) + len(plan.skipped)} slides "
                    f"with {transform.name} into {args.out} in {seconds:.1f} s "
                    f"({pixels[0] / 1e6 / max(seconds, 1e-9):.1f} MPix/s; {len(plan.skipped)} skipped, "
                    f"{len(failed)} failed)")
    return 1 if failed else 0


def add(sub, common) -> None:
    parser = subcommand(sub, "slide", "normalize whole slides into pyramidal OME-TIFFs", DESCRIPTION, EPILOG, common)
    parser.add_argument("sources", nargs="+", metavar="SRC", help="slide/image files and/or folders of them")
    add_method_options(parser)
    add_device_options(parser, "tissue tiles (with their context)")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--level", type=int, metavar="L", help="pyramid level to normalize (default: 0)")
    where.add_argument("--mpp", type=float, metavar="X", help="target microns per pixel: the nearest level")
    parser.add_argument("--tile", type=positive_int, default=DEFAULT_TILE, help="tile size (default: %(default)s)")
    parser.add_argument("--overlap", type=int, metavar="PIXELS",
                        help=f"context per tile side for context-aware methods (default: {DEFAULT_OVERLAP}, "
                             "at most a quarter of the tile)")
    parser.add_argument("--min-tissue", type=float, metavar="F",
                        help=f"tiles with a smaller tissue fraction are not run through the method, only shifted "
                             f"to the colour it gives glass (default: {DEFAULT_MIN_TISSUE} for context-aware methods, "
                             "0 for per-pixel ones, whose colour table maps every pixel exactly)")
    parser.add_argument("--format", choices=(PYRAMID, *PLAIN_FORMATS), default=PYRAMID,
                        help="output: pyramidal OME-TIFF (default) or a plain image for small inputs")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="jpeg", help="pyramid tiles (default: jpeg)")
    parser.add_argument("--quality", type=positive_int, default=JPEG_QUALITY,
                        help="JPEG quality (default: %(default)s)")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="Dask worker processes (default: one per CPU for several slides, one when a network "
                             "runs on a GPU, which one process keeps busy; 1 = in this process)")
    parser.add_argument("--scheduler", metavar="ADDR",
                        help="use the Dask cluster at ADDR (tcp://host:port); inputs and the output folder must be "
                             "at the same paths on every worker (a shared mount), or use --return-to-client")
    parser.add_argument("--return-to-client", action="store_true",
                        help="workers send each output back and this process writes it (default: workers write "
                             "into the output folder, which must then be shared; checked)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.set_defaults(run=run)
