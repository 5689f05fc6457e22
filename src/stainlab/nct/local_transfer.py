"""Local colour transfer: per-pixel linear maps ``T(p) = a(p) * S(p) + b(p)`` fitted to the guidance G.

Paper 001, Sec. 2.2.5-2.2.6 and Algorithm 2 line 12, after He et al. 2019 (Sec. 4.2, Eq. 4-7). For each
colour channel the maps minimise

    E = E_D + lambda_L * E_L + lambda_NL * E_NL (+ ridge)                         (paper 001, Eq. 4)

- E_D  = sum_p (a_p S_p + b_p - G_p)^2: the output follows the guidance;
- E_L  = sum over 4-neighbour pairs of w_pq [(a_p - a_q)^2 + (b_p - b_q)^2], with w_pq =
  exp(-(lum_p - lum_q)^2 / (2 sigma^2)) on the source luminance: maps are smooth inside regions and
  free to change across the source's edges (edge preservation);
- E_NL = sum_p [(a_p - mean_C(p) a)^2 + (b_p - mean_C(p) b)^2], where C(p) is the set of source pixels
  whose colour falls in the same colour cell as p (and, when clusters or a segmentation are given, in
  the same class): pixels of similar colour anywhere in the image get similar maps. He et al. sum
  over the K nearest neighbours in colour; summing over all pairs of a cell instead is the same
  quadratic form up to a factor (sum_{p,q in C} (a_p - a_q)^2 =
  2 |C| sum_{p in C} (a_p - mean_C a)^2) and needs no neighbour search;
- ridge = eps * sum_p [(a_p - a0)^2 + (b_p - b0)^2], toward the channel's global least-squares map
  (a0, b0) of G on S. Our addition: E_D fixes only a_p S_p + b_p, so where S is flat (one colour cell,
  no edge) the pair (a, b) is otherwise undetermined; a small eps picks the solution closest to the
  global fit and changes nothing where the data decide.

The energy is quadratic, so it is minimised exactly by solving its normal equations (instead of the
multi-label graph cut of paper 001's C code) with conjugate gradients, preconditioned by the inverse of
each pixel's 2x2 (a, b) block; all channels at once, in one compiled (numba) loop per step.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def edge_weights(luminance: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """E_L weights of horizontal (h, w-1) and vertical (h-1, w) neighbour pairs from the source luminance."""
    lum = np.asarray(luminance, dtype=np.float64)
    scale = -0.5 / sigma ** 2
    return np.exp(scale * np.diff(lum, axis=1) ** 2), np.exp(scale * np.diff(lum, axis=0) ** 2)


def colour_cells(source: np.ndarray, cell: float, groups: np.ndarray | None = None) -> np.ndarray:
    """(h*w,) int labels 0..n-1 of the colour cell (side ``cell``) each pixel of ``source`` (h, w, K) falls
    in; with ``groups`` (h, w) int (cluster or segmentation labels), cells are split by group too."""
    q = np.floor(np.asarray(source, dtype=np.float64).reshape(-1, source.shape[-1]) / cell).astype(np.int64)
    if groups is not None:
        q = np.concatenate([q, np.asarray(groups, dtype=np.int64).reshape(-1, 1)], axis=1)
    q -= q.min(axis=0)
    key = np.zeros(len(q), dtype=np.int64)
    for column, extent in zip(q.T, q.max(axis=0) + 1):
        key = key * extent + column
    _, labels = np.unique(key, return_inverse=True)
    return labels.reshape(-1)


def _solve(source, guide, luminance, lambda_l, lambda_nl, sigma, cell, ridge, iterations, tol, groups):
    """Set up the normal equations and run the compiled preconditioned conjugate gradients."""
    s = np.ascontiguousarray(source, dtype=np.float64)
    g = np.asarray(guide, dtype=np.float64)
    h, w, k = s.shape
    wh, wv = (np.ascontiguousarray(lambda_l * e) for e in edge_weights(luminance, sigma))
    labels = colour_cells(s, cell, groups)
    sizes = np.bincount(labels).astype(np.float64)
    a0, b0 = global_affine(s, g)
    rhs = np.concatenate([s * g + ridge * a0, g + ridge * b0], axis=-1).reshape(h * w, 2 * k)
    z = np.concatenate([np.broadcast_to(a0, s.shape), np.broadcast_to(b0, s.shape)], axis=-1).reshape(h * w, 2 * k)
    z = np.ascontiguousarray(z)
    _pcg(s.reshape(h * w, k), rhs, z, wh, wv, labels, 1.0 / sizes, lambda_nl, ridge, int(iterations), tol * tol)
    z = z.reshape(h, w, 2 * k)
    return z[..., :k], z[..., k:]


@njit(cache=True)
def _apply(z, s, wh, wv, labels, inv_sizes, lambda_nl, ridge, means, out):  # pragma: no cover - compiled
    """out = A z: data term, 4-neighbour Laplacian (weights already times lambda_L), colour-cell term, ridge."""
    n, m = z.shape
    k = m // 2
    h, w = wv.shape[0] + 1, wh.shape[1] + 1
    means[:] = 0.0
    if lambda_nl > 0.0:
        for p in range(n):
            for c in range(m):
                means[labels[p], c] += z[p, c]
    for p in range(n):
        y, x = p // w, p % w
        inv = inv_sizes[labels[p]]
        for c in range(m):
            v = (ridge + lambda_nl) * z[p, c] - lambda_nl * means[labels[p], c] * inv
            if x > 0:
                v += wh[y, x - 1] * (z[p, c] - z[p - 1, c])
            if x < w - 1:
                v += wh[y, x] * (z[p, c] - z[p + 1, c])
            if y > 0:
                v += wv[y - 1, x] * (z[p, c] - z[p - w, c])
            if y < h - 1:
                v += wv[y, x] * (z[p, c] - z[p + w, c])
            out[p, c] = v
        for c in range(k):
            fit = s[p, c] * z[p, c] + z[p, k + c]
            out[p, c] += s[p, c] * fit
            out[p, k + c] += fit


@njit(cache=True)
def _pcg(s, rhs, z, wh, wv, labels, inv_sizes, lambda_nl, ridge, iterations, goal):  # pragma: no cover
    """Conjugate gradients on A z = rhs from z, preconditioned by each pixel's inverse 2x2 (a, b) block."""
    n, m = z.shape
    h, w = wv.shape[0] + 1, wh.shape[1] + 1
    # preconditioner: the diagonal blocks [[s^2 + d, s], [s, 1 + d]]
    d = np.empty(n)
    for p in range(n):
        y, x = p // w, p % w
        deg = 0.0
        if x > 0:
            deg += wh[y, x - 1]
        if x < w - 1:
            deg += wh[y, x]
        if y > 0:
            deg += wv[y - 1, x]
        if y < h - 1:
            deg += wv[y, x]
        d[p] = deg + lambda_nl * (1.0 - inv_sizes[labels[p]]) + ridge
    means = np.empty((inv_sizes.shape[0], m))
    q = np.empty_like(z)
    r = np.empty_like(z)
    y_ = np.empty_like(z)
    _apply(z, s, wh, wv, labels, inv_sizes, lambda_nl, ridge, means, q)
    for p in range(n):
        for c in range(m):
            r[p, c] = rhs[p, c] - q[p, c]
    goal = goal * _precondition_dot(rhs, s, d, y_)
    ry = _precondition_dot(r, s, d, y_)
    pdir = y_.copy()
    for _ in range(iterations):
        if ry <= goal:
            break
        _apply(pdir, s, wh, wv, labels, inv_sizes, lambda_nl, ridge, means, q)
        pq = 0.0
        for p in range(n):
            for c in range(m):
                pq += pdir[p, c] * q[p, c]
        if pq <= 0.0:  # converged to rounding: a step would divide by zero
            break
        alpha = ry / pq
        for p in range(n):
            for c in range(m):
                z[p, c] += alpha * pdir[p, c]
                r[p, c] -= alpha * q[p, c]
        ry_new = _precondition_dot(r, s, d, y_)
        beta = ry_new / ry
        ry = ry_new
        for p in range(n):
            for c in range(m):
                pdir[p, c] = y_[p, c] + beta * pdir[p, c]


