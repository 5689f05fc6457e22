"""Weighted statistics.

Per-pixel transforms are fitted and applied on an image's colour histogram (each distinct colour once,
weighted by its pixel count), so every statistic they need takes optional weights. With integer weights
the results equal the unweighted statistic of the pixels the histogram came from.
"""

from __future__ import annotations

import numpy as np


def weighted_mean_std(values, weights=None, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation along ``axis``."""
    values = np.asarray(values, dtype=np.float64)
    if weights is None:
        return values.mean(axis=axis), values.std(axis=axis)
    w = np.asarray(weights, dtype=np.float64)
    shape = [1] * values.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    total = w.sum()
    mean = (values * w).sum(axis=axis) / total
    var = (((values - np.expand_dims(mean, axis)) ** 2) * w).sum(axis=axis) / total
    return mean, np.sqrt(var)


def weighted_percentile(values, q, weights=None) -> np.ndarray:
    """Percentile(s) ``q`` (0-100) of a 1-D array, linear interpolation as ``np.percentile``.

    With integer weights this equals ``np.percentile(np.repeat(values, weights), q)``.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if weights is None:
        return np.percentile(values, q)
    w = np.asarray(weights, dtype=np.float64).ravel()
    order = np.argsort(values)
    v, cum = values[order], np.cumsum(w[order])
    pos = np.asarray(q, dtype=np.float64) / 100.0 * (cum[-1] - 1.0)
    lo = np.floor(pos)
    frac = pos - lo
    # Expanded index i falls on the first sorted value whose cumulative weight exceeds i.
    i_lo = np.minimum(np.searchsorted(cum, lo, side="right"), len(v) - 1)
    i_hi = np.minimum(np.searchsorted(cum, lo + 1.0, side="right"), len(v) - 1)
    return v[i_lo] + frac * (v[i_hi] - v[i_lo])
