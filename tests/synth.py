"""Synthetic H&E-like images rendered from known stains (Beer-Lambert), for tests with exact answers.

Concentration maps have tissue structure: round nuclei dense in haematoxylin, eosin-stained stroma with
smooth texture, and empty glass, so masks, percentiles and angle searches see realistic mixtures.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stainlab.color import EOSIN, HEMATOXYLIN, normalize_rows, od_to_rgb, tissue_mask


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


REFERENCE_STAINS = (HEMATOXYLIN, EOSIN)


def rotated(vector, axis, degrees):
    """``vector`` (normalised) turned by ``degrees`` about ``axis`` (Rodrigues' formula)."""
    v = normalize_rows(vector)
    k = normalize_rows(axis)
    t = np.radians(degrees)
    return v * np.cos(t) + np.cross(k, v) * np.sin(t) + k * (k @ v) * (1 - np.cos(t))


# Non-Ruifrok stains: H turned 7.7 and E 7.0 degrees away from Ruifrok's (all components stay positive).
SOURCE_STAINS = (rotated(HEMATOXYLIN, [0, 0, 1], 8), rotated(EOSIN, [0, 0, 1], -7))


def separable_maps(seed, glass=0.25, shape=(160, 192)):
    """synth's concentration maps with its stain cross-talk removed.

    ``synth.concentration_maps`` adds 0.12 x stroma to the haematoxylin everywhere and lays nuclei over
    the stroma, so no pixel shows a pure stain: extreme-angle methods then find the purest mixtures,
    3-10 degrees inside the true vectors (see ``test_mixed_stains_keep_their_order``). Here nuclei
    displace the eosin stroma, as in tissue, so a few percent of the pixels are near-pure stains.
    """
    conc = concentration_maps(shape, seed, glass)
    hema = conc[..., 0] - 0.12 * conc[..., 1]
    eosin = conc[..., 1] * np.clip(1 - hema / 0.3, 0, 1)
    return np.stack([hema, eosin], axis=-1)


def psnr(a, b):
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def percentile_matched_case(source_stains=SOURCE_STAINS):
    """(reference, source, exact answer): the source has other stains and concentrations scaled by
    (1.3, 0.7); the answer renders the source's concentrations, scaled per stain to the reference's
    99th tissue percentile, under the reference stains."""
    ref_conc, src_conc = separable_maps(1), separable_maps(2) * [1.3, 0.7]
    reference, source = render(ref_conc, REFERENCE_STAINS), render(src_conc, source_stains)
    p99 = [np.percentile(conc[tissue_mask(im)], 99, axis=0)
           for conc, im in ((ref_conc, reference), (src_conc, source))]
    return reference, source, render(src_conc * (p99[0] / p99[1]), REFERENCE_STAINS)


FLAT_COLOURS = [(0, 0, 0), (255, 255, 255), (200, 110, 190)]    # black, white, one tissue colour
