"""Vahadane structure-preserving colour normalization (Vahadane et al., "Structure-preserving color
normalization and sparse stain separation for histological images", IEEE TMI 35(8), 2016).

Stain separation is sparse non-negative matrix factorisation of tissue optical density
``V`` (one row per pixel) into concentrations ``C`` and unit stain rows ``W``:

    min_{C, W}  1/2 ||V - C W||_F^2 + lambda * sum |C|     s.t.  C >= 0,  W >= 0,  ||W_j||_2 = 1

with the paper's ``lambda = 0.1``. Our own solver, no SPAMS and no scikit-learn dictionary learning
(hard to install or changed behaviour across versions: StainTools #5, tiatoolbox #382):

- ``C`` step: for two stains the non-negative lasso has a closed form (the unconstrained solution if
  it is non-negative, else the better single-stain fit), so it is exact, not iterated;
- ``W`` step: one pass of block-coordinate descent over the stain rows on the accumulated statistics
  ``A = C^T D C``, ``B = C^T D V`` (``D`` = pixel weights; Mairal et al., "Online learning for matrix
  factorization and sparse coding", JMLR 2010, Alg. 2), each row projected on ``W >= 0`` and rescaled
  to unit length;
- run on the weighted mean OD of each occupied cell of a 64^3 grid over OD space (thousands of
  points rather than hundreds of thousands of colours: deterministic, and the same for a colour histogram and for the pixels it came from),
  started from the Macenko estimate of those points, for a fixed small number of alternations, so
  it takes tens of milliseconds.

Normalization follows the paper: the source's concentrations (non-negative least squares, closed
form) are scaled so their 99th percentile matches the reference's and rendered with the reference's
stain rows, through the machinery shared with Macenko (:mod:`stainlab.transforms.stain_matrix`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stainlab.color.pixels import gram_inverse, nonnegative_pair, od_nonnegative
from stainlab.color.stains import normalize_rows, order_like
from stainlab.color.tissue import TISSUE_BETA
from stainlab.transforms.checks import check_float, check_int
from stainlab.transforms.lut import DEFAULT_BITS
from stainlab.transforms.macenko import macenko_stain_matrix
from stainlab.transforms.stain_matrix import StainMatrixTransform, check_separable

SPARSITY = 0.1   # lambda of the objective: the paper's value, also StainTools' and tiatoolbox's default
GRID_LEVELS = 64  # OD grid cells per channel for the factorisation: 0.087 OD wide
MAX_ITERATIONS = 1000  # alternations; the factorisation settles in tens (each costs milliseconds)


def nonnegative_concentrations(od: np.ndarray, stain_matrix: np.ndarray, sparsity: float = 0.0) -> np.ndarray:
    """Exact per-row minimiser of ``1/2 ||od - c W||^2 + sparsity * sum(c)`` over ``c >= 0`` for two
    stains (``sparsity = 0``: non-negative least squares).

    The problem is a strictly convex quadratic on the quadrant: if the unconstrained minimiser is
    non-negative it is the answer; otherwise the minimum lies on an axis, where the best single-stain
    fit ``c_j = max(b_j, 0) / G_jj`` lowers the objective by ``max(b_j, 0)^2 / (2 G_jj)``. Row by row in
    one compiled pass (:func:`~stainlab.color.pixels.nonnegative_pair`).
    """
    stains = np.ascontiguousarray(stain_matrix, dtype=np.float64)
    rows = np.ascontiguousarray(od, dtype=np.float64).reshape(-1, 3)
    out = np.empty((len(rows), 2))
    _nonnegative_rows(rows, stains, float(sparsity), *gram_inverse(stains), out)
    return out.reshape(*np.shape(od)[:-1], 2)


@njit(cache=True, nogil=True)
def _nonnegative_rows(od, stains, sparsity, inverse, diag, out):  # pragma: no cover - compiled
    for i in range(od.shape[0]):
        out[i, 0], out[i, 1] = nonnegative_pair(od[i, 0], od[i, 1], od[i, 2], stains, sparsity, inverse, diag)


@njit(cache=True, nogil=True)
def _accumulated(od, weights, stains, sparsity, inverse, diag):  # pragma: no cover - compiled
    """The ``W`` step's statistics ``A = C^T D C`` (2, 2) and ``B = C^T D V`` (2, 3) of the sparse
    concentrations ``C`` of the rows of ``od`` (weights ``D``), made on the fly."""
    a, b = np.zeros((2, 2)), np.zeros((2, 3))
    for i in range(od.shape[0]):
        c0, c1 = nonnegative_pair(od[i, 0], od[i, 1], od[i, 2], stains, sparsity, inverse, diag)
        w0, w1 = weights[i] * c0, weights[i] * c1
        a[0, 0] += w0 * c0
        a[0, 1] += w0 * c1
        a[1, 1] += w1 * c1
        for k in range(3):
            b[0, k] += w0 * od[i, k]
            b[1, k] += w1 * od[i, k]
    a[1, 0] = a[0, 1]
    return a, b


def od_cell_means(od: np.ndarray, weights: np.ndarray, levels: int = GRID_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean OD and total weight of every occupied cell of a cubic grid over ``[0, ln 256]^3``.

    The factorisation runs on these weighted points (tens of thousands at most) instead of every colour. Unlike a
    random subsample it is deterministic and nearly the same whether the colours come from a lattice
    histogram or from the pixels themselves (on the CMU-1 region: 0.1 degree between the two, and
    0.1 degree from the factorisation of all 250k tissue colours, where 8192 random draws wandered 3-6).
    """
    step = np.log(256.0) / levels
    q = np.minimum((od / step).astype(np.int64), levels - 1)
    # the occupied cells numbered in order (bins over all levels**3 cells cost a tile more than the rest)
    _, cell = np.unique((q[:, 0] * levels + q[:, 1]) * levels + q[:, 2], return_inverse=True)
    total = np.bincount(cell, weights)
    occupied = np.flatnonzero(total)
    sums = np.stack([np.bincount(cell, weights * od[:, c])[occupied] for c in range(3)], axis=1)
    return sums / total[occupied, None], total[occupied]


