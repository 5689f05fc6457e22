"""Synthetic H&E-like images rendered from known stains (Beer-Lambert), for tests with exact answers.

Concentration maps have tissue structure: round nuclei dense in haematoxylin, eosin-stained stroma with
smooth texture, and empty glass, so masks, percentiles and angle searches see realistic mixtures.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stainlab.color import EOSIN, HEMATOXYLIN, normalize_rows, od_to_rgb


def concentration_maps(shape=(160, 192), seed=0, glass=0.25):
    """(H, W, 2) haematoxylin and eosin concentrations; a ``glass`` fraction of the area is empty."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    hema = np.zeros(shape)
    for _ in range(max(1, h * w // 900)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 8)
        hema = np.maximum(hema, rng.uniform(0.9, 1.6) * np.clip(1.2 - np.hypot(yy - cy, xx - cx) / r, 0, 1))
    stroma = ndimage.gaussian_filter(rng.standard_normal(shape), 6)
    stroma = np.clip(0.55 + 4.0 * stroma, 0.05, 1.2)
    hema += 0.12 * stroma
    tissue = ndimage.gaussian_filter(rng.standard_normal(shape), 12)
    cut = np.quantile(tissue, glass)
    present = (tissue > cut).astype(float)
    conc = np.stack([hema, stroma], axis=-1) * present[..., None]
    return conc


def render(conc, stains=(HEMATOXYLIN, EOSIN), noise=0.0, seed=0):
    """uint8 RGB image of concentrations ``conc`` (H, W, k) under stain rows ``stains`` (k, 3)."""
    w = normalize_rows(np.asarray(stains, dtype=np.float64))
    od = conc @ w
    rgb = od_to_rgb(od)
    if noise:
        rgb = rgb + np.random.default_rng(seed).normal(0, noise, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def he_image(shape=(160, 192), seed=0, stains=(HEMATOXYLIN, EOSIN), scale=(1.0, 1.0), glass=0.25):
    """A rendered H&E-like image with per-stain concentration ``scale``."""
    conc = concentration_maps(shape, seed, glass) * np.asarray(scale, dtype=np.float64)
    return render(conc, stains)
