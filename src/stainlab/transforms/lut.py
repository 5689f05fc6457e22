"""Colour histograms and lookup tables: how per-pixel transforms run at memory speed.

A per-pixel transform maps each RGB value to a new one; only its per-image parameters (the source's
stain matrix, LAB statistics...) depend on the rest of the image. So one pass builds the image's colour
histogram on a ``2**bits``-level lattice per channel, the transform is evaluated once per occupied
lattice cell (a few hundred thousand cells for a histology image instead of millions of pixels), and a
second pass gathers the result through the lookup table. With ``bits = 8`` every distinct colour is
its own cell and the result is exact; the default 7 bits evaluates each cell at the mean colour of its
pixels (exact for single-colour cells such as glass), so a pixel is off by at most one level per
channel before the map's gain (the test suite bounds the CIEDE2000 error).

Both passes are numba kernels with no per-pixel temporaries, so memory stays at input + output plus\nlattice-sized tables that each thread allocates once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

DEFAULT_BITS = 7


@njit(cache=True, nogil=True)
def _count_cells(pixels, shift, counts, sums, touched, with_sums):  # pragma: no cover - compiled
    """Add each pixel to its cell's count (and channel sums if ``with_sums``); list each cell the first
    time it is seen; return how many cells were seen."""
    bits = 8 - shift
    n = 0
    for i in range(pixels.shape[0]):
        cell = ((pixels[i, 0] >> shift) << (2 * bits)) | ((pixels[i, 1] >> shift) << bits) | (pixels[i, 2] >> shift)
        if counts[cell] == 0:
            touched[n] = cell
            n += 1
        counts[cell] += 1
        if with_sums:
            for c in range(3):
                sums[cell, c] += pixels[i, c]
    return n


class _Buffers(threading.local):
    """Per-thread lattice-sized arrays, allocated once and reused: a 256x256 tile then costs time in
    proportion to its pixels, not to the 2**21-cell lattice. Counts and sums are reset after each use."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[str, int], np.ndarray] = {}

    def get(self, kind: str, bits: int) -> np.ndarray:
        key = (kind, bits)
        if key not in self.arrays:
            cells = 1 << (3 * bits)
            if kind == "counts":
                self.arrays[key] = np.zeros(cells, dtype=np.int64)
            elif kind == "sums":  # channel sums, for each cell's mean colour (exact cells at 8 bits need none)
                self.arrays[key] = np.zeros((cells if bits < 8 else 1, 3), dtype=np.int64)
            else:
                self.arrays[key] = np.empty((cells, 4), dtype=np.uint8)
        return self.arrays[key]


_BUFFERS = _Buffers()


@njit(cache=True, parallel=True)
def _gather(pixels, shift, table, out):  # pragma: no cover - compiled
    """Look every pixel up; a cell whose 4th table column is set keeps the pixel's own value."""
    bits = 8 - shift
    for i in prange(pixels.shape[0]):
        cell = ((pixels[i, 0] >> shift) << (2 * bits)) | ((pixels[i, 1] >> shift) << bits) | (pixels[i, 2] >> shift)
        if table[cell, 3]:
            for c in range(3):
                out[i, c] = pixels[i, c]
        else:
            for c in range(3):
                out[i, c] = table[cell, c]


def _check_bits(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or not 4 <= bits <= 8:
        raise ValueError(f"lut_bits must be an integer from 4 to 8, got {bits!r}")
    return int(bits)


def cell_colors(cells: np.ndarray, bits: int) -> np.ndarray:
    """RGB value (float, 0-255) at the centre of each lattice cell index."""
    mask = (1 << bits) - 1
    shift = 8 - bits
    rgb = np.stack([(cells >> (2 * bits)) & mask, (cells >> bits) & mask, cells & mask], axis=1)
    return rgb.astype(np.float64) * (1 << shift) + ((1 << shift) - 1) / 2.0


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
        counts, sums = _BUFFERS.get("counts", bits), _BUFFERS.get("sums", bits)
        touched = np.empty(min(len(pixels), counts.size), dtype=np.int64)
        n = _count_cells(pixels, 8 - bits, counts, sums, touched, bits < 8)
        cells = touched[:n].copy()  # first-seen order; sorting would cost more than it buys
        weights = counts[cells].astype(np.float64)
        counts[cells] = 0
        if bits == 8:
            colors = cell_colors(cells, 8)
        else:
            colors = sums[cells] / weights[:, None]
            sums[cells] = 0
        return cls(cells, colors, weights, bits)

    @classmethod
    def merge(cls, histograms: list["ColorHistogram"]) -> "ColorHistogram":
        """Pool several histograms (e.g. several reference images) into one weighted colour set."""
        bits = {h.bits for h in histograms}
        if len(bits) != 1:
            raise ValueError("cannot merge histograms of different lattice sizes")
        if len(histograms) == 1:
            return histograms[0]
        b = bits.pop()
        all_cells = np.concatenate([h.cells for h in histograms])
        cells, inverse = np.unique(all_cells, return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([h.counts for h in histograms]))
        return cls(cells, cell_colors(cells, b), counts, b)


def apply_table(image: np.ndarray, histogram: ColorHistogram, mapped: np.ndarray,
                keep: np.ndarray | None = None) -> np.ndarray:
    """Write ``mapped`` (uint8 (M, 3), one row per occupied cell) through every pixel of ``image``;
    pixels of cells flagged in ``keep`` (bool (M,)) keep their own value, byte for byte."""
    table = _BUFFERS.get("table", histogram.bits)  # only this image's cells are written, then read
    table[histogram.cells, :3] = mapped
    table[histogram.cells, 3] = 0 if keep is None else keep
    out = np.empty_like(image)
    _gather(image.reshape(-1, 3), 8 - histogram.bits, table, out.reshape(-1, 3))
    return out


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Round float RGB to uint8, clipping to [0, 255] and mapping NaN to 0 (never wraps around)."""
    rgb = np.nan_to_num(np.asarray(rgb, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
