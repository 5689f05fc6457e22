"""Colour histograms and lookup tables: how per-pixel transforms run at memory speed.

A per-pixel transform maps each RGB value to a new one; only its per-image parameters (the source's
stain matrix, LAB statistics...) depend on the rest of the image. So one pass builds the image's colour
histogram on a ``2**bits``-level lattice per channel, the transform is evaluated once per occupied
lattice cell (a few hundred thousand cells for a histology image instead of millions of pixels), and a
second pass gathers the result through the lookup table. With ``bits = 8`` every distinct colour is
its own cell and the result is exact; the default 7 bits evaluates each cell at the mean colour of its
pixels (exact for single-colour cells such as glass), so a pixel is off by at most one level per
channel before the map's gain (the test suite bounds the CIEDE2000 error).

Both passes are numba kernels with no per-pixel temporaries, so memory stays at input + output plus
lattice-sized tables that each thread allocates once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numba
from numba import njit, prange

from stainlab.color.od import LinearODMap, od_of_levels

DEFAULT_BITS = 7
_COUNT_THREADS = min(numba.config.NUMBA_NUM_THREADS, 4)  # each holds a lattice-sized accumulator
_PARALLEL_PIXELS = 1 << 20                                # smaller images are counted by one thread
_MAX_PASS_PIXELS = 1 << 30                                # int32 counts and offset sums stay exact


@lru_cache(maxsize=None)
def cell_index(bits: int) -> np.ndarray:
    """``(3, 256)`` int64, read-only: each channel's part of the lattice cell of a byte value on a
    ``bits``-level lattice, ``cell = index[0, r] | index[1, g] | index[2, b]`` (:func:`_cell`). Three
    reads of a table that stays in the first-level cache: in a loop that also looks the cells up,
    shifting by amounts known only at run time was 40% slower (the gathers shift in a loop of their own,
    :func:`_chunk_cells`)."""
    levels = np.arange(256, dtype=np.int64) >> (8 - bits)
    index = np.stack([levels << (2 * bits), levels << bits, levels])
    index.flags.writeable = False
    return index


@njit(cache=True, nogil=True, inline="always")
def _cell(index, r, g, b):  # pragma: no cover - compiled
    """The lattice cell of the byte colour (r, g, b) (see :func:`cell_index`)."""
    return index[0, r] | index[1, g] | index[2, b]


@njit(cache=True, nogil=True)
def _count_range(pixels, start, stop, index, shift, acc, touched):  # pragma: no cover - compiled
    """Accumulate pixels ``start:stop`` into their cells (:func:`cell_index`): ``acc[cell] = [count, R,
    G, B offset sums]`` (offsets of the pixel from the cell's lowest colour; count only when ``acc`` has
    one column); list each cell the first time it is seen; return how many."""
    low = (1 << shift) - 1
    with_sums = acc.shape[1] == 4
    n = 0
    for i in range(start, stop):
        cell = _cell(index, pixels[i, 0], pixels[i, 1], pixels[i, 2])
        if acc[cell, 0] == 0:
            touched[n] = cell
            n += 1
        acc[cell, 0] += 1
        if with_sums:
            for c in range(3):
                acc[cell, c + 1] += pixels[i, c] & low
    return n


@njit(cache=True, parallel=True)
def _count_cells(pixels, index, shift, acc, touched):  # pragma: no cover - compiled
    """:func:`_count_range` over ``len(acc)`` slices of the pixels in parallel, each into its own
    accumulator, then folded into ``acc[0]`` and ``touched[0]``; returns the number of cells."""
    parts = acc.shape[0]
    found = np.zeros(parts, dtype=np.int64)
    for p in prange(parts):
        start, stop = pixels.shape[0] * p // parts, pixels.shape[0] * (p + 1) // parts
        found[p] = _count_range(pixels, start, stop, index, shift, acc[p], touched[p])
    n = found[0]
    for p in range(1, parts):
        for j in range(found[p]):
            cell = touched[p, j]
            if acc[0, cell, 0] == 0:
                touched[0, n] = cell
                n += 1
            for c in range(acc.shape[2]):
                acc[0, cell, c] += acc[p, cell, c]
                acc[p, cell, c] = 0
    return n


@njit(cache=True, nogil=True)
def _pool_cells(cells, colors, weights, acc, touched):  # pragma: no cover - compiled
    """Weighted version of :func:`_count_cells` for colours already binned into ``cells``."""
    n = 0
    for i in range(cells.shape[0]):
        cell = cells[i]
        if acc[cell, 0] == 0:
            touched[n] = cell
            n += 1
        acc[cell, 0] += weights[i]
        for c in range(3):
            acc[cell, c + 1] += weights[i] * colors[i, c]
    return n


@njit(cache=True, nogil=True)
def _collect_pixels(acc, cells, shift, counts, colors):  # pragma: no cover - compiled
    """Counts and mean colours of ``cells`` from :func:`_count_range` sums; zero their rows."""
    bits = 8 - shift
    mask = (1 << bits) - 1
    for j in range(cells.shape[0]):
        row = acc[cells[j]]
        counts[j] = row[0]
        for c in range(3):
            lowest = ((cells[j] >> ((2 - c) * bits)) & mask) << shift
            colors[j, c] = lowest + (row[c + 1] / row[0] if acc.shape[1] == 4 else 0.0)
        row[:] = 0


@njit(cache=True, nogil=True)
def _collect_pooled(acc, cells, counts, colors):  # pragma: no cover - compiled
    """Counts and mean colours of ``cells`` from :func:`_pool_cells` sums; zero their rows."""
    for j in range(cells.shape[0]):
        row = acc[cells[j]]
        counts[j] = row[0]
        for c in range(3):
            colors[j, c] = row[c + 1] / row[0]
        row[:] = 0


def _fill(table: np.ndarray, cells: np.ndarray, mapped: np.ndarray, keep: np.ndarray | None) -> None:
    """Write ``mapped`` (uint8 (M, 3)) and ``keep`` (bool (M,) or None: none kept) into ``cells`` of ``table``."""
    _fill_table(table, cells, mapped, np.zeros(len(cells), np.uint8) if keep is None else keep.astype(np.uint8))


@njit(cache=True, nogil=True)
def _fill_table(table, cells, mapped, keep):  # pragma: no cover - compiled
    """Pack each cell's mapped colour and keep flag into its table word (see :func:`_gather_range`)."""
    for j in range(cells.shape[0]):
        table[cells[j]] = (np.uint32(mapped[j, 0]) | (np.uint32(mapped[j, 1]) << 8) | (np.uint32(mapped[j, 2]) << 16)
                           | (np.uint32(keep[j]) << 24))


