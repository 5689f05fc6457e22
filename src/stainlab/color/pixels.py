"""Compiled per-pixel maps and statistics of uint8 RGB pixels, driven by tables instead of logarithms
and powers.

An 8-bit channel has 256 values, so its optical density (:mod:`stainlab.color.od`) is a table of 256
entries; a function applied after a linear step (``256 exp(-s) - 1`` back from optical density) is read
from a fine table at the nearest sample, its step chosen so that the result is within a few hundredths
of a grey level of the formula. A pixel then costs a few table reads and multiply-adds, which is what
makes a 256 x 256 tile take a millisecond or two on a slow core (the small-image path of
:mod:`stainlab.transforms.small`). The CIELAB passes, built the same way, are in
:mod:`stainlab.color.lab_pixels`.

Every kernel takes ``(M, 3)`` uint8 pixels and splits them into ``parts`` slices that run in parallel
(:func:`parts`: one, on the calling thread, for a few thousand pixels or with one thread; see
:func:`sliced`).
Optical density is read from a per-channel table against the image's light (:func:`od_table`; white
unless given, :mod:`stainlab.color.light`). Tissue is the rule of :mod:`stainlab.color.tissue` (optical
density above ``beta`` in any channel), which on bytes is a channel under its limit
(:func:`tissue_limits`; against white, ``min(R, G, B) < tissue_limit(beta)``). A tissue bound ``below``
is one byte limit for all channels or three.
"""

from __future__ import annotations

import types
from functools import lru_cache, wraps
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from stainlab.color.od import BACKGROUND, MAX_OD, LinearODMap, rgb_to_od
from stainlab.color.stains import HE_UNIT, ordered_rows
from stainlab.threads import spare_cores

OD_OF_BYTE = rgb_to_od(np.arange(256.0))
"""Optical density of each 8-bit value (``-ln((v + 1) / 256)``)."""
_WHITE_TABLE = np.ascontiguousarray(np.repeat(OD_OF_BYTE[None, :], 3, axis=0))
_WHITE_TABLE.flags.writeable = False

# 256 exp(-s) - 1 for s in [0, ln 256], already rounded to bytes, every 1/16384: |f'| <= 256 levels, so
# a pixel is off the formula's rounding by one level only within 1/64 level of a rounding boundary.
_RENDER_STEPS = 16384
_RENDER = np.rint((BACKGROUND + 1.0) * np.exp(-np.arange(int(MAX_OD * _RENDER_STEPS) + 2) / _RENDER_STEPS)
                  - 1.0).clip(0, 255).astype(np.uint8)


def tissue_limit(beta: float) -> int:
    """The number of byte values whose optical density exceeds ``beta``: a pixel is tissue exactly when
    its darkest channel is below it."""
    return int(np.count_nonzero(OD_OF_BYTE > beta))


def od_table(light=None, clip: bool = True) -> np.ndarray:
    """``(3, 256)``, read-only: the optical density of each byte value in each channel against ``light``
    (the RGB of the glass, :mod:`stainlab.color.light`; ``None``: white), never negative unless ``clip``
    is off. The last few are kept, since one image's kernels read the same table."""
    if light is None and clip:
        return _WHITE_TABLE
    light = np.asarray(light, dtype=np.float64)
    return _od_table((light if light.size == 3 else np.full(3, light)).tobytes(), clip)


_BYTE_PLUS_ONE = np.arange(256.0) + 1.0


@lru_cache(maxsize=8)
def _od_table(light: bytes, clip: bool) -> np.ndarray:
    """:func:`~stainlab.color.od.rgb_to_od`'s arithmetic, ``-ln((v + 1) / (I0 + 1))``, done in place on the
    table: the same values in half the time, which a tile pays for each new light."""
    table = _BYTE_PLUS_ONE[None, :] / (np.frombuffer(light)[:, None] + 1.0)
    np.log(table, out=table)
    np.negative(table, out=table)
    if clip:
        np.maximum(table, 0.0, out=table)
    table.flags.writeable = False
    return table


def tissue_limits(beta: float, light=None) -> np.ndarray:
    """Per channel, the number of byte values whose optical density against ``light`` exceeds ``beta``:
    a pixel is tissue exactly when some channel is below its limit (the rule of
    :mod:`stainlab.color.tissue` judged against the image's own glass)."""
    return _count_above(od_table(light), float(beta))


@njit(cache=True, nogil=True)
def _count_above(table, beta):  # pragma: no cover - compiled
    limits = np.zeros(table.shape[0], dtype=np.int64)
    for c in range(table.shape[0]):
        for v in range(table.shape[1]):
            limits[c] += table[c, v] > beta
    return limits


def _limits(below) -> np.ndarray:
    """A tissue bound as the kernels take it: one byte limit per channel (a single number applies to all)."""
    limits = np.empty(3, dtype=np.int64)
    limits[:] = below
    return limits


def _shift(light_out) -> np.ndarray:
    """The optical density (against white) of the light an output is rendered under, added before the
    rendering table (which is against white): ``(I0 + 1) exp(-s) - 1 = 256 exp(-(s + OD(I0))) - 1``.
    Read-only; kept for the last few lights (an output's is its reference's: one per fitted transform)."""
    return _NO_SHIFT if light_out is None else _shift_of(np.asarray(light_out, dtype=np.float64).tobytes())


@lru_cache(maxsize=8)
def _shift_of(light: bytes) -> np.ndarray:
    shift = rgb_to_od(np.frombuffer(light))
    shift.flags.writeable = False
    return shift


_NO_SHIFT = np.zeros(3)
_NO_SHIFT.flags.writeable = False


PARALLEL_PIXELS = 1 << 13
"""Kernels over fewer pixels than this (about 90 x 90) run as one slice on the calling thread: on an idle
two-core machine waking numba's thread pool and joining it costs about what the second slice saves there
(48 to 96 px tiles), and above it the threads win (Reinhard's 256 px tile: 1.2 ms against 2.3 on one
thread). Where other processes keep cores busy the join waits for a thread the system has put aside,
milliseconds a kernel: kernels then take only the cores left spare (:func:`stainlab.threads.spare_cores`),
and with one every kernel runs on the calling thread."""


