"""Weight-free distances between colour distributions, for unpaired results (no pretrained network).

An FID needs an ImageNet network; these need nothing. They compare the pixels of two images (or two
sets of images, pooled) channel by channel:

* :func:`channel_wasserstein` - the 1-D Wasserstein-1 (earth mover's) distance per channel in CIELAB,
  optical density or RGB, averaged over the three channels. For 1-D distributions W1 is the area between
  the two cumulative distribution functions (Villani, "Optimal Transport", 2009, Remark 2.19), computed
  exactly by ``scipy.stats.wasserstein_distance``. Units are those of the space (e.g. L*, a*, b* units).
* :func:`sliced_wasserstein` - the same Wasserstein-1 distance along random unit directions of the
  colour space, averaged (the sliced Wasserstein distance, Rabin, Peyre, Delon & Bernot, "Wasserstein
  barycenter and its application to texture mixing", SSVM 2011). Channels one at a time compare only
  the marginals: a method that keeps every channel's histogram but mixes which L* goes with which a*
  and b* (the tissue's hues) is invisible to them, not to the directions across channels. Units are
  those of the space.
* :func:`histogram_intersection` - ``1 - sum_i min(p_i, q_i)`` on normalised per-channel RGB histograms
  (Swain & Ballard, "Color indexing", IJCV 1991, Eq. 1, as a distance), in [0, 1].
* :func:`chi_square_distance` - ``1/2 sum_i (p_i - q_i)^2 / (p_i + q_i)`` on the same histograms, in [0, 1].

All are zero for identical inputs and symmetric in their arguments.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from stainlab.color.lab import rgb_to_lab
from stainlab.color.od import rgb_to_od
from stainlab.errors import InputError
from stainlab.metrics._inputs import pooled_pixels

_SPACES = {"lab": rgb_to_lab, "od": rgb_to_od, "rgb": lambda rgb: rgb}
_DIRECTIONS_AT_ONCE = 8   # sliced: projections sorted together, memory ~ 3 x pixels x this x 8 bytes


def _in_space(images, space: str, what: str) -> np.ndarray:
    if space not in _SPACES:
        raise InputError(f"unknown colour space {space!r}; choose one of {sorted(_SPACES)}")
    return _SPACES[space](pooled_pixels(images, what))


def channel_wasserstein(a, b, space: str = "lab") -> float:
    """Mean over channels of the 1-D Wasserstein-1 distance between the pixel values of ``a`` and ``b``.

    ``a`` and ``b`` are images, batches or lists of images (pixels are pooled; sizes may differ);
    ``space`` is ``"lab"`` (default), ``"od"`` (optical density, natural log) or ``"rgb"``.
    """
    x, y = _in_space(a, space, "a"), _in_space(b, space, "b")
    return float(np.mean([wasserstein_distance(x[:, c], y[:, c]) for c in range(3)]))


def sliced_wasserstein(a, b, space: str = "lab", directions: int = 64, seed: int = 0) -> float:
    """Mean over ``directions`` seeded random unit vectors ``u`` of the 1-D Wasserstein-1 distance
    between ``x . u`` and ``y . u``, the pixels of ``a`` and ``b`` in ``space`` (as in
    :func:`channel_wasserstein`; sizes may differ). The same seed gives the same directions, so two
    values compare."""
    if isinstance(directions, bool) or not isinstance(directions, (int, np.integer)) or directions < 1:
        raise InputError(f"directions must be a positive integer, got {directions!r}")
    x, y = _in_space(a, space, "a"), _in_space(b, space, "b")
    units = np.random.default_rng(seed).standard_normal((directions, 3))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    per_direction = [_wasserstein_columns(np.sort(x @ block.T, axis=0), np.sort(y @ block.T, axis=0))
                     for block in np.array_split(units, -(-directions // _DIRECTIONS_AT_ONCE))]
    return float(np.mean(np.concatenate(per_direction)))


def _wasserstein_columns(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """W1 between the samples of each column of sorted ``xs`` (n, k) and ``ys`` (m, k), all columns at
    once: ``integral over t in [0, 1] of |F^-1(t) - G^-1(t)|``. Both quantile functions are steps that
    change only at multiples of 1/n and 1/m, the same for every column, so the integral is an exact sum
    over the intervals between those breakpoints."""
    n, m = len(xs), len(ys)
    breaks = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
    middle = (breaks[:-1] + breaks[1:]) / 2
    widths = np.diff(breaks)
    return widths @ np.abs(xs[(middle * n).astype(int)] - ys[(middle * m).astype(int)])


def _channel_histograms(images, bins: int, what: str) -> np.ndarray:
    """``(3, bins)`` normalised histograms of R, G, B over [0, 256)."""
    if not isinstance(bins, (int, np.integer)) or not 1 <= bins <= 256:
        raise InputError(f"bins must be an integer in [1, 256], got {bins!r}")
    pixels = pooled_pixels(images, what)
    hist = np.stack([np.histogram(pixels[:, c], bins=bins, range=(0, 256))[0] for c in range(3)])
    return hist / pixels.shape[0]


def histogram_intersection(a, b, bins: int = 64) -> float:
    """``1 - sum_i min(p_i, q_i)`` of per-channel RGB histograms, averaged over channels; in [0, 1]."""
    p, q = _channel_histograms(a, bins, "a"), _channel_histograms(b, bins, "b")
    return float(1.0 - np.minimum(p, q).sum(axis=1).mean())


def chi_square_distance(a, b, bins: int = 64) -> float:
    """``1/2 sum_i (p_i - q_i)^2 / (p_i + q_i)`` of per-channel RGB histograms (empty bins skipped)."""
    p, q = _channel_histograms(a, bins, "a"), _channel_histograms(b, bins, "b")
    total = p + q
    terms = np.divide((p - q) ** 2, total, out=np.zeros_like(total), where=total > 0)
    return float(0.5 * terms.sum(axis=1).mean())