@njit(cache=True)
def _precondition_dot(r, s, d, out):  # pragma: no cover - compiled
    """out = M^-1 r (per-pixel 2x2 block inverses); returns r . out."""
    n, m = r.shape
    k = m // 2
    total = 0.0
    for p in range(n):
        for c in range(k):
            paa, pab, pbb = s[p, c] * s[p, c] + d[p], s[p, c], 1.0 + d[p]
            det = paa * pbb - pab * pab
            ra, rb = r[p, c], r[p, k + c]
            out[p, c] = (pbb * ra - pab * rb) / det
            out[p, k + c] = (paa * rb - pab * ra) / det
            total += ra * out[p, c] + rb * out[p, k + c]
    return total


def global_affine(source: np.ndarray, guide: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel least-squares (a0, b0) of ``guide ~ a0 * source + b0`` over all pixels, shape (K,) each
    (a0 = 1 for a flat source channel)."""
    s = np.asarray(source, dtype=np.float64).reshape(-1, source.shape[-1])
    g = np.asarray(guide, dtype=np.float64).reshape(-1, guide.shape[-1])
    var = s.var(axis=0)
    cov = ((s - s.mean(axis=0)) * (g - g.mean(axis=0))).mean(axis=0)
    a0 = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 1.0)
    return a0, g.mean(axis=0) - a0 * s.mean(axis=0)


def local_affine_maps(source: np.ndarray, guide: np.ndarray, luminance: np.ndarray, lambda_l: float,
                      lambda_nl: float, *, sigma: float = 0.1, cell: float = 0.08, ridge: float = 1e-3,
                      iterations: int = 150, tol: float = 1e-4,
                      groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maps (a, b), each (h, w, K), minimising E for ``source`` and ``guide`` (h, w, K), ``luminance`` (h, w).

    Conjugate gradients from the global map, stopped after ``iterations`` or when the preconditioned
    residual falls below ``tol`` times that of the right-hand side. ``groups`` (h, w) int: semantic
    labels (clusters or a segmentation) that split the E_NL colour cells, so that similar colours are
    tied together within one class only.
    """
    if source.shape != guide.shape or source.shape[:2] != np.shape(luminance):
        raise ValueError(f"source {source.shape}, guide {guide.shape} and luminance {np.shape(luminance)} "
                         "must share their size")
    return _solve(source, guide, luminance, lambda_l, lambda_nl, sigma, cell, ridge, iterations, tol, groups)