def parts(pixels: int) -> int:
    """How many slices a kernel over ``pixels`` pixels runs in parallel: numba's current thread count or
    the spare cores, whichever is fewer; one under ``PARALLEL_PIXELS``."""
    return 1 if pixels < PARALLEL_PIXELS else min(numba.get_num_threads(), spare_cores())


def sliced(**options):
    """Decorator: compile a kernel whose last argument is ``parts`` (its ``prange`` over as many slices)
    twice, with numba's threads and without them (``prange`` is then ``range``), and run the latter for
    one slice, which then never wakes the thread pool. Both are cached, the serial one under its own
    name; compiled code calls them as the wrapper's ``threaded`` and ``serial``."""
    def compile_both(kernel):
        threaded = njit(cache=True, parallel=True, **options)(kernel)
        alone = types.FunctionType(kernel.__code__, kernel.__globals__, kernel.__name__ + "_serial",
                                   kernel.__defaults__, kernel.__closure__)
        alone.__qualname__ = kernel.__qualname__ + "_serial"
        serial = njit(cache=True, nogil=True, **options)(alone)

        @wraps(kernel)
        def run(*args):
            return (threaded if args[-1] > 1 else serial)(*args)
        run.threaded, run.serial = threaded, serial      # for compiled callers, which choose alike
        return run
    return compile_both


@njit(cache=True, nogil=True, inline="always")
def slice_bounds(n, part, parts):  # pragma: no cover - compiled
    """The bounds of slice ``part`` of ``parts`` of ``n`` pixels. Kernels loop over views of their slice
    from zero: an index that is never negative spares numba's wraparound of every array access (a third
    of a map's time)."""
    return n * part // parts, n * (part + 1) // parts


@njit(cache=True, nogil=True, inline="always", fastmath=True, error_model="numpy")
def _nearest(table, steps, x):  # pragma: no cover - compiled
    """``table`` sampled every ``1/steps`` from 0, its nearest entry to ``x`` (held at both ends)."""
    return table[min(max(int(x * steps + 0.5), 0), table.shape[0] - 1)]


# -- maps ------------------------------------------------------------------------------------------
@sliced(fastmath=True, error_model="numpy")
def _od_linear(pixels, od_of_byte, matrix, light_out, out, parts):  # pragma: no cover - compiled
    """Output channel ``c`` is ``(I0 + 1) exp(-sum_k od_k matrix[k, c]) - 1``, the exponential of a sum
    being the product of one factor per input channel: ``factors[c, k, byte]`` (256 exponentials a
    channel pair, channel 0's times ``I0 + 1``), so a pixel costs nine reads from tables that stay in the
    first-level cache and six multiplications, rounded as the formula is (a quarter faster than summing
    table terms into an index of the rendering table, which is too large for that cache)."""
    factors = np.empty((3, 3, 256))
    for c in range(3):
        for k in range(3):
            for v in range(256):
                factors[c, k, v] = np.exp(min(max(-od_of_byte[k, v] * matrix[k, c], -700.0), 700.0))
        for v in range(256):
            factors[c, 0, v] *= light_out[c] + 1.0
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src, dst = pixels[start:stop], out[start:stop]
        for i in range(stop - start):
            p0, p1, p2 = src[i, 0], src[i, 1], src[i, 2]
            for c in range(3):  # minus 1, plus a half to round: truncating a value in [0, 255] floors it
                dst[i, c] = np.uint8(min(max(factors[c, 0, p0] * factors[c, 1, p1] * factors[c, 2, p2] - 0.5, 0.0),
                                         255.0))


def od_linear(pixels: np.ndarray, matrix: np.ndarray, light=None, light_out=None, parallel: bool = True) -> np.ndarray:
    """``to_uint8(map_od_linear(pixels, matrix, light, light_out))`` of :mod:`stainlab.color.od` for
    uint8 pixels ``(M, 3)``: optical density against ``light`` by table and one 3x3 matrix, rendered
    under ``light_out`` (``None``: white); ``parallel`` False: on the calling thread alone."""
    out = np.empty_like(pixels)
    rendered = np.full(3, BACKGROUND if light_out is None else light_out, dtype=np.float64)
    _od_linear(pixels, od_table(light), np.ascontiguousarray(matrix, dtype=np.float64), rendered, out,
               parts(len(pixels)) if parallel else 1)
    return out


def linear_od_image(image: np.ndarray, linear: LinearODMap, parallel: bool = True) -> np.ndarray:
    """:func:`od_linear` of a uint8 image (any shape ending in 3) under a map linear in optical density
    whose optical density is clipped at zero (the table's; ``ValueError`` otherwise)."""
    if not linear.clip:
        raise ValueError("the optical-density kernel clips optical density at zero; this map does not")
    return od_linear(image.reshape(-1, 3), linear.matrix, linear.light, linear.light_out, parallel).reshape(image.shape)


@njit(cache=True, nogil=True)
def gram_inverse(stains):  # pragma: no cover - compiled
    """The pseudo-inverse of the Gram matrix of two stain rows ``(2, 3)`` and its diagonal, for
    :func:`nonnegative_pair`: by the adjugate when the rows are well apart (``np.linalg.pinv``'s
    decomposition took longer than Vahadane's factorisation pass over its points), else by ``pinv``."""
    gram = stains @ stains.T
    det = gram[0, 0] * gram[1, 1] - gram[0, 1] * gram[1, 0]
    if det > 1e-9 * gram[0, 0] * gram[1, 1]:
        inverse = np.array([[gram[1, 1], -gram[0, 1]], [-gram[1, 0], gram[0, 0]]]) / det
    else:
        inverse = np.linalg.pinv(gram)
    return inverse, np.diag(gram).copy()


@njit(cache=True, nogil=True, inline="always")
def nonnegative_pair(o0, o1, o2, stains, sparsity, inverse, diag):  # pragma: no cover - compiled
    """The minimiser over ``c >= 0`` of ``1/2 ||od - c W||^2 + sparsity * sum(c)`` for one optical density
    ``od = (o0, o1, o2)`` and two ``stains`` ``W`` (the closed form of
    :func:`stainlab.transforms.vahadane.nonnegative_concentrations`); ``inverse`` and ``diag`` as
    :func:`gram_inverse` gives them."""
    b0 = o0 * stains[0, 0] + o1 * stains[0, 1] + o2 * stains[0, 2] - sparsity
    b1 = o0 * stains[1, 0] + o1 * stains[1, 1] + o2 * stains[1, 2] - sparsity
    c0, c1 = b0 * inverse[0, 0] + b1 * inverse[1, 0], b0 * inverse[0, 1] + b1 * inverse[1, 1]
    if c0 >= 0.0 and c1 >= 0.0:
        return c0, c1
    g0, g1 = max(b0, 0.0), max(b1, 0.0)
    if g0 * g0 / diag[0] >= g1 * g1 / diag[1]:
        return g0 / diag[0], 0.0
    return 0.0, g1 / diag[1]