@njit(cache=True, parallel=True)
def _fill_linear_od(table, cells, bits, od, matrix, light_out):  # pragma: no cover - compiled
    """:func:`_fill_table` of the centres of ``cells`` under a map linear in optical density, with
    ``od[c, level]`` each channel's optical density of the level's centre: the expression of
    :func:`stainlab.color.od._od_linear`, then rounded as :func:`to_uint8` rounds."""
    mask = (1 << bits) - 1
    for j in prange(cells.shape[0]):
        cell = cells[j]
        o0, o1, o2 = od[0, (cell >> (2 * bits)) & mask], od[1, (cell >> bits) & mask], od[2, cell & mask]
        word = np.uint32(0)
        for c in range(3):
            v = (light_out[c] + 1.0) * np.exp(-(o0 * matrix[0, c] + o1 * matrix[1, c] + o2 * matrix[2, c])) - 1.0
            word |= np.uint32(np.rint(min(max(v, 0.0), 255.0))) << (8 * c)
        table[cell] = word


@njit(cache=True, nogil=True)
def _mark_cells(pixels, index, seen):  # pragma: no cover - compiled
    """Flag the cell of every pixel of the flat RGB ``pixels`` in ``seen``."""
    for i in range(pixels.shape[0] // 3):
        seen[_cell(index, pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2])] = 1


