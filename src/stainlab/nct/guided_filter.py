"""Guided filter and fast guided filter, used to upsample the colour-transfer maps a, b.

Paper 001, Algorithm 2 line 13 ("upscale a^L, b^L with Fast Guided Filter"). Guided filter: He, Sun &
Tang, "Guided image filtering", TPAMI 2013, Eq. 5-6 and Algorithm 1: in every (2r+1)^2 window the output
is a linear function of the guide I, ``q = mean(A) * I + mean(B)`` with ``A = cov(I, p) / (var(I) + eps)``
and ``B = mean(p) - A * mean(I)``. Fast guided filter: He & Sun, arXiv:1505.00996 (2015), Algorithm 1:
compute A and B at low resolution, upsample them bilinearly, and apply them to the full-resolution
guide, so the output follows the full-resolution edges at low-resolution cost.

Box means use summed-area tables (O(1) per pixel whatever the radius) and divide by the number of
pixels actually inside the window, so borders are averaged over the part of the window in the image.
"""

from __future__ import annotations

import numpy as np
import torch


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window clipped to the image, of ``x`` (h, w) or (h, w, k)."""
    x = np.asarray(x, dtype=np.float64)
    return _box_sum(x, radius) / _box_sum(np.ones(x.shape[:2]), radius).reshape(x.shape[:2] + (1,) * (x.ndim - 2))


def _box_sum(x: np.ndarray, radius: int) -> np.ndarray:
    for axis in (0, 1):
        n = x.shape[axis]
        table = np.cumsum(x, axis=axis)
        table = np.concatenate([np.zeros_like(np.take(table, [0], axis=axis)), table], axis=axis)
        hi = np.minimum(np.arange(n) + radius + 1, n)
        lo = np.maximum(np.arange(n) - radius, 0)
        x = np.take(table, hi, axis=axis) - np.take(table, lo, axis=axis)
    return x


def guided_coefficients(guide: np.ndarray, target: np.ndarray, radius: int, eps: float):
    """Window-averaged linear coefficients (mean A, mean B), each (h, w, k), of ``target`` (h, w, k)
    on the grey ``guide`` (h, w)."""
    guide = np.asarray(guide, dtype=np.float64)[..., None]
    target = np.asarray(target, dtype=np.float64)
    mean_i, mean_p = box_mean(guide, radius), box_mean(target, radius)
    cov_ip = box_mean(guide * target, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (np.maximum(var_i, 0.0) + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius), box_mean(b, radius)


def guided_filter(guide: np.ndarray, target: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al. 2013: ``target`` (h, w) or (h, w, k) filtered under the grey ``guide`` (h, w)."""
    flat = np.asarray(target, dtype=np.float64)
    stacked = flat[..., None] if flat.ndim == 2 else flat
    a, b = guided_coefficients(guide, stacked, radius, eps)
    out = a * np.asarray(guide, dtype=np.float64)[..., None] + b
    return out[..., 0] if flat.ndim == 2 else out


def fast_guided_upsample(guide_low: np.ndarray, target_low: np.ndarray, guide_high: np.ndarray,
                         radius: int, eps: float) -> np.ndarray:
    """He & Sun 2015: ``target_low`` (h, w, k) filtered under ``guide_low`` (h, w), brought to the
    size of ``guide_high`` (H, W) by upsampling the coefficients bilinearly; returns (H, W, k)."""
    a, b = guided_coefficients(guide_low, target_low, radius, eps)
    size = guide_high.shape[:2]
    a, b = (resize(c, size) for c in (a, b))
    return a * np.asarray(guide_high, dtype=np.float64)[..., None] + b


def resize(maps: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """(h, w, k) maps resized to ``size`` with torch's ``mode`` ("bilinear": pixel centres aligned, edges
    clamped; "area": box averages for shrinking); no-op at the same size."""
    if maps.shape[:2] == tuple(size):
        return maps
    x = torch.from_numpy(np.ascontiguousarray(maps.transpose(2, 0, 1)))[None]
    align = {"align_corners": False} if mode == "bilinear" else {}
    out = torch.nn.functional.interpolate(x, size=tuple(size), mode=mode, **align)
    return out[0].permute(1, 2, 0).numpy()