@sliced(fastmath=True, error_model="numpy")
def _od_nonnegative(pixels, od_of_byte, stains, inverse, diag, factors, target, shift, render, out,
                    parts):  # pragma: no cover - compiled
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src, dst = pixels[start:stop], out[start:stop]
        for i in range(stop - start):
            c0, c1 = nonnegative_pair(od_of_byte[0, src[i, 0]], od_of_byte[1, src[i, 1]], od_of_byte[2, src[i, 2]],
                                      stains, 0.0, inverse, diag)
            c0, c1 = c0 * factors[0], c1 * factors[1]
            for c in range(3):
                dst[i, c] = _nearest(render, _RENDER_STEPS, c0 * target[0, c] + c1 * target[1, c] + shift[c])


def od_nonnegative(pixels: np.ndarray, stains: np.ndarray, factors: np.ndarray, target: np.ndarray,
                   light=None, light_out=None) -> np.ndarray:
    """Non-negative least-squares concentrations of two ``stains`` (the rule of
    :func:`stainlab.transforms.vahadane.nonnegative_concentrations` with no sparsity) in optical density
    against ``light``, scaled by ``factors`` and rendered with the ``target`` stain rows under
    ``light_out``, for uint8 pixels ``(M, 3)``."""
    stains = np.ascontiguousarray(stains, np.float64)
    out = np.empty_like(pixels)
    _od_nonnegative(pixels, od_table(light), stains, *gram_inverse(stains), np.asarray(factors, np.float64),
                    np.ascontiguousarray(target, np.float64), _shift(light_out), _RENDER, out,
                    parts(len(pixels)))
    return out


# -- statistics ------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _add_od(sums, p0, p1, p2, od_of_byte, l0, l1, l2):  # pragma: no cover - compiled
    """One pixel into :func:`_od_moments`' running sums (R, G, B sums and squares; the count, sums and
    upper-triangle products of the optical densities of tissue). Without a branch: a pixel that is not
    tissue adds its optical densities times zero, so the compiler can vectorize the loop."""
    f0, f1, f2 = np.float64(p0), np.float64(p1), np.float64(p2)
    w = 1.0 if (p0 < l0) | (p1 < l1) | (p2 < l2) else 0.0
    v0, v1, v2 = od_of_byte[0, p0] * w, od_of_byte[1, p1] * w, od_of_byte[2, p2] * w
    return (sums[0] + f0, sums[1] + f1, sums[2] + f2, sums[3] + f0 * f0, sums[4] + f1 * f1, sums[5] + f2 * f2,
            sums[6] + w, sums[7] + v0, sums[8] + v1, sums[9] + v2, sums[10] + v0 * v0, sums[11] + v0 * v1,
            sums[12] + v0 * v2, sums[13] + v1 * v1, sums[14] + v1 * v2, sums[15] + v2 * v2)


@sliced(fastmath=True, error_model="numpy")
def _od_moments(pixels, flat, below, od_of_byte, acc, parts):  # pragma: no cover - compiled
    """Per slice: R, G, B sums and squares of every pixel in ``acc[:, :6]``, and the count, sums and
    products of the optical densities of the pixels under ``below`` in ``acc[:, 6:]``. Contiguous pixels
    come as ``flat`` bytes (empty otherwise): pixel ``i`` at ``3 i``, a constant stride that the
    compiler vectorizes (a 256 x 256 tile's pass: 0.20 ms on one thread through ``pixels[i, c]``, 0.08
    this way)."""
    l0, l1, l2 = below[0], below[1], below[2]
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        sums = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        if flat.shape[0]:
            src = flat[3 * start:3 * stop]
            for i in range(stop - start):
                sums = _add_od(sums, src[3 * i], src[3 * i + 1], src[3 * i + 2], od_of_byte, l0, l1, l2)
        else:
            rows = pixels[start:stop]
            for i in range(stop - start):
                sums = _add_od(sums, rows[i, 0], rows[i, 1], rows[i, 2], od_of_byte, l0, l1, l2)
        for k in range(16):
            acc[part, k] = sums[k]


_od_moments_threaded, _od_moments_serial = _od_moments.threaded, _od_moments.serial


def _run_moments(pixels, below, light=None):
    """:func:`_od_moments` summed over slices: (count, RGB std, mean, covariance, count per slice)."""
    acc = np.zeros((parts(len(pixels)), 16))
    _od_moments(pixels, _flat(pixels), _limits(below), od_table(light), acc, len(acc))
    count, rgb_std, mean, covariance, counts = _moment_totals(acc, False, len(pixels))
    return int(count), rgb_std, mean, covariance, counts


def _flat(pixels: np.ndarray) -> np.ndarray:
    """Contiguous pixels ``(M, 3)`` as flat bytes, empty for a strided sample (see :func:`_od_moments`)."""
    return pixels.reshape(-1) if pixels.flags.c_contiguous else np.empty(0, np.uint8)


@njit(cache=True, nogil=True)
def _moment_totals(acc, lab, pixels):  # pragma: no cover - compiled
    """The slices' sums ``acc`` of a moments pass over ``pixels`` pixels as (count, RGB std, mean,
    covariance, count per slice); R, G and B are over tissue alone with ``lab``
    (:func:`stainlab.color.lab_pixels.lab_moments`)."""
    total = acc.sum(axis=0)
    count = np.int64(total[6])
    rgb_count = max(count if lab else pixels, 1)
    rgb_mean = total[0:3] / rgb_count
    rgb_std = np.sqrt(np.maximum(total[3:6] / rgb_count - rgb_mean * rgb_mean, 0.0))
    counts = acc[:, 6].astype(np.int64)
    mean, covariance = np.zeros(3), np.zeros((3, 3))
    if count == 0:
        return count, rgb_std, mean, covariance, counts
    mean[:] = total[7:10] / count
    k = 10
    for a in range(3):
        for b in range(a, 3):
            covariance[a, b] = covariance[b, a] = total[k] / count - mean[a] * mean[b]
            k += 1
    return count, rgb_std, mean, covariance, counts