def occupied_cells(images: list[np.ndarray], bits: int) -> np.ndarray:
    """The lattice cells (indices, ascending) that the pixels of uint8 RGB ``images`` fall in, the
    images marked in numba's thread count of threads, each thread's in flags of its own (threads
    setting flags in one array fight over its cache lines: no faster than one)."""
    threads = max(1, min(numba.get_num_threads(), len(images)))
    flags, index = np.zeros((threads, 1 << (3 * _check_bits(bits))), dtype=np.uint8), cell_index(bits)

    def mark(k: int) -> None:
        for image in images[k::threads]:
            _mark_cells(np.ascontiguousarray(image).reshape(-1), index, flags[k])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(mark, range(threads)))
    return _flagged_cells(flags, flags.view(np.uint64))


@njit(cache=True, nogil=True)
def _flagged_cells(flags, words):  # pragma: no cover - compiled
    """The cells (ascending) flagged in any row of ``flags``, skipping eight at a time through ``words``,
    the same memory read as ``uint64`` (``np.flatnonzero`` of a 2**21-cell lattice took 5 ms)."""
    found = np.empty(flags.shape[1], dtype=np.int64)
    n = 0
    for w in range(words.shape[1]):
        word = words[0, w]
        for k in range(1, words.shape[0]):
            word |= words[k, w]
        if word:
            for cell in range(8 * w, 8 * w + 8):
                flagged = False
                for k in range(flags.shape[0]):
                    flagged |= flags[k, cell] != 0
                if flagged:
                    found[n] = cell
                    n += 1
    return found[:n].copy()


