"""Bidirectional similarity voting: the guidance image G built from the reference's colours.

Paper 001, Algorithm 2 line 10 ("G^L <- reconstruct S^L with R^L and bidirectional mappings") and
Sec. 2.2.1; He et al. 2019, Sec. 4.1, after Simakov et al. 2008 ("Summarizing visual data using
bidirectional similarity", Eq. 3-4). Every source pixel p takes the average of the reference colours
that both fields put on it:

- coherence (source -> reference): each source patch centred at q = p - o that covers p is matched to
  the reference patch at phi_SR(q), whose pixel phi_SR(q) + o lands on p;
- completeness (reference -> source): each reference patch centred at r is matched to the source
  patch at phi_RS(r); its pixel r + o lands on phi_RS(r) + o.

The two sums are weighted by 1/|S| and 1/|R| as in Simakov et al., so a small reference is not drowned
by a large source.
"""

from __future__ import annotations

import numpy as np


def _offsets(patch: int):
    r = patch // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def vote(reference: np.ndarray, forward: np.ndarray, backward: np.ndarray, patch: int = 3) -> np.ndarray:
    """G (h, w, K): the reference's values (h2, w2, K) voted onto the source grid.

    ``forward`` (h, w, 2): source -> reference field; ``backward`` (h2, w2, 2): reference -> source.
    """
    h, w = forward.shape[:2]
    h2, w2, channels = reference.shape
    ref_flat = reference.reshape(-1, channels).astype(np.float64)
    coherent_sum, coherent_count = np.zeros((h * w, channels)), np.zeros(h * w)
    complete_sum, complete_count = np.zeros((h * w, channels)), np.zeros(h * w)
    sy, sx = np.mgrid[0:h, 0:w]
    ry, rx = np.mgrid[0:h2, 0:w2]
    for dy, dx in _offsets(patch):
        # coherence: pixel p reads the match of the patch centred at q = p - o, at phi(q) + o
        qy, qx = sy - dy, sx - dx
        ok = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        match = forward[qy[ok], qx[ok]]
        ty, tx = match[:, 0] + dy, match[:, 1] + dx
        inside = (ty >= 0) & (ty < h2) & (tx >= 0) & (tx < w2)
        target = (sy[ok] * w + sx[ok])[inside]
        coherent_sum[target] += ref_flat[ty[inside] * w2 + tx[inside]]
        coherent_count[target] += 1
        # completeness: reference pixel r + o is written at phi_RS(r) + o
        py, px = backward[..., 0] + dy, backward[..., 1] + dx
        vy, vx = ry + dy, rx + dx
        ok = (py >= 0) & (py < h) & (px >= 0) & (px < w) & (vy >= 0) & (vy < h2) & (vx >= 0) & (vx < w2)
        flat = py[ok] * w + px[ok]
        complete_count += np.bincount(flat, minlength=h * w)
        values = ref_flat[vy[ok] * w2 + vx[ok]]
        for c in range(channels):
            complete_sum[:, c] += np.bincount(flat, weights=values[:, c], minlength=h * w)
    weight_s, weight_r = 1.0 / (h * w), 1.0 / (h2 * w2)
    total = coherent_sum * weight_s + complete_sum * weight_r
    count = coherent_count * weight_s + complete_count * weight_r
    return (total / count[:, None]).reshape(h, w, channels)