class TissueMoments(NamedTuple):
    """What :func:`od_moments` finds: the tissue pixels (darkest channel under ``below``) and their
    optical densities' mean and (population) covariance, with the spread of R, G and B over **all**
    pixels; ``counts``, tissue pixels per kernel slice, lets :func:`od_projections` skip its count."""

    count: int
    rgb_std: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    counts: np.ndarray


def od_moments(pixels: np.ndarray, below, light=None) -> TissueMoments:
    """:class:`TissueMoments` of uint8 pixels ``(M, 3)`` in optical density against ``light``, tissue
    being under ``below`` (``tissue_limit``, or per channel ``tissue_limits``)."""
    return TissueMoments(*_run_moments(pixels, below, light))


@sliced(fastmath=True, error_model="numpy")
def _od_projections(pixels, below, od_of_byte, matrix, offsets, out, parts):  # pragma: no cover - compiled
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src, dst = pixels[start:stop], out[:, offsets[part]:offsets[part + 1]]
        j = 0
        for i in range(stop - start):
            p0, p1, p2 = src[i, 0], src[i, 1], src[i, 2]
            if p0 >= below[0] and p1 >= below[1] and p2 >= below[2]:
                continue
            o0, o1, o2 = od_of_byte[0, p0], od_of_byte[1, p1], od_of_byte[2, p2]
            for k in range(matrix.shape[1]):
                dst[k, j] = o0 * matrix[0, k] + o1 * matrix[1, k] + o2 * matrix[2, k]
            j += 1


@sliced(fastmath=True, error_model="numpy")
def _count_below(pixels, below, counts, parts):  # pragma: no cover - compiled
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src = pixels[start:stop]
        for i in range(stop - start):
            if src[i, 0] < below[0] or src[i, 1] < below[1] or src[i, 2] < below[2]:
                counts[part] += 1


@sliced()
def _channel_counts(pixels, below, counts, parts):  # pragma: no cover - compiled
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src = pixels[start:stop]
        for i in range(stop - start):
            p0, p1, p2 = src[i, 0], src[i, 1], src[i, 2]
            k = 0 if p0 < below[0] or p1 < below[1] or p2 < below[2] else 1
            counts[part, k, 0, p0] += 1
            counts[part, k, 1, p1] += 1
            counts[part, k, 2, p2] += 1


@sliced()
def _channel_map(pixels, tables, keep_below, out, parts):  # pragma: no cover - compiled
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src, dst = pixels[start:stop], out[start:stop]
        for i in range(stop - start):
            p0, p1, p2 = src[i, 0], src[i, 1], src[i, 2]
            if min(p0, p1, p2) >= keep_below:
                dst[i, 0], dst[i, 1], dst[i, 2] = p0, p1, p2
            else:
                dst[i, 0], dst[i, 1], dst[i, 2] = tables[0, p0], tables[1, p1], tables[2, p2]


def channel_map(pixels: np.ndarray, tables: np.ndarray, keep_below: int = 256) -> np.ndarray:
    """uint8 pixels ``(M, 3)`` through one 256-entry table per channel (``tables``, uint8 ``(3, 256)``);
    pixels whose darkest channel is at least ``keep_below`` (glass, with ``tissue_limit``) keep their
    bytes."""
    out = np.empty_like(pixels)
    _channel_map(pixels, np.ascontiguousarray(tables, dtype=np.uint8), keep_below, out, parts(len(pixels)))
    return out