class _Buffers(threading.local):
    """Per-thread lattice-sized arrays, allocated once and reused: a 256x256 tile then costs time in
    proportion to its pixels, not to the 2**21-cell lattice. Accumulators are zeroed after each use."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[str, int], np.ndarray] = {}

    def get(self, kind: str, bits: int) -> np.ndarray:
        key = (kind, bits)
        if key not in self.arrays:
            cells = 1 << (3 * bits)
            if kind == "pixels":  # count and channel sums per cell (exact cells at 8 bits need no sums),
                # one accumulator per counting thread
                # int32 keeps a cell in 16 bytes; `of` bounds the pixels of one pass to stay exact
                self.arrays[key] = np.zeros((_COUNT_THREADS, cells, 4 if bits < 8 else 1), dtype=np.int32)
            elif kind == "pool":
                self.arrays[key] = np.zeros((cells, 4), dtype=np.float64)
            else:
                self.arrays[key] = np.empty(cells, dtype=np.uint32)
        return self.arrays[key]


_BUFFERS = _Buffers()


_NOT_READY = 255  # keep flag of a cell not evaluated yet (0: mapped, 1: keeps the pixel)


_GATHER_CHUNK = 4096  # pixels whose cells a gather works out at once (16 KiB: the first-level cache)


@njit(cache=True, nogil=True, inline="always")
def _chunk_cells(pixels, count, bits, cells):  # pragma: no cover - compiled
    """``cells[:count]``: the lattice cells of the first ``count`` pixels of the flat RGB ``pixels`` (those
    of :func:`cell_index`), by shifts in a loop of its own, which the compiler vectorizes (with the
    lookups in the same loop it does not: a 512 x 512 gather took 1.0 ms that way, 0.5 in two loops)."""
    shift, green, red = np.uint32(8 - bits), np.uint32(bits), np.uint32(2 * bits)
    for i in range(count):
        cells[i] = (((np.uint32(pixels[3 * i]) >> shift) << red) | ((np.uint32(pixels[3 * i + 1]) >> shift) << green)
                    | (np.uint32(pixels[3 * i + 2]) >> shift))


@njit(cache=True, nogil=True)
def _gather_range(pixels, start, stop, bits, table, out, plain=False):  # pragma: no cover - compiled
    """Look pixels ``start:stop`` of the flat RGB arrays up on the ``bits`` lattice, a chunk at a time
    (:func:`_chunk_cells`). A table word packs a cell's mapped colour (bytes 0-2) and its keep flag (byte
    3; 1: the pixel keeps its own value), so a pixel costs one memory access. Stops at the first pixel
    whose cell is not evaluated yet and returns its index (-1: all done). ``plain``: every cell the
    pixels meet is evaluated and none keeps its pixels, so no flag is tested (a 512 x 512 tile 0.43-0.63
    against 0.58-0.71 ms)."""
    cells = np.empty(_GATHER_CHUNK, np.uint32)
    for first in range(start, stop, _GATHER_CHUNK):
        count = min(_GATHER_CHUNK, stop - first)
        src, dst = pixels[3 * first:3 * (first + count)], out[3 * first:3 * (first + count)]
        _chunk_cells(src, count, bits, cells)
        for i in range(count):
            word = table[cells[i]]
            flag = 0 if plain else word >> 24
            if flag == 0:
                dst[3 * i], dst[3 * i + 1], dst[3 * i + 2] = word & 255, (word >> 8) & 255, (word >> 16) & 255
            elif flag == 1:
                dst[3 * i], dst[3 * i + 1], dst[3 * i + 2] = src[3 * i], src[3 * i + 1], src[3 * i + 2]
            else:
                return first + i
    return -1


_GATHER_PARTS = 64  # slices of the pixels handed to numba's threads
_CHUNK_CELLS = 1 << 20  # cells evaluated per call when a whole table is filled


@njit(cache=True, parallel=True)
def _gather(pixels, bits, table, out, plain):  # pragma: no cover - compiled
    """:func:`_gather_range` over all pixels, slices in parallel (every cell they use evaluated; with
    ``plain``, no cell keeps its pixels either)."""
    n = pixels.shape[0] // 3
    for p in prange(_GATHER_PARTS):
        _gather_range(pixels, n * p // _GATHER_PARTS, n * (p + 1) // _GATHER_PARTS, bits, table, out, plain)


@njit(cache=True, nogil=True)
def _missing_cells(pixels, index, table, seen):  # pragma: no cover - compiled
    """The cells of the flat RGB ``pixels`` not evaluated yet in ``table``, each once (``seen``: a
    zeroed scratch flag per cell, zeroed again on return)."""
    n_pixels = pixels.shape[0] // 3
    found = np.empty(min(n_pixels, table.shape[0]), dtype=np.int64)
    n = 0
    for i in range(n_pixels):
        cell = _cell(index, pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2])
        if table[cell] >> 24 == _NOT_READY and not seen[cell]:
            seen[cell] = 1
            found[n] = cell
            n += 1
    for j in range(n):
        seen[found[j]] = 0
    return found[:n]


def _check_bits(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or not 4 <= bits <= 8:
        raise ValueError(f"lut_bits must be an integer from 4 to 8, got {bits!r}")
    return int(bits)


@dataclass(frozen=True)
class ColorHistogram:
    """Occupied lattice cells of one or more images, with their colours and pixel counts."""

    cells: np.ndarray    # int64 cell indices, unique within one image
    colors: np.ndarray   # float64 (M, 3) mean RGB of each cell's pixels (exact colours at 8 bits)
    counts: np.ndarray   # float64 (M,) pixel counts
    bits: int

    @classmethod
    def of(cls, image: np.ndarray, bits: int = DEFAULT_BITS) -> "ColorHistogram":
        """Histogram of a uint8 HxWx3 image (``bits = 8``: every distinct colour exactly)."""
        bits = _check_bits(bits)
        pixels = image.reshape(-1, 3)
        if len(pixels) > _MAX_PASS_PIXELS:  # int32 accumulators: pool histograms of row blocks
            rows = max(1, _MAX_PASS_PIXELS // image.shape[1])
            return cls.merge([cls.of(image[r:r + rows], bits) for r in range(0, image.shape[0], rows)])
        acc = _BUFFERS.get("pixels", bits)
        if len(pixels) < _PARALLEL_PIXELS:
            acc = acc[:1]
        touched = np.empty((len(acc), min(len(pixels), acc.shape[1])), dtype=np.int64)
        cells = touched[0, :_count_cells(pixels, cell_index(bits), 8 - bits, acc, touched)].copy()  # first-seen order
        counts, colors = np.empty(len(cells)), np.empty((len(cells), 3))
        _collect_pixels(acc[0], cells, 8 - bits, counts, colors)
        return cls(cells, colors, counts, bits)

    def coarsened(self, bits: int) -> "ColorHistogram":
        """The same pixels on a coarser lattice (cells merged, mean colours and counts pooled)."""
        bits = _check_bits(bits)
        if bits >= self.bits:
            return self
        drop = self.bits - bits
        mask = (1 << self.bits) - 1
        r, g, b = (self.cells >> (2 * self.bits)) & mask, (self.cells >> self.bits) & mask, self.cells & mask
        target = ((r >> drop) << (2 * bits)) | ((g >> drop) << bits) | (b >> drop)
        acc = _BUFFERS.get("pool", bits)
        touched = np.empty(min(len(target), acc.shape[0]), dtype=np.int64)
        cells = touched[:_pool_cells(target, self.colors, self.counts, acc, touched)].copy()
        counts, colors = np.empty(len(cells)), np.empty((len(cells), 3))
        _collect_pooled(acc, cells, counts, colors)
        return ColorHistogram(cells, colors, counts, bits)

    @classmethod
    def merge(cls, histograms: list["ColorHistogram"]) -> "ColorHistogram":
        """Pool several histograms (e.g. several reference images) into one weighted colour set."""
        bits = {h.bits for h in histograms}
        if len(bits) != 1:
            raise ValueError("cannot merge histograms of different lattice sizes")
        if len(histograms) == 1:
            return histograms[0]
        cells, inverse = np.unique(np.concatenate([h.cells for h in histograms]), return_inverse=True)
        counts = np.concatenate([h.counts for h in histograms])
        colors = np.concatenate([h.colors for h in histograms]) * counts[:, None]
        total = np.bincount(inverse, weights=counts)
        means = np.stack([np.bincount(inverse, weights=colors[:, c]) for c in range(3)], axis=1)
        return cls(cells, means / total[:, None], total, bits.pop())


def apply_table(image: np.ndarray, histogram: ColorHistogram, mapped: np.ndarray,
                keep: np.ndarray | None = None) -> np.ndarray:
    """Write ``mapped`` (uint8 (M, 3), one row per occupied cell) through every pixel of ``image``;
    pixels of cells flagged in ``keep`` (bool (M,)) keep their own value, byte for byte."""
    table = _BUFFERS.get("table", histogram.bits)  # only this image's cells are written, then read
    _fill(table, histogram.cells, mapped, keep)
    out = np.empty_like(image)
    _gather(image.reshape(-1), histogram.bits, table, out.reshape(-1), keep is None or not keep.any())
    return out


class LatticeTable:
    """A lookup table over the cells of the lattice, each cell evaluated at its centre colour (``bits = 8``:
    every colour exactly), applied by the same gather kernel as :func:`apply_table`. It serves where one
    map must hold for many images, such as every tile of a whole slide.

    Cells are evaluated when an image first needs them, not all ``2**(3 bits)`` at once: a slide uses a
    small part of the colour cube (tens of thousands of 7-bit cells of two million), so a small slide
    does not pay for the whole lattice, and every tile still gets exactly the map the whole lattice would
    give (a cell's value depends on nothing but the cell). Calls from several threads are safe: the
    gather and the search for missing cells run without the GIL, cells are evaluated under a lock.

    ``rows(colors)`` maps float RGB (M, 3) to ``(uint8 (M, 3), bool (M,) keep or None)``, as
    :meth:`stainlab.transforms.base.PixelTransform.color_table` does. A map that is linear in optical
    density can be given as ``linear`` (:class:`~stainlab.color.od.LinearODMap`) instead: its cells are
    then filled by one compiled pass from each channel's optical density of the lattice's levels (the
    same values as ``rows`` would give, bit for bit, without per-cell logarithms and temporaries: the
    whole 7-bit lattice in about a quarter of the time)."""

    def __init__(self, bits: int, rows=None, linear: LinearODMap | None = None) -> None:
        if (rows is None) == (linear is None):
            raise ValueError("a LatticeTable needs rows or a linear map, not both")
        self.bits, self.rows = _check_bits(bits), rows
        self._linear = None if linear is None else self._linear_parts(linear)
        self.table = np.full(1 << (3 * self.bits), _NOT_READY << 24, dtype=np.uint32)
        self._seen = np.zeros(len(self.table), dtype=np.uint8)
        self._lock = threading.Lock()
        self._plain = False  # every cell evaluated and none keeps its pixels: the gather tests no flag

    def __call__(self, image: np.ndarray, parallel: bool = True) -> np.ndarray:
        """``image`` through the table; ``parallel`` False gathers in the calling thread only (for
        callers that run images in threads of their own)."""
        image = np.ascontiguousarray(image)
        pixels = image.reshape(-1)
        out = np.empty_like(image)
        if self._plain and not parallel:
            _gather_range(pixels, 0, len(pixels) // 3, self.bits, self.table, out.reshape(-1), True)
            return out
        if parallel:
            if not self._plain:
                self._evaluate(pixels)
            _gather(pixels, self.bits, self.table, out.reshape(-1), self._plain)
            return out
        start = 0
        while (start := _gather_range(pixels, start, len(pixels) // 3, self.bits, self.table, out.reshape(-1))) >= 0:
            self._evaluate(pixels[3 * start:])  # met a cell not evaluated yet: the rest's new cells at once
        return out

    def _evaluate(self, pixels: np.ndarray) -> None:
        """Fill the cells of the flat RGB ``pixels`` not evaluated yet."""
        with self._lock:
            self.prepare(_missing_cells(pixels, cell_index(self.bits), self.table, self._seen))

    def _linear_parts(self, linear: LinearODMap) -> tuple:
        """The arguments of :func:`_fill_linear_od` after ``bits``: the levels' optical densities (the
        centres :meth:`prepare` evaluates cells at), the matrix and the output light."""
        shift = 8 - self.bits
        centres = (np.arange(1 << self.bits) << shift) + ((1 << shift) - 1) / 2.0
        return (od_of_levels(centres, linear.light, linear.clip), np.ascontiguousarray(linear.matrix, dtype=np.float64),
                np.broadcast_to(np.asarray(linear.light_out, dtype=np.float64), (3,)).copy())

    def prepare(self, cells: np.ndarray | None = None) -> None:
        """Evaluate ``cells`` (int cell indices, each once; None: every cell) now, e.g. the colours of a
        sample."""
        if cells is None:
            for start in range(0, len(self.table), _CHUNK_CELLS):
                self.prepare(np.arange(start, min(start + _CHUNK_CELLS, len(self.table))))
            self._plain = not np.any(self.table >> 24)
            return
        cells = cells[self.table[cells] >> 24 == _NOT_READY]
        if len(cells) and self._linear is not None:
            _fill_linear_od(self.table, cells, self.bits, *self._linear)
        elif len(cells):
            shift, mask = 8 - self.bits, (1 << self.bits) - 1
            levels = np.stack([(cells >> (2 * self.bits)) & mask, (cells >> self.bits) & mask, cells & mask], axis=1)
            mapped, keep = self.rows((levels << shift) + ((1 << shift) - 1) / 2.0)
            _fill(self.table, cells, mapped, keep)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Round float RGB to uint8, clipping to [0, 255] and mapping NaN to 0 (never wraps around)."""
    rgb = np.nan_to_num(np.asarray(rgb, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
