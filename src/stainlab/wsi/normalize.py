"""Normalizing a whole slide: whole-slide statistics, seamless tiles, a resumable pyramidal output.

Paper 000 (Sec. IV, Fig. 3 right) cuts a 3120x3168 image into 512x512 patches and shows that methods
treating patches independently disagree across patch borders. Two causes, two remedies:

* **Per-image statistics.** A classical method estimates its source statistics (stain matrix, LAB
  moments, histogram) from the image it is given; run per tile, every tile gets its own estimate and
  the colour drifts across the slide (HistomicsTK ``reinhard_stats``, ITKColorNormalization #39). Here
  the statistics come once from tissue tiles sampled over the whole slide (:func:`sample_tissue`) and
  are baked into one colour table for the slide (:class:`SlideColorMap`), so every tile gets exactly
  the same per-pixel map and tile borders cannot show.
* **Context-aware networks** (``per_pixel`` False: U-Net, CycleGAN generators) see each tile with
  ``overlap`` pixels of context and neighbouring outputs are feathered together; background tiles are
  not run through the network, but their glass gets the colour the network gives glass, so a network
  that tints glass leaves no grid (:mod:`stainlab.wsi.tiling`).

:func:`normalize_slide` reads the chosen level tile row by tile row, keeps finished rows in a work
store beside the output so a crashed run resumes, builds the pyramid and writes it atomically
(:mod:`stainlab.wsi.pyramid`). Memory follows the tile size and the slide width, never its area. Its
three steps are separate so that other processes can share one slide: :func:`plan_slide` (checks and
the store), :func:`compute_rows` (any run of tile rows, in any process) and :func:`finish_slide`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import itertools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from numba import njit

from stainlab import __version__
from stainlab.color.pixels import linear_od_image
from stainlab.errors import InputError, NoTissueError
from stainlab.threads import serial_kernel_pool
from stainlab.io.images import write_image
from stainlab.wsi.pyramid import (JPEG_QUALITY, RowWriter, StreamedPyramid, TileCodec, TileStore, halve,
                                 level_shapes, work_folder, write_pyramid)
from stainlab.wsi.readers import Slide, open_slide
from stainlab.wsi.tiling import (DEFAULT_MIN_TISSUE, DEFAULT_OVERLAP, DEFAULT_TILE, Box, RowRunner, RowStats,
                                TileGrid, tissue_fraction, tissue_pixels)
from stainlab.transforms.base import PixelTransform, Transform
from stainlab.transforms import small
from stainlab.transforms.lut import LatticeTable, occupied_cells

PYRAMID = "ome.tif"
PLAIN_FORMATS = ("png", "tif", "jpg")
PLAIN_MAX_PIXELS = 1 << 28     # a plain image is assembled in memory: up to ~16k x 16k
SAMPLE_MIN_TISSUE = 0.05       # a sampled tile counts as tissue from 5% tissue pixels
THUMBNAIL_MAX_SIDE = 4096      # a pyramid level at most this large guides the tissue sampling,
THUMBNAIL_MIN_CORE = 16        # if it shows each core with at least this many pixels a side
THUMBNAIL_BAND = 512           # rows of that level decoded by one thread
SMALL_SLIDE_TILES = 256        # slides of more tiles evaluate their colour table whole (SlideColorMap)
SAMPLE_READS = 8               # cores read at once while sampling (a few more than needed at most)
ROWS_AHEAD = 2                 # tile rows read and transformed ahead of the row being written
HEAP_BUFFERS = 32 << 20        # glibc: buffers up to this size from the heap (its most), see reuse_freed_memory
HEAP_KEEP = 256 << 20          # glibc: free heap kept up to this size
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


@dataclass(frozen=True)
class SlideOptions:
    """How a slide is read, tiled and written."""

    level: int | None = None           # pyramid level (0 = full resolution); or choose by mpp
    mpp: float | None = None           # target microns per pixel: the nearest level is used
    tile: int = DEFAULT_TILE           # paper 000, Sec. IV (Fig. 3 right): 512x512 patches
    overlap: int | None = None         # context per side for context-aware methods (None: 64, at most tile / 4)
    min_tissue: float | None = None    # cores with less tissue are not transformed (None: see skip_below)
    sample_tiles: int = 64             # tissue tiles pooled for the whole-slide statistics
    format: str = PYRAMID              # "ome.tif" (pyramidal) or a plain image: png, tif, jpg
    compression: str = "jpeg"          # pyramid tiles: jpeg, zlib or none
    quality: int = JPEG_QUALITY
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format not in (PYRAMID, *PLAIN_FORMATS):
            raise InputError(f"output format must be {PYRAMID} or one of {', '.join(PLAIN_FORMATS)}, "
                             f"got {self.format!r}")
        if self.min_tissue is not None and not 0.0 <= self.min_tissue <= 1.0:
            raise InputError(f"min_tissue must be a fraction from 0 to 1, got {self.min_tissue}")
        if self.format == PYRAMID and self.tile % 16:
            raise InputError(f"a tiled pyramidal TIFF needs a tile size that is a multiple of 16, got {self.tile}")
        if not 0 <= self.context <= self.tile // 2:
            raise InputError(f"overlap must be from 0 to half the tile size ({self.tile // 2}), got {self.overlap}")
        if self.sample_tiles < 1:
            raise InputError(f"sample_tiles must be at least 1, got {self.sample_tiles}")

    def skip_below(self, transform: Transform) -> float:
        """Tissue fraction under which a core is not run through the transform (its glass is shifted to
        the colour the transform gives glass, see :mod:`stainlab.wsi.tiling`). By default 1% for
        context-aware methods (their cost is in the network); 0 for per-pixel ones: their colour table
        costs little and maps every pixel exactly."""
        if self.min_tissue is not None:
            return self.min_tissue
        return 0.0 if transform.per_pixel else DEFAULT_MIN_TISSUE

    @property
    def codec(self) -> TileCodec:
        """How finished tiles are encoded: the pyramid's compression, or lossless rows for a plain image."""
        return TileCodec(self.compression if self.format == PYRAMID else "zstd", self.tile, self.quality)

    @property
    def context(self) -> int:
        """The overlap in pixels: as given, or the default capped at a quarter of the tile."""
        return min(DEFAULT_OVERLAP, self.tile // 4) if self.overlap is None else self.overlap


@dataclass
class SlideResult:
    """What one slide run did."""

    source: Path
    output: Path
    level: int
    width: int
    height: int
    tiles: int = 0            # cores in the grid
    transformed: int = 0      # cores with tissue, transformed
    resumed: int = 0          # cores found finished in the work store
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class SlideColorMap:
    """A per-pixel transform with its per-image statistics taken from a whole-slide sample, baked into
    one table over the full colour lattice (:class:`~stainlab.transforms.lut.LatticeTable`). Every tile
    of the slide then gets the same map, so per-pixel output is independent of the tiling.

    The cells of the sample's colours are evaluated at once (the colours of every sampled pixel, not
    only of the pixels the statistics take: on the CMU-1 region those left another 127,000 cells to be
    evaluated in turns under the table's lock); a slide of more than
    :data:`SMALL_SLIDE_TILES` ``tiles`` has the whole lattice evaluated at once instead (in parallel, a
    fraction of a second), because nearly every tile of a large slide meets a few colours of its own,
    and evaluating them tile by tile, under the table's lock and in turns for the GIL, costs about a
    millisecond a tile.

    A small slide whose map is linear in optical density (Macenko, Ruifrok, linear-ot; ``lut_bits`` under
    8) needs no table: its tiles go through the compiled per-pixel kernel of the small-image path
    (:func:`~stainlab.color.pixels.od_linear`): the table's gather costs a pixel less, but making the
    table for the cells a small slide meets costs more than that saves (the CMU-1 region took 184 ms
    through the kernel, 217 through the table, in turns); on a 400 MPix slide the whole table is the
    faster (2.78-3.07 s against 2.87-3.18, before the gather worked its cells out in a loop of their own)."""

    def __init__(self, transform: PixelTransform, sample: list[np.ndarray], tiles: int = 0,
                 pool: ThreadPoolExecutor | None = None) -> None:
        # statistics as t(image) takes them from an image of the sample's strided pixels (compiled passes;
        # picked in the threads of ``pool`` when given)
        source = transform.source_of_pixels(small.strided_pixels(sample, small.LARGE_IMAGE_SAMPLE, pool))
        linear = transform.linear_od_map(source)
        small_slide = tiles <= SMALL_SLIDE_TILES
        self.linear = linear if small_slide and linear is not None and linear.clip and transform.lut_bits < 8 else None
        if self.linear is not None:
            return
        self.table = (LatticeTable(transform.lut_bits, linear=linear) if linear is not None
                      else LatticeTable(transform.lut_bits, lambda colors: transform.color_table(colors, source)))
        self.table.prepare(occupied_cells(sample, transform.lut_bits) if small_slide else None)

    def __call__(self, tile: np.ndarray, parallel: bool = True) -> np.ndarray:
        tile = np.ascontiguousarray(tile)
        if self.linear is not None:
            return linear_od_image(tile, self.linear, parallel)
        return self.table(tile, parallel)


def sample_tissue(slide: Slide, level: int, grid: TileGrid, count: int,
                  min_tissue: float = SAMPLE_MIN_TISSUE, hold: bool = False,
                  pool: ThreadPoolExecutor | None = None) -> list[np.ndarray]:
    """Up to ``count`` cores with at least ``min_tissue`` tissue, drawn in a fixed pseudo-random order
    over the whole slide (cores a small pyramid level shows to be background are not read);
    :class:`NoTissueError` when the slide has none. ``hold``: the slide keeps the cores found for the
    run that maps them (:meth:`~stainlab.wsi.readers.Slide.hold`), which then does not read them again
    (a small slide's sample is all of it). Read in ``pool`` (default: a :func:`tile_pool` of its own)."""
    def read(index) -> np.ndarray | None:
        core = grid.core(*divmod(int(index), grid.cols))
        pixels = slide.read(level, core.y0, core.x0, *core.shape)
        if tissue_fraction(pixels) < min_tissue:
            return None
        if hold:
            slide.hold(level, core.y0, core.x0, pixels)
        return pixels

    found: list[np.ndarray] = []
    # cores decoded in parallel, SAMPLE_READS at a time, taken in the order drawn
    with _pooled(pool) as pool:
        order = iter(_likely_tissue(slide, level, grid, np.random.default_rng(0).permutation(len(grid)), min_tissue,
                                    pool))
        reads = collections.deque(pool.submit(read, index) for index in itertools.islice(order, SAMPLE_READS))
        while reads and len(found) < count:
            pixels = reads.popleft().result()
            if pixels is not None:
                found.append(pixels)
            reads.extend(pool.submit(read, index) for index in itertools.islice(order, 1))
        for future in reads:
            future.cancel()
    if not found:
        raise NoTissueError(f"{slide.path}: no tissue found at level {level} (no {grid.tile}x{grid.tile} tile has "
                            f"{100 * min_tissue:g}% of pixels with optical density above the tissue threshold)")
    return found


def _likely_tissue(slide: Slide, level: int, grid: TileGrid, order: np.ndarray, min_tissue: float,
                   pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """``order`` without the cores that a small lower level shows as background (unchanged when the
    slide has no such level); that level is decoded in bands in ``pool`` when given."""
    base = slide.levels[level]
    small = [i for i in range(level + 1, len(slide.levels))
             if max(slide.levels[i].height, slide.levels[i].width) <= THUMBNAIL_MAX_SIDE
             and grid.tile * slide.levels[i].width >= THUMBNAIL_MIN_CORE * base.width]
    if not small:
        return order
    thumb_level = small[-1]  # the smallest: decoding it is the cost
    lv = slide.levels[thumb_level]
    bands = [(y, min(THUMBNAIL_BAND, lv.height - y)) for y in range(0, lv.height, THUMBNAIL_BAND)]
    read = lambda band: slide.read(thumb_level, band[0], 0, band[1], lv.width)  # noqa: E731
    thumb = np.concatenate(list(pool.map(read, bands) if pool else map(read, bands)))
    sy, sx = lv.height / base.height, lv.width / base.width
    boxes = np.array([[int(core.y0 * sy), max(int(core.y1 * sy), int(core.y0 * sy) + 1),
                       int(core.x0 * sx), max(int(core.x1 * sx), int(core.x0 * sx) + 1)]
                      for core in (grid.core(*divmod(int(index), grid.cols)) for index in order)], dtype=np.int64)
    boxes = np.minimum(boxes, [[lv.height, lv.height, lv.width, lv.width]])  # as slicing ends them at the border
    tissue = np.zeros(len(boxes), np.int64)
    _count_in_boxes(np.ascontiguousarray(tissue_pixels(thumb)), boxes, tissue)
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    return order[(area > 0) & (tissue / np.maximum(area, 1) >= min_tissue)]


@njit(cache=True, nogil=True)
def _count_in_boxes(dense, boxes, out):  # pragma: no cover - compiled
    """``out[i]``: the true pixels of ``dense`` in the rectangle ``boxes[i] = (y0, y1, x0, x1)``."""
    for i in range(boxes.shape[0]):
        n = 0
        for y in range(boxes[i, 0], boxes[i, 1]):
            for x in range(boxes[i, 2], boxes[i, 3]):
                n += dense[y, x]
        out[i] = n


def tile_function(transform: Transform, slide: Slide, level: int, grid: TileGrid, options: SlideOptions,
                  pool: ThreadPoolExecutor | None = None):
    """What runs on each window: a slide-wide colour table for per-pixel lookup-table methods, the
    transform itself otherwise. Checks that the slide has tissue; the cores sampled for the table are
    held by ``slide`` for the run that maps them (read in ``pool`` when given)."""
    transform._require_fitted()
    per_pixel = isinstance(transform, PixelTransform)
    sample = sample_tissue(slide, level, grid, options.sample_tiles if per_pixel else 1,
                           hold=per_pixel and not options.skip_below(transform), pool=pool)
    if per_pixel:
        try:
            return SlideColorMap(transform, sample, len(grid), pool)
        except NoTissueError as err:
            raise NoTissueError(f"{slide.path}: {err}") from None
    return transform


def output_path(source: Path, out_dir: Path, fmt: str = PYRAMID) -> Path:
    """``OUTDIR/STEM.ome.tif`` (or ``.png``...): the source's name without its suffix (and ``.ome``)."""
    stem = source.stem[:-4] if source.stem.lower().endswith(".ome") else source.stem
    return Path(out_dir) / f"{stem}.{fmt}"


def job_description(source: Path, level: int, transform: Transform, options: SlideOptions) -> dict:
    """What identifies a run, for the work store: a store left by another job is not reused."""
    stat = source.stat()
    try:
        method = transform.fingerprint()  # parameters, fitted state and the weight file's size and mtime
    except Exception:  # a transform that cannot describe itself is identified by its repr
        method = repr(transform)
    return {"stainlab": __version__, "source": str(source.resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "level": level, "tile": options.tile, "overlap": options.context,
            "min_tissue": options.skip_below(transform), "sample_tiles": options.sample_tiles, "method": method,
            "codec": [options.codec.compression, options.codec.quality]}


Progress = Callable[[int, int], None]  # (tiles, pixels) finished since the last call


@dataclass(frozen=True)
class SlidePlan:
    """One slide's run, checked and with its work store created: what any process needs to compute
    some of its tile rows (:func:`compute_rows`) and what :func:`finish_slide` needs to write it."""

    source: Path
    output: Path
    level: int
    grid: TileGrid
    mpp: float | None
    skip_below: float
    job: dict
    codec: TileCodec
    notes: tuple[str, ...] = ()

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Sizes of the output's levels: the pyramid's, or the one level of a plain image."""
        shape = (self.grid.height, self.grid.width)
        return [shape] if self.codec.compression == "zstd" else level_shapes(*shape, self.codec.tile)

    def store(self) -> TileStore:
        """The work store: made (or a stale one emptied) by the first call in a process, then the same
        object (each making read the job record and listed the folder: a millisecond of a small slide)."""
        store = self.__dict__.get("_store")
        if store is None:
            store = self.__dict__["_store"] = TileStore(work_folder(self.output), self.job)
        return store

    def __getstate__(self) -> dict:
        """A plan sent to another process opens the store there."""
        state = dict(self.__dict__)
        state.pop("_store", None)
        return state

    def missing_rows(self) -> list[int]:
        store = self.store()
        return [row for row in range(self.grid.rows) if not store.has(0, row)]


def plan_slide(source, output, transform: Transform, options: SlideOptions, slide: Slide | None = None) -> SlidePlan:
    """Check the job (output, level, size) and open its work store; nothing is computed yet. ``slide``:
    the source, when it is open already."""
    source, output = Path(source), Path(output)
    if output.resolve() == source.resolve():  # before the check below, which would suggest --overwrite
        raise InputError(f"{output}: would replace its own input; choose another output folder")
    if output.exists() and not options.overwrite:
        raise FileExistsError(f"{output}: exists (use --overwrite to replace it)")
    with _opened(source, slide) as slide:
        level = slide.level_for(options.level, options.mpp)
        lv, notes = slide.levels[level], tuple(slide.notes)
    if options.format in PLAIN_FORMATS and lv.width * lv.height > PLAIN_MAX_PIXELS:
        raise InputError(f"{source}: {lv.width}x{lv.height} is too large for a plain image; write {PYRAMID}")
    grid = TileGrid(lv.height, lv.width, options.tile, 0 if transform.per_pixel else options.context)
    plan = SlidePlan(source, output, level, grid, lv.mpp, options.skip_below(transform),
                     job_description(source, level, transform, options), options.codec, notes)
    plan.store()  # created (or a stale one emptied) now: an unwritable output fails before any work
    return plan


def slide_function(plan: SlidePlan, transform: Transform, options: SlideOptions, slide: Slide | None = None,
                   pool: ThreadPoolExecutor | None = None):
    """The function to run on the slide's windows (:func:`tile_function`), for a plan (reading ``slide``
    when it is open already, in ``pool`` when given)."""
    with _opened(plan.source, slide) as slide:
        return tile_function(transform, slide, plan.level, plan.grid, options, pool)


def _opened(source: Path, slide: Slide | None):
    """A context giving ``slide`` as it is, or ``source`` opened (and closed after)."""
    return contextlib.nullcontext(slide) if slide is not None else open_slide(source)


def _pooled(pool: ThreadPoolExecutor | None, threads: int | None = None):
    """A context giving ``pool`` as it is, or a :func:`tile_pool` of ``threads`` (shut down after)."""
    return contextlib.nullcontext(pool) if pool is not None else tile_pool(threads)


def tile_pool(threads: int | None = None) -> ThreadPoolExecutor:
    """The threads that read, map and encode tiles: ``threads`` (default: numba's thread count, which
    ``--threads`` sets) and one more, which fills the moments the others wait for the GIL or the disk
    (10% faster on 2 cores than as many threads as cores). The codecs and the compiled kernels release
    the GIL; each thread runs numba's kernels serially (:func:`~stainlab.threads.serial_kernel_pool`)."""
    import numba

    return serial_kernel_pool((threads or numba.get_num_threads()) + 1)


@functools.cache
def reuse_freed_memory() -> bool:
    """Let glibc keep freed tile buffers for the next tiles (once per process; False where the C
    library is not glibc). A Dask worker starts with ``MALLOC_TRIM_THRESHOLD_=65536``, which switches off
    glibc's adaptive thresholds: every buffer of a tile (decoded, mapped, encoded) is then mapped afresh
    and page-faulted in, and a slide ran 25% slower (measured: 30-34 against 42-46 MPix/s). Buffers up
    to :data:`HEAP_BUFFERS` bytes come from the heap again, and up to :data:`HEAP_KEEP` free bytes stay."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, HEAP_BUFFERS) and libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP))
    except (OSError, AttributeError):
        return False


def compute_rows(plan: SlidePlan, fn, start: int, stop: int, progress: Progress | None = None,
                 lower_levels: bool = False, slide: Slide | None = None, threads: int | None = None,
                 stream: StreamedPyramid | None = None, pool: ThreadPoolExecutor | None = None) -> RowStats:
    """Transform tile rows ``start:stop`` into the plan's store, encoded, and return their totals; with
    ``lower_levels`` also the pyramid's lower levels as the rows pair up (for a run that sees the rows
    in order). Any process can run any rows: the windows of a neighbouring row that overlap them are
    computed again, the same. ``stream``: the output being written as the rows are stored, for a run
    of every row with ``lower_levels`` (each row of every level is handed to it).

    Reading (decoding), transforming and encoding overlap in the threads of :func:`tile_pool`. A
    slide-wide colour table runs tile by tile in those threads, :data:`ROWS_AHEAD` rows ahead of the row
    being stored; any other transform runs in this thread, row by row, while the threads read and encode
    around it. ``pool``: those threads, when the caller has them already (``threads`` is then unused)."""
    reuse_freed_memory()
    total = RowStats()
    with _opened(plan.source, slide) as slide, _pooled(pool, threads) as pool:
        writer = RowWriter(plan.store(), plan.shapes, plan.codec, pool, lower_levels, stream)
        rows = (_table_rows if isinstance(fn, SlideColorMap) and not plan.skip_below else _runner_rows)
        try:
            for row, tiles, half, stats in rows(plan, slide, fn, start, stop, pool, writer.wants_halves()):
                writer.put(0, row, tiles, half)
                total = RowStats(total.tiles + stats.tiles, total.transformed + stats.transformed,
                                 total.pixels + stats.pixels)
                if progress:
                    progress(stats.tiles, stats.pixels)
        except BaseException:  # keep the rows finished before the failure, for the next run
            with contextlib.suppress(Exception):
                writer.flush()
            raise
        if stream:
            writer.complete()  # every row of every level handed over
        else:
            writer.flush()
    return total


def _table_rows(plan: SlidePlan, slide: Slide, fn: SlideColorMap, start: int, stop: int, pool, halves: bool):
    """Rows of a slide-wide colour table: each core read, gathered, encoded (and halved, for the next
    level) in one task of ``pool``; yields each row's tiles, its half and its totals."""
    def core(box: Box) -> tuple[bytes, np.ndarray | None]:
        out = fn(slide.read(plan.level, box.y0, box.x0, *box.shape, shared=True), parallel=False)
        return plan.codec.encode(out), halve(out) if halves else None

    grid = plan.grid
    submitted: dict[int, list[Future]] = {}
    try:
        for row in range(start, stop):
            for ahead in range(row, min(row + ROWS_AHEAD + 1, stop)):
                if ahead not in submitted:
                    submitted[ahead] = [pool.submit(core, grid.core(ahead, col)) for col in range(grid.cols)]
            done = [future.result() for future in submitted.pop(row)]
            height = grid.core(row, 0).shape[0]
            yield (row, [data for data, _ in done],
                   np.concatenate([half for _, half in done], axis=1) if halves else None,
                   RowStats(grid.cols, grid.cols, height * grid.width))
    finally:  # stopped by a failure: the rows read ahead are not waited for
        for future in (future for futures in submitted.values() for future in futures):
            future.cancel()


def _runner_rows(plan: SlidePlan, slide: Slide, fn, start: int, stop: int, pool, halves: bool):
    """Rows of any transform through :class:`RowRunner` in this thread, their tiles encoded in ``pool``."""
    read = lambda box: slide.read(plan.level, box.y0, box.x0, *box.shape)  # noqa: E731
    for row, pixels, stats in RowRunner(plan.grid, read, fn, plan.skip_below).rows(start, stop):
        yield row, plan.codec.encode_row(pixels, pool), halve(pixels) if halves else None, stats


def row_runs(rows: list[int], size: int | None = None) -> list[tuple[int, int]]:
    """Consecutive rows as ``(start, stop)`` runs, each at most ``size`` rows long."""
    runs: list[tuple[int, int]] = []
    for row in rows:
        if runs and runs[-1][1] == row and (size is None or row - runs[-1][0] < size):
            runs[-1] = (runs[-1][0], row + 1)
        else:
            runs.append((row, row + 1))
    return runs


def finish_slide(plan: SlidePlan, options: SlideOptions, stream: StreamedPyramid | None = None) -> None:
    """Write the output from the store (pyramid or plain image), atomically, or wait for ``stream`` to
    have written it; remove the store."""
    writer = RowWriter(plan.store(), plan.shapes, plan.codec)
    if stream:
        stream.finish()
    elif options.format != PYRAMID:
        pixels = np.concatenate([writer.pixels(0, row) for row in range(plan.grid.rows)])
        write_image(plan.output, pixels, overwrite=True)
    else:
        writer.complete()
        write_pyramid(plan.output, writer.store.get, plan.shapes, plan.codec, plan.mpp)
    writer.store.remove()


def normalize_slide(source, output, transform: Transform, options: SlideOptions = SlideOptions(),
                    progress: Progress | None = None) -> SlideResult:
    """Normalize one slide (or image) into ``output`` (pyramidal OME-TIFF or a plain image) in this
    process, resuming from the tile rows a previous run finished."""
    start = time.perf_counter()
    stream = None
    # one reader (the cores sampled for the statistics are not read again) and one pool of threads
    with open_slide(source) as slide:
        plan = plan_slide(source, output, transform, options, slide)
        grid = plan.grid
        result = SlideResult(plan.source, plan.output, plan.level, grid.width, grid.height, len(grid),
                             notes=list(plan.notes))
        missing = plan.missing_rows()
        result.resumed = (grid.rows - len(missing)) * grid.cols
        if progress and result.resumed:
            progress(result.resumed, 0)
        if missing:
            with tile_pool() as pool:
                fn = slide_function(plan, transform, options, slide, pool)
                if len(missing) == grid.rows and options.format == PYRAMID:  # the output written as rows finish
                    stream = StreamedPyramid(plan.output, plan.store(), plan.shapes, plan.codec, plan.mpp)
                try:
                    for first, stop in row_runs(missing):
                        result.transformed += compute_rows(plan, fn, first, stop, progress, lower_levels=True,
                                                           slide=slide, stream=stream, pool=pool).transformed
                except BaseException:
                    if stream:
                        stream.stop()
                    raise
    finish_slide(plan, options, stream)
    result.seconds = time.perf_counter() - start
    return result
