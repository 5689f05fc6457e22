"""The small-image path of per-pixel transforms: tiles of a training pipeline at full speed.

The lookup-table engine (:mod:`stainlab.transforms.lut`) pays for lattice-sized tables, which only large
images amortise: on a 256 x 256 tile most of its time went to cache misses in a 2**21-cell lattice and
to evaluating the map once per occupied cell, nearly once per pixel. Images of at most
``SMALL_IMAGE_PIXELS`` pixels take this path instead:

- per-image statistics on every pixel up to ``STATS_SAMPLE`` pixels, above that on an evenly strided
  sample (:func:`stats_sample`): by compiled passes (:mod:`stainlab.color.pixels`) for Macenko and
  Ruifrok (percentiles as exact order statistics), and from the sample's colour histogram at
  ``stats_bits`` for the rest; always on every pixel for Reinhard (one vectorized pass of sums,
  :mod:`stainlab.color.lab_pixels`, cheaper than a sample read row by row) and for the per-channel
  methods (per-level channel counts, :mod:`stainlab.transforms.channels`: one pass, exact);
- the map by a compiled per-pixel kernel where the method has one (Macenko, Ruifrok, Vahadane and
  ``linear-ot`` in optical density, Reinhard and ``reinhard-split`` in CIELAB, grayscale in integer
  luminance), by three exact 256-entry tables where the map is per channel
  (``separable``), or otherwise evaluated at the corners of the occupied cells of a 32-level lattice
  and interpolated tetrahedrally between them (as colour-management engines apply 3-D tables: four
  corners a pixel, every map here is smooth on a cell 8 levels wide).

The compiled per-pixel kernels cost the same per pixel at any size, so methods that have one
(``PixelTransform.kernel_maps``) map larger images through them too, their statistics from a sample of
``LARGE_IMAGE_SAMPLE`` pixels, and the per-channel methods map them through their three exact tables,
their statistics from the level counts of every pixel; only the other methods build a lookup table for
those.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, prange

from stainlab.color.pixels import channel_map, parts, slice_bounds, sliced
from stainlab.transforms.lut import ColorHistogram, to_uint8

SMALL_IMAGE_PIXELS = 1 << 20
"""Images of at most this many pixels (1024 x 1024) take the small-image path."""
STATS_SAMPLE = 1 << 15
MAX_STRIDE = 5
"""Per-image statistics of a small image are taken on every pixel up to ``STATS_SAMPLE`` pixels (a
128 x 181 tile), above that on an evenly strided sample of about ``STATS_SAMPLE`` pixels but never fewer
than one in ``MAX_STRIDE``: a third of a 256 x 256 tile, a fifth of larger ones, as the issue asks
(statistics cheap on a tile, from a sample). On the CMU-1 region's 256 px tiles Macenko then took 1.30
ms a tile against 2.19 on every pixel, and its output moved 0.25 mean CIEDE2000 from the exact path
(0.002 before; the worst of 32 tiles 0.52), nearly all of it from the robust maxima of the
concentrations (the 99th percentile of a third of the tissue); 512 px tiles moved 0.16 with a fifth
as with a third. Every stride here is odd (:func:`odd_step`): an even one over an image of even
width takes the same columns in every row, and JPEG's 2 x 2 chroma and 8 x 8 blocks make those columns
differ from the rest (on the CMU-1 region strides of 2, 4, 8 and 16 all put the eosin robust maximum 10%
above every pixel's, odd strides and random samples within 4%)."""
LARGE_IMAGE_SAMPLE = 1 << 20
"""The per-image statistics of a larger image, or of a whole slide's sample, are taken as from a small
image of at most this many of its pixels, evenly strided (:func:`strided`; of those, a fifth or more by
``MAX_STRIDE``). On the 6.6 MPix CMU-1 region Macenko's lookup table then lands 0.072 CIEDE2000 from the
exact path (0.098 from the colour histogram); with 2**18 the sample's eosin robust maximum was 7% high
and the output 0.36 off."""
CORNER_BITS = 5
_SIDE = (1 << CORNER_BITS) + 1
_POSITION = np.arange(256) * ((1 << CORNER_BITS) / 255.0)   # corners at k * 255 / 32, k = 0..32
_CELL = np.minimum(_POSITION.astype(np.int64), (1 << CORNER_BITS) - 1)
_FRACTION = _POSITION - _CELL


def stats_sample(pixels: np.ndarray) -> np.ndarray:
    """About ``STATS_SAMPLE`` of the ``(M, 3)`` pixels, evenly strided by an odd step (all of them when
    few), but at least one in ``MAX_STRIDE``. Of pixels that lie together (a tile) a view: the kernels read
    it in place (copying a third of a 512 x 512 tile took longer than its light estimate). Of pixels that
    are themselves strided over a larger image (its :func:`strided` sample) a compact copy: the passes that
    follow then read it from the caches instead of touching most of the image's memory each (a Macenko fit
    of the CMU-1 region, its memory out of the caches, 12.2 against 7.2 ms)."""
    step = min(odd_step(len(pixels), STATS_SAMPLE), MAX_STRIDE)
    if step == 1:
        return pixels
    if pixels.flags.c_contiguous:
        return pixels[::step]
    out = np.empty((-(-len(pixels) // step), 3), np.uint8)
    _take_every(pixels, 0, step, out, 0)
    return out


def strided(pixels: np.ndarray, most: int) -> np.ndarray:
    """At most ``most`` of the ``(M, 3)`` pixels, evenly strided, as a view (all of them when few)."""
    step = odd_step(len(pixels), most)
    return pixels if step == 1 else pixels[::step]


def odd_step(count: int, most: int) -> int:
    """The smallest odd stride that takes at most ``most`` of ``count`` pixels (see ``MAX_STRIDE``)."""
    return -(-count // most) | 1


def strided_pixels(images: list[np.ndarray], most: int, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """At most ``most`` pixels of the images, evenly strided over them all as if they were one (a 64-tile
    sample has 16 M) by an odd step (:func:`odd_step`), as one contiguous
    ``(M, 1, 3)`` array; the images are not joined first. ``pool``: the images are picked from in its
    threads (each image's first pixel and place in the output are known beforehand)."""
    sizes = [image.shape[0] * image.shape[1] for image in images]
    total = sum(sizes)
    step = odd_step(total, most)
    out = np.empty((-(-total // step), 1, 3), np.uint8)
    offsets = np.cumsum([0, *sizes[:-1]], dtype=np.int64)
    firsts = (-offsets) % step
    placed = -(-offsets // step)  # pixels of the images before: those at multiples of step
    picks = [(image.reshape(-1, 3), int(first), step, out[:, 0], int(at))
             for image, first, at in zip(images, firsts, placed)]
    if pool:
        for future in [pool.submit(_take_every, *pick) for pick in picks]:
            future.result()
    else:
        for pick in picks:
            _take_every(*pick)
    return out


@njit(cache=True, nogil=True)
def _take_every(pixels, first, step, out, taken):  # pragma: no cover - compiled
    """Copy ``pixels[first::step]`` into ``out`` from row ``taken`` on; return the rows then filled
    (NumPy's copy of such a view moves three bytes at a time: 5 ms for a 64-tile sample, against 1)."""
    for i in range(first, pixels.shape[0], step):
        out[taken, 0], out[taken, 1], out[taken, 2] = pixels[i, 0], pixels[i, 1], pixels[i, 2]
        taken += 1
    return taken


def histogram_source(t, image: np.ndarray, sample: bool = True):
    """Per-image parameters of ``t`` from the colour histogram of a small image (of a sample of it with
    ``sample``), at the method's ``stats_bits``; raises :class:`~stainlab.errors.NoTissueError` as
    ``t._source`` does."""
    pixels = image.reshape(-1, 3)
    hist = ColorHistogram.of((stats_sample(pixels) if sample else pixels).reshape(-1, 1, 3), t.stats_bits)
    return t._source(hist.colors, hist.counts)


def channel_tables(t, image: np.ndarray, source) -> np.ndarray:
    """A per-channel map (``t.separable``) through three exact 256-entry tables, by one compiled pass
    (:func:`~stainlab.color.pixels.channel_map`) that also keeps the pixels ``t`` keeps (darkest
    channel at least ``t._keep_below``)."""
    levels = np.repeat(np.arange(256.0)[:, None], 3, axis=1)
    tables = to_uint8(t._map(levels, source)).T
    return channel_map(image.reshape(-1, 3), tables, t._keep_below).reshape(image.shape)


@njit(cache=True, nogil=True)
def _corners(cells, mark, listed):  # pragma: no cover - compiled
    """The corners (indices on the 33^3 grid) of the occupied 32-level cells, each listed once."""
    top = (1 << CORNER_BITS) - 1
    n = 0
    for cell in cells:
        r, g, b = (cell >> (2 * CORNER_BITS)) & top, (cell >> CORNER_BITS) & top, cell & top
        for dr in range(2):
            for dg in range(2):
                for db in range(2):
                    k = ((r + dr) * _SIDE + g + dg) * _SIDE + b + db
                    if not mark[k]:
                        mark[k] = True
                        listed[n] = k
                        n += 1
    return n


@sliced(fastmath=True, error_model="numpy")
def _tetrahedral(pixels, cell, fraction, table, out, parts):  # pragma: no cover - compiled
    """Each pixel from the four corners of the tetrahedron of its cell that holds it: walk from the
    cell's low corner along the channels in the order of their fractions (largest first)."""
    s1, s2 = _SIDE, _SIDE * _SIDE
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src, dst = pixels[start:stop], out[start:stop]
        for i in range(stop - start):
            r, g, b = src[i, 0], src[i, 1], src[i, 2]
            base = (cell[r] * _SIDE + cell[g]) * _SIDE + cell[b]
            fr, fg, fb = fraction[r], fraction[g], fraction[b]
            if fr >= fg:
                if fg >= fb:
                    a1, a2, w1, w2, w3 = s2, s2 + s1, fr, fg, fb
                elif fr >= fb:
                    a1, a2, w1, w2, w3 = s2, s2 + 1, fr, fb, fg
                else:
                    a1, a2, w1, w2, w3 = 1, s2 + 1, fb, fr, fg
            elif fr >= fb:
                a1, a2, w1, w2, w3 = s1, s2 + s1, fg, fr, fb
            elif fg >= fb:
                a1, a2, w1, w2, w3 = s1, s1 + 1, fg, fb, fr
            else:
                a1, a2, w1, w2, w3 = 1, s1 + 1, fb, fg, fr
            a3 = s2 + s1 + 1
            for c in range(3):
                v0, v1, v2, v3 = table[base, c], table[base + a1, c], table[base + a2, c], table[base + a3, c]
                v = v0 + w1 * (v1 - v0) + w2 * (v2 - v1) + w3 * (v3 - v2)
                dst[i, c] = np.uint8(min(max(v + 0.5, 0.0), 255.0))


def interpolated(t, image: np.ndarray, source) -> np.ndarray:
    """``t._map`` evaluated at the corners of the occupied 32-level cells and interpolated
    tetrahedrally; pixels that ``t._keep`` flags keep their bytes."""
    hist = ColorHistogram.of(image, CORNER_BITS)
    mark = np.zeros(_SIDE ** 3, dtype=np.bool_)
    listed = np.empty(min(_SIDE ** 3, 8 * len(hist.cells)), dtype=np.int64)
    corners = listed[:_corners(hist.cells, mark, listed)]
    levels = np.stack([corners // (_SIDE * _SIDE), corners // _SIDE % _SIDE, corners % _SIDE], axis=1)
    table = np.zeros((_SIDE ** 3, 3))
    table[corners] = np.clip(np.nan_to_num(t._map(levels * (255.0 / (1 << CORNER_BITS)), source)), 0.0, 255.0)
    out = np.empty_like(image)
    pixels = image.reshape(-1, 3)
    _tetrahedral(pixels, _CELL, _FRACTION, table, out.reshape(-1, 3), parts(len(pixels)))
    return keep_flagged(t, image, out)


def keep_flagged(t, image: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` with the pixels that ``t._keep`` flags (evaluated per pixel) restored from ``image``."""
    keep = t._keep(image.reshape(-1, 3))
    if keep is not None:
        out.reshape(-1, 3)[keep] = image.reshape(-1, 3)[keep]
    return out