@sliced(error_model="numpy")
def _weighted_gray(pixels, weights, out, parts):  # pragma: no cover - compiled
    """Per slice: ``(w0 R + w1 G + w2 B) / 1000`` in integers (``weights`` in thousandths), rounded half
    up, in all three channels."""
    w0, w1, w2 = weights[0], weights[1], weights[2]
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src, dst = pixels[start:stop], out[start:stop]
        for i in range(stop - start):
            gray = np.uint8((w0 * np.int64(src[i, 0]) + w1 * np.int64(src[i, 1]) + w2 * np.int64(src[i, 2]) + 500)
                            // 1000)
            dst[i, 0], dst[i, 1], dst[i, 2] = gray, gray, gray


def weighted_gray(pixels: np.ndarray, thousandths) -> np.ndarray:
    """uint8 pixels ``(M, 3)`` to the grey ``(w . RGB) / 1000`` of integer weights in thousandths summing
    to at most 1000 (luminance: 299, 587, 114), rounded, in all three channels."""
    out = np.empty_like(pixels)
    _weighted_gray(pixels, np.asarray(thousandths, dtype=np.int64), out, parts(len(pixels)))
    return out


def channel_counts(pixels: np.ndarray, below: int) -> np.ndarray:
    """``(2, 3, 256)`` per-level counts of R, G and B: ``[0]`` of the pixels whose darkest channel is
    under ``below`` (tissue, with ``tissue_limit``), ``[1]`` of the others."""
    counts = np.zeros((parts(len(pixels)), 2, 3, 256), dtype=np.int64)
    _channel_counts(pixels, _limits(below), counts, len(counts))
    return counts.sum(axis=0).astype(np.float64)


def count_below(pixels: np.ndarray, below: int) -> int:
    """How many pixels have their darkest channel under ``below``."""
    counts = np.zeros(parts(len(pixels)), dtype=np.int64)
    _count_below(pixels, _limits(below), counts, len(counts))
    return int(counts.sum())


def od_projections(pixels: np.ndarray, below, matrix: np.ndarray, counts=None, light=None) -> np.ndarray:
    """``(OD @ matrix).T`` (matrix ``(3, k)``) of the pixels whose darkest channel is under ``below``, in
    pixel order: ``(k, T)`` float64, each projection contiguous. ``counts``: those pixels per slice, as
    :func:`od_moments` gives."""
    below = _limits(below)
    if counts is None or len(counts) != parts(len(pixels)):
        counts = np.zeros(parts(len(pixels)), dtype=np.int64)
        _count_below(pixels, below, counts, len(counts))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((matrix.shape[1], offsets[-1]))
    _od_projections(pixels, below, od_table(light), np.ascontiguousarray(matrix, np.float64), offsets, out,
                    len(counts))
    return out


# -- exact order statistics in linear time (Floyd and Rivest's selection) ----------------------------
# A sample of the values brackets each wanted rank between two of the sample's order statistics
# (three standard deviations of the sample's rank either side, found by partitioning the sample);
# overlapping brackets merge; one pass over the values counts those below each bracket and gathers
# those inside; each rank is then selected among its bracket's values by partitioning them. A rank that
# its bracket misses (one tile in a few dozen) is taken by partitioning all the values at the ranks (a
# fifth of a full sort's time). The passes below keep their counters in registers (:func:`_tally` takes
# and returns numbers only) and may compute the values on the fly.
SAMPLE = 1024
"""A selection's sample: this many values (all of them when fewer), at positions scattered over all of
them (:func:`_scattered`), not strided: a stride can line up with an image's rows and sample a few
columns only, whose brackets then miss."""


@njit(cache=True, nogil=True)
def _spread_step(n):  # pragma: no cover - compiled
    """The step of :func:`_scattered` over ``n`` values: about ``0.618 n`` (the golden ratio's fraction,
    whose multiples modulo one spread most evenly), raised until it is coprime with ``n``. A fixed
    multiplier modulo ``n`` (a large prime before) crawls for the ``n`` it nearly divides, one in a
    hundred and fifty up to 300,000: 1,024 samples of 2,040 values then all lay in the first half."""
    step = max(int(n * 0.6180339887498949), 1)
    while True:
        a, b = step, n
        while b:
            a, b = b, a % b
        if a == 1:
            return step
        step += 1


@njit(cache=True, nogil=True, inline="always")
def _scattered(k, n, step):  # pragma: no cover - compiled
    """The ``k``-th sample position of ``n`` under ``step`` (:func:`_spread_step`): distinct for ``k < n``."""
    return k * step % n


@njit(cache=True, nogil=True)
def _sample(values):  # pragma: no cover - compiled
    """:data:`SAMPLE` of the values (a copy)."""
    n = values.shape[0]
    if n <= SAMPLE:
        return values.copy()
    out, step = np.empty(SAMPLE), _spread_step(n)
    for k in range(SAMPLE):
        out[k] = values[_scattered(k, n, step)]
    return out


@njit(cache=True, nogil=True, inline="always")
def _tally(v, low, high, under, within):  # pragma: no cover - compiled
    """One value against a bracket: the counts of values below it and inside it, and whether ``v`` is
    inside (to be gathered at ``within - 1``)."""
    if v < low:
        return under + 1, within, False
    if v <= high:
        return under, within + 1, True
    return under, within, False


@njit(cache=True, nogil=True, error_model="numpy")
def _brackets(sample, n, ranks):  # pragma: no cover - compiled
    """The brackets of ascending ``ranks`` among ``n`` values from ``sample`` (some of them, taken evenly;
    partitioned in place): their lows and highs (infinite where a rank is near an end), merged where they
    overlap, followed by empty brackets (+inf) up to ``len(ranks) + 1`` entries; their number; and how
    many values a bracket may gather (amply)."""
    m, count = sample.shape[0], ranks.shape[0]
    bounds = np.full((count, 2), -1)            # the sample's order statistics around each rank (-1: none)
    for j in range(count):
        share = ranks[j] / max(n - 1, 1)
        k, margin = share * (m - 1), 3.0 * np.sqrt(m * share * (1.0 - share)) + 2.0
        if k - margin > 0:
            bounds[j, 0] = int(k - margin)
        if k + margin < m - 1:
            bounds[j, 1] = min(int(k + margin) + 1, m - 1)
    kth = np.unique(bounds)
    kth = kth[kth >= 0]
    if kth.shape[0]:
        sample[:] = np.partition(sample, kth)
    lows, highs = np.full(count + 1, np.inf), np.full(count + 1, np.inf)
    brackets = 0
    for j in range(count):
        low = sample[bounds[j, 0]] if bounds[j, 0] >= 0 else -np.inf
        high = sample[bounds[j, 1]] if bounds[j, 1] >= 0 else np.inf
        if brackets and low <= highs[brackets - 1]:
            highs[brackets - 1] = max(high, highs[brackets - 1])
        else:
            lows[brackets], highs[brackets] = low, high
            brackets += 1
    room = n if m == 0 else min(n, 16 * int(n / m * (2.0 * 3.0 * np.sqrt(m) + 8.0) / 16) + 64)
    return lows, highs, brackets, room


@njit(cache=True, nogil=True, error_model="numpy")
def _select(inside, below, within, ranks, out, found):  # pragma: no cover - compiled
    """Each rank inside a bracket ``b`` (``below[b]`` values under it, ``within[b]`` in it, gathered in
    ``inside[b]`` unless more than fit) selected there into ``out``, and marked ``found``."""
    for b in range(below.shape[0]):
        if within[b] > inside.shape[1]:
            continue
        wanted = np.array([r - below[b] for r in ranks if below[b] <= r < below[b] + within[b]])
        if wanted.shape[0]:
            chosen = np.partition(inside[b, :within[b]], wanted)
            for j in range(ranks.shape[0]):
                if below[b] <= ranks[j] < below[b] + within[b]:
                    out[j], found[j] = chosen[ranks[j] - below[b]], True


@njit(cache=True, nogil=True, error_model="numpy")
def _order_statistics(values, ranks):  # pragma: no cover - compiled
    """The ``ranks``-th smallest of ``values`` (0-based, ascending ranks), exactly, two brackets a pass."""
    n = values.shape[0]
    lows, highs, brackets, room = _brackets(_sample(values), n, ranks)
    inside = np.empty((brackets + 1, room))
    below = np.zeros(brackets + 1, dtype=np.int64)
    within = np.zeros(brackets + 1, dtype=np.int64)
    for b in range(0, brackets, 2):
        low0, high0, low1, high1 = lows[b], highs[b], lows[b + 1], highs[b + 1]
        under0, in0, under1, in1 = 0, 0, 0, 0
        for v in values:
            under0, in0, gather = _tally(v, low0, high0, under0, in0)
            if gather and in0 <= room:
                inside[b, in0 - 1] = v
            under1, in1, gather = _tally(v, low1, high1, under1, in1)
            if gather and in1 <= room:
                inside[b + 1, in1 - 1] = v
        below[b], within[b], below[b + 1], within[b + 1] = under0, in0, under1, in1
    out = np.empty(ranks.shape[0])
    found = np.zeros(ranks.shape[0], dtype=np.bool_)
    _select(inside[:brackets], below[:brackets], within[:brackets], ranks, out, found)
    if not found.all():
        out[:] = np.partition(values, ranks)[ranks]
    return out


@njit(cache=True, nogil=True)
def _percentile_ranks(q, n):  # pragma: no cover - compiled
    """Where ``np.percentile`` (linear interpolation) reads the ``q``-th percentiles among ``n`` values:
    their positions, and the ranks it reads (each position's floor and the next), ascending."""
    pos = q / 100.0 * (n - 1)
    ranks = np.empty(2 * q.shape[0], dtype=np.int64)
    for j in range(q.shape[0]):
        ranks[2 * j] = int(np.floor(pos[j]))
        ranks[2 * j + 1] = min(ranks[2 * j] + 1, n - 1)
    return pos, np.sort(ranks)


@njit(cache=True, nogil=True)
def _interpolate(pos, ranks, stats, n):  # pragma: no cover - compiled
    """``np.percentile``'s values at the positions :func:`_percentile_ranks` gave, from the order
    statistics ``stats`` at its ranks."""
    out = np.empty(pos.shape[0])
    for j in range(pos.shape[0]):
        below = np.floor(pos[j])
        low = stats[np.searchsorted(ranks, int(below))]
        high = stats[np.searchsorted(ranks, min(int(below) + 1, n - 1))]
        out[j] = low + (pos[j] - below) * (high - low)
    return out


def percentiles(values: np.ndarray, q, increasing=None) -> np.ndarray:
    """``np.percentile(values, q)`` (linear interpolation) of a 1-D float array, in linear time; with
    an increasing function ``increasing``, ``np.percentile(increasing(values), q)`` evaluating it only
    at the order statistics."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    pos, ranks = _percentile_ranks(np.asarray(q, dtype=np.float64).reshape(-1), len(values))
    stats = _order_statistics(values, ranks)
    return _interpolate(pos, ranks, stats if increasing is None else increasing(stats), len(values))


# -- Macenko's angles and robust maxima --------------------------------------------------------------
# Both passes run in slices on numba's threads: each slice tallies its values against the brackets and
# gathers those inside into a buffer of its own, and the slices' buffers are joined for the selection.
@njit(cache=True, nogil=True, error_model="numpy")
def _angle_brackets(pixels, below, od_of_byte, plane, ranks, count):  # pragma: no cover - compiled
    """The brackets (:func:`_brackets`) of the ``ranks`` of ``y / x`` among the ``count`` pixels under
    ``below``, sampled from the tissue among :data:`SAMPLE` scattered pixels."""
    n = pixels.shape[0]
    sample, step = np.empty(min(n, SAMPLE)), _spread_step(n)
    m = 0
    for k in range(sample.shape[0]):
        i = _scattered(k, n, step)
        p0, p1, p2 = pixels[i, 0], pixels[i, 1], pixels[i, 2]
        if p0 < below[0] or p1 < below[1] or p2 < below[2]:
            o0, o1, o2 = od_of_byte[0, p0], od_of_byte[1, p1], od_of_byte[2, p2]
            x = o0 * plane[0, 0] + o1 * plane[1, 0] + o2 * plane[2, 0]
            sample[m] = (o0 * plane[0, 1] + o1 * plane[1, 1] + o2 * plane[2, 1]) / x
            m += 1
    return _brackets(sample[:m], count, ranks)


@sliced(error_model="numpy")
def _angle_tallies(pixels, below, od_of_byte, plane, lows, highs, offsets, xy, inside, unders, withins,
                   nonpositive, parts):  # pragma: no cover - compiled
    """Per slice: the optical densities of its pixels under ``below`` projected onto the two columns of
    ``plane``, ``(x, y)``, into ``xy`` from ``offsets[part]`` in pixel order; how many ``y / x`` lie below
    and inside brackets 0 and 1 (``unders[part]``, ``withins[part]``) and how many ``x`` are not positive;
    the slopes inside gathered into ``inside[part]`` (up to its length)."""
    room = inside.shape[2]
    low0, high0, low1, high1 = lows[0], highs[0], lows[1], highs[1]
    e10, e11, e12, e20, e21, e22 = plane[0, 0], plane[1, 0], plane[2, 0], plane[0, 1], plane[1, 1], plane[2, 1]
    for part in prange(parts):
        start, stop = slice_bounds(pixels.shape[0], part, parts)
        src, j = pixels[start:stop], offsets[part]
        under0, in0, under1, in1, negative = 0, 0, 0, 0, 0
        for i in range(stop - start):
            p0, p1, p2 = src[i, 0], src[i, 1], src[i, 2]
            if p0 >= below[0] and p1 >= below[1] and p2 >= below[2]:
                continue
            o0, o1, o2 = od_of_byte[0, p0], od_of_byte[1, p1], od_of_byte[2, p2]
            x, y = o0 * e10 + o1 * e11 + o2 * e12, o0 * e20 + o1 * e21 + o2 * e22
            xy[0, j], xy[1, j] = x, y
            j += 1
            negative += x <= 0.0
            t = y / x
            under0, in0, gather = _tally(t, low0, high0, under0, in0)
            if gather and in0 <= room:
                inside[part, 0, in0 - 1] = t
            under1, in1, gather = _tally(t, low1, high1, under1, in1)
            if gather and in1 <= room:
                inside[part, 1, in1 - 1] = t
        unders[part, 0], unders[part, 1], withins[part, 0], withins[part, 1] = under0, under1, in0, in1
        nonpositive[part] = negative


@njit(cache=True, nogil=True, error_model="numpy")
def _joined_select(inside, unders, withins, ranks, out, found):  # pragma: no cover - compiled
    """:func:`_select` over the slices' gathered values: ``inside`` ``(parts, brackets, room)``, with
    ``unders`` and ``withins`` ``(parts, brackets)`` counted below and inside each bracket, when every
    slice's fitted its buffer."""
    if withins.max() > inside.shape[2]:
        return
    below, within = unders.sum(axis=0), withins.sum(axis=0)
    joined = np.empty((inside.shape[1], max(within.max(), 1)))
    for b in range(inside.shape[1]):
        k = 0
        for part in range(inside.shape[0]):
            joined[b, k:k + withins[part, b]] = inside[part, b, :withins[part, b]]
            k += withins[part, b]
    _select(joined, below, within, ranks, out, found)


_angle_tallies_threaded, _angle_tallies_serial = _angle_tallies.threaded, _angle_tallies.serial


@njit(cache=True, nogil=True, error_model="numpy")
def _plane_angles(pixels, below, od_of_byte, plane, q, count, counts):  # pragma: no cover - compiled
    """:func:`plane_angles` in slices of the pixels (``counts`` pixels under ``below`` in each): the
    percentiles and ``xy``."""
    slices = counts.shape[0]
    pos, ranks = _percentile_ranks(q, count)
    lows, highs, brackets, room = _angle_brackets(pixels, below, od_of_byte, plane, ranks, count)
    offsets = np.zeros(slices + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    xy = np.empty((2, count))
    inside = np.empty((slices, 2, room))
    unders, withins = np.zeros((slices, 2), dtype=np.int64), np.zeros((slices, 2), dtype=np.int64)
    nonpositive = np.zeros(slices, dtype=np.int64)
    if slices > 1:
        _angle_tallies_threaded(pixels, below, od_of_byte, plane, lows, highs, offsets, xy, inside, unders, withins,
                                nonpositive, slices)
    else:
        _angle_tallies_serial(pixels, below, od_of_byte, plane, lows, highs, offsets, xy, inside, unders, withins,
                              nonpositive, slices)
    if nonpositive.any():  # then y / x does not order the angles: atan2 does
        return _interpolate(pos, ranks, _order_statistics(np.arctan2(xy[1], xy[0]), ranks), count), xy
    stats = np.empty(ranks.shape[0])
    found = np.zeros(ranks.shape[0], dtype=np.bool_)
    if brackets <= 2:
        _joined_select(inside[:, :brackets], unders[:, :brackets], withins[:, :brackets], ranks, stats, found)
    if not found.all():
        stats = np.partition(xy[1] / xy[0], ranks)[ranks]
    return _interpolate(pos, ranks, np.arctan(stats), count), xy


def plane_angles(pixels: np.ndarray, below, plane: np.ndarray, count: int, q, light=None, counts=None):
    """Steps 5-7 of Macenko et al. on the ``count`` pixels whose darkest channel is under ``below`` (as
    :func:`od_moments` counts them, ``counts`` of them in each of its slices): their optical densities
    against ``light`` projected onto the plane's unit axes (``plane``, ``(3, 2)``: ``e1``, ``e2``), ``xy``
    ``(2, count)`` in pixel order, and the ``q``-th percentiles of their angles ``phi = atan2(y, x)``, as
    ``np.percentile`` interpolates them.

    Where every ``x`` is positive (``e1`` lies along the mean optical density, so tissue does), ``y / x``
    orders the pixels as ``phi`` does: its exact order statistics (two percentiles at most: two
    brackets) are found in the same pass as the projections and the arctangent taken of them alone.
    Otherwise the angles come from ``atan2``."""
    limits, q = _limits(below), np.asarray(q, dtype=np.float64).reshape(-1)
    if counts is None or len(counts) != parts(len(pixels)):
        counts = np.zeros(parts(len(pixels)), dtype=np.int64)
        _count_below(pixels, limits, counts, len(counts))
    return _plane_angles(pixels, limits, od_table(light), np.ascontiguousarray(plane, np.float64), q, count, counts)


@sliced(error_model="numpy")
def _combination_tallies(xy, matrix, lows, highs, inside, unders, withins, parts):  # pragma: no cover - compiled
    """Per slice of the columns of ``xy``: how many of row ``r`` of ``matrix @ xy`` lie below and inside
    its bracket (``lows[r]``, ``highs[r]``), in ``unders[part, r]`` and ``withins[part, r]``, those inside
    gathered into ``inside[part, r]`` (up to its length)."""
    room = inside.shape[2]
    low0, high0, low1, high1 = lows[0], highs[0], lows[1], highs[1]
    a00, a01, a10, a11 = matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1]
    for part in prange(parts):
        start, stop = slice_bounds(xy.shape[1], part, parts)
        xs, ys = xy[0, start:stop], xy[1, start:stop]
        under0, in0, under1, in1 = 0, 0, 0, 0
        for i in range(stop - start):
            x, y = xs[i], ys[i]
            v = a00 * x + a01 * y
            under0, in0, gather = _tally(v, low0, high0, under0, in0)
            if gather and in0 <= room:
                inside[part, 0, in0 - 1] = v
            v = a10 * x + a11 * y
            under1, in1, gather = _tally(v, low1, high1, under1, in1)
            if gather and in1 <= room:
                inside[part, 1, in1 - 1] = v
        unders[part, 0], unders[part, 1], withins[part, 0], withins[part, 1] = under0, under1, in0, in1


@njit(cache=True, nogil=True, error_model="numpy")
def _combination_brackets(xy, matrix, ranks):  # pragma: no cover - compiled
    """Each row's bracket around ``ranks`` of ``matrix @ xy``, from :data:`SAMPLE` scattered columns:
    lows, highs, whether each row has exactly one, and the room a bracket may gather."""
    n = xy.shape[1]
    xs, ys = _sample(xy[0]), _sample(xy[1])
    lows, highs, single, room = np.empty(2), np.empty(2), True, 0
    for row in range(2):
        row_lows, row_highs, brackets, room = _brackets(matrix[row, 0] * xs + matrix[row, 1] * ys, n, ranks)
        lows[row], highs[row], single = row_lows[0], row_highs[0], single and brackets == 1
    return lows, highs, single, room


_combination_tallies_threaded, _combination_tallies_serial = _combination_tallies.threaded, _combination_tallies.serial


@njit(cache=True, nogil=True, error_model="numpy")
def _combination_percentiles(xy, matrix, q, slices):  # pragma: no cover - compiled
    """:func:`combination_percentiles` in ``slices`` of the columns."""
    n = xy.shape[1]
    pos, ranks = _percentile_ranks(np.array([q]), n)
    lows, highs, single, room = _combination_brackets(xy, matrix, ranks)
    inside = np.empty((slices, 2, room))
    unders, withins = np.zeros((slices, 2), dtype=np.int64), np.zeros((slices, 2), dtype=np.int64)
    if single and slices > 1:
        _combination_tallies_threaded(xy, matrix, lows, highs, inside, unders, withins, slices)
    elif single:
        _combination_tallies_serial(xy, matrix, lows, highs, inside, unders, withins, slices)
    out = np.empty(2)
    for row in range(2):
        stats = np.empty(ranks.shape[0])
        found = np.zeros(ranks.shape[0], dtype=np.bool_)
        if single:
            _joined_select(inside[:, row:row + 1], unders[:, row:row + 1], withins[:, row:row + 1], ranks, stats,
                           found)
        if not found.all():
            stats = np.partition(matrix[row, 0] * xy[0] + matrix[row, 1] * xy[1], ranks)[ranks]
        out[row] = _interpolate(pos, ranks, stats, n)[0]
    return out


def combination_percentiles(xy: np.ndarray, matrix: np.ndarray, q: float) -> np.ndarray:
    """``np.percentile(matrix @ xy, q, axis=1)`` for ``(2, n)`` values and a ``(2, 2)`` matrix, by exact
    order statistics of both rows in one pass over ``xy`` that forms neither row (one bracket a row): the
    robust maxima of the two stains' concentrations from a pixel's coordinates in their plane
    (:func:`plane_angles`)."""
    return _combination_percentiles(xy, np.ascontiguousarray(matrix, np.float64), float(q), parts(xy.shape[1]))


# -- Macenko's statistics of a tile in one call ------------------------------------------------------
@njit(cache=True, nogil=True)
def plane_axes(mean, covariance):  # pragma: no cover - compiled
    """Steps 3-5 of Macenko et al., compiled (a third of NumPy's time on a 3x3 matrix): the second
    largest variance of the optical-density covariance, the length of the mean's projection onto the
    plane of the two largest eigenvectors, and that plane's axes ``e1`` (the projection, normalized, so
    that tissue's angles never wrap around) and ``e2 = normal x e1``."""
    variances, directions = np.linalg.eigh(covariance)     # ascending
    normal = directions[:, 0].copy()                      # the normal of the plane of the two largest
    axis = mean - (mean @ normal) * normal
    length = np.sqrt(axis @ axis)
    e1 = axis / max(length, 1e-300)
    e2 = np.array([normal[1] * e1[2] - normal[2] * e1[1], normal[2] * e1[0] - normal[0] * e1[2],
                   normal[0] * e1[1] - normal[1] * e1[0]])
    return variances[1], length, e1, e2


@njit(cache=True, nogil=True, error_model="numpy")
def _macenko_statistics(pixels, flat, below, od_of_byte, q, percentile, min_variance, min_angle,
                        reference, parts):  # pragma: no cover - compiled
    """:func:`macenko_statistics`' passes and the small steps between them, compiled."""
    acc = np.zeros((parts, 16))
    if parts > 1:
        _od_moments_threaded(pixels, flat, below, od_of_byte, acc, parts)
    else:
        _od_moments_serial(pixels, flat, below, od_of_byte, acc, parts)
    count, rgb_std, mean, covariance, counts = _moment_totals(acc, False, pixels.shape[0])
    rows, maxima, variance, length = np.zeros((2, 3)), np.zeros(2), 0.0, 0.0
    if count < 2:
        return count, rgb_std, variance, length, rows, maxima
    variance, length, e1, e2 = plane_axes(mean, covariance)
    if variance <= min_variance or length < 1e-9:
        return count, rgb_std, variance, length, rows, maxima
    plane = np.empty((3, 2))
    plane[:, 0], plane[:, 1] = e1, e2
    angles, xy = _plane_angles(pixels, below, od_of_byte, plane, q, count, counts)
    raw = np.empty((2, 3))
    raw[0], raw[1] = np.cos(angles[0]) * e1 + np.sin(angles[0]) * e2, np.cos(angles[1]) * e1 + np.sin(angles[1]) * e2
    rows = ordered_rows(raw, reference)
    lengths = np.sqrt((rows[0] @ rows[0]) * (rows[1] @ rows[1]))   # stains.angle_degrees' arithmetic
    cosine = (rows[0] @ rows[1]) / lengths if lengths > 0 else 0.0
    if not np.degrees(np.arccos(min(max(cosine, -1.0), 1.0))) >= min_angle:
        return count, rgb_std, variance, length, rows, maxima
    a = rows @ plane               # rows = a plane.T, so W^+ = plane a^-1 and plane.T W^+ = a^-1
    det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
    matrix = np.array([[a[1, 1], -a[1, 0]], [-a[0, 1], a[0, 0]]]) / det      # (a^-1).T
    slices = parts if count >= PARALLEL_PIXELS else 1
    return count, rgb_std, variance, length, rows, _combination_percentiles(xy, matrix, percentile, slices)


def macenko_statistics(pixels: np.ndarray, below, light, alpha: float, percentile: float, min_variance: float,
                       min_angle: float):
    """Macenko's per-image statistics of uint8 pixels ``(M, 3)`` (a tile's sample) in one compiled call,
    tissue under ``below`` and optical density against ``light``: the tissue moments (:func:`od_moments`),
    the stain plane (:func:`plane_axes`), the robust extreme angles in it (:func:`plane_angles`, the
    ``alpha``-th percentiles), the stain rows (H then E, :func:`~stainlab.color.stains.order_like`) and
    the ``percentile``-th robust maxima of their concentrations (:func:`combination_percentiles`).

    Between those passes a tile's Python steps took a third of its time on a 2-core machine (a few
    dozen small NumPy calls, each slower right after a pass has evicted their code from the caches); here
    they take none. Returns the tissue count, the R, G, B spread of all pixels, the plane's second
    variance and the length of the mean's projection onto it, the rows and the maxima. It stops where
    a check would fail (fewer than two tissue pixels, a plane of at most ``min_variance``, rows less than
    ``min_angle`` degrees apart), leaving the rest zero: the caller's checks then say why."""
    q = np.array([alpha, 100.0 - alpha])
    count, rgb_std, variance, length, rows, maxima = _macenko_statistics(
        pixels, _flat(pixels), _limits(below), od_table(light), q, float(percentile), float(min_variance),
        float(min_angle), HE_UNIT, parts(len(pixels)))
    return int(count), rgb_std, float(variance), float(length), rows, maxima