def sparse_nmf(od: np.ndarray, weights: np.ndarray, init: np.ndarray, sparsity: float = SPARSITY,
               iterations: int = 30, tolerance: float = 1e-7) -> np.ndarray:
    """(2, 3) non-negative unit stain rows minimising the weighted Vahadane objective from ``init``.

    Alternates the exact sparse ``C`` step and a block-coordinate ``W`` step; stops after
    ``iterations`` alternations or when no entry of ``W`` moves more than ``tolerance``.
    """
    stains = normalize_rows(np.maximum(init, 0.0))
    return _factorised(np.ascontiguousarray(od, dtype=np.float64), np.ascontiguousarray(weights, dtype=np.float64),
                       np.ascontiguousarray(stains), float(sparsity), iterations, tolerance)


@njit(cache=True, nogil=True)
def _factorised(od, weights, stains, sparsity, iterations, tolerance):  # pragma: no cover - compiled
    """:func:`sparse_nmf`'s alternations from unit rows ``stains`` (changed in place and returned)."""
    for _ in range(iterations):
        inverse, diag = gram_inverse(stains)
        a, b = _accumulated(od, weights, stains, sparsity, inverse, diag)
        previous = stains.copy()
        for j in range(2):
            if a[j, j] > 0.0:
                row = np.maximum(stains[j] + (b[j] - (a[j, 0] * stains[0] + a[j, 1] * stains[1])) / a[j, j], 0.0)
                if row.any():
                    stains[j] = row / np.sqrt(row @ row)
        if np.abs(stains - previous).max() <= tolerance:
            break
    return stains


class Vahadane(StainMatrixTransform):
    """Vahadane 2016: H&E stain vectors by sparse non-negative factorisation of optical density (no SPAMS)."""

    name = "vahadane"

    def __init__(self, sparsity: float = SPARSITY, iterations: int = 30, beta: float = TISSUE_BETA,
                 percentile: float = 99.0, multi: str = "pool", rescale: bool = True,
                 lut_bits: int = DEFAULT_BITS, light="estimate", convention: str = "stainlab") -> None:
        super().__init__(beta, percentile, multi, rescale, lut_bits, light, convention)
        self.sparsity = check_float("vahadane: sparsity", sparsity, 0.0, 10.0)
        self.iterations = check_int("vahadane: iterations", iterations, 1, MAX_ITERATIONS)

    def _estimate(self, od, weights, what):
        cells, totals = od_cell_means(od, weights)
        init = macenko_stain_matrix(cells, totals, what=what)
        check_separable(init, what)          # one stain or one colour: nothing for the factorisation
        return order_like(sparse_nmf(cells, totals, init, self.sparsity, self.iterations))

    def _concentrations(self, od, stain_matrix):
        return nonnegative_concentrations(od, stain_matrix)

    def _small_map(self, image, source):
        """Non-negative least squares per pixel, by a compiled kernel (on the generic path in
        torchstain's convention, whose optical density is not clipped)."""
        if not self._clip:
            return super()._small_map(image, source)
        return od_nonnegative(image.reshape(-1, 3), source.stain_matrix, self._factors(source),
                              self.stain_matrix, source.light, self.target_light).reshape(image.shape)

