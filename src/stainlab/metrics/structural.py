"""Structural similarity: SSIM (NumPy and a differentiable torch twin) and multi-scale SSIM.

SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4), 2004, Eq. 13, with the settings papers 000, 003 and StainNet
report: an 11x11 circular-symmetric Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population
(not sample) covariances, the mean of the SSIM map over the positions where the window lies inside the
image, then the mean over R, G, B. This equals scikit-image's ``structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255)``.

MS-SSIM follows Wang, Simoncelli & Bovik, "Multi-scale structural similarity for image quality
assessment", Asilomar 2003, Eq. 7: contrast-structure terms at five dyadic scales and luminance at the
coarsest, with exponents 0.0448, 0.2856, 0.3001, 0.2363, 0.1333 (their Sec. 3.1).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

from stainlab.errors import InputError
from stainlab.metrics._inputs import as_pair, per_image
from stainlab.precision import full_precision

WINDOW_SIZE = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian of length ``size``; its outer product is the 2-D SSIM window."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _window_mean(stack: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local means over axes -3 and -2 (H, W), kept only where the window fits."""
    g = gaussian_window()
    r = WINDOW_SIZE // 2
    out = correlate1d(correlate1d(stack, g, axis=-3, mode="constant"), g, axis=-2, mode="constant")
    return out[..., r:-r, r:-r, :]


def _ssim_maps(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Luminance map l and contrast-structure map cs of Wang et al. 2004, Eq. 6 and 9-10 with C3 = C2/2.

    ``x`` and ``y`` are ``(N, H, W, C)`` floats; the maps are ``(N, H-10, W-10, C)``.
    """
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y, xx, yy, xy = _window_mean(np.stack([x, y, x * x, y * y, x * y]))
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    return luminance, contrast_structure


def _check_window_fits(shape, scales: int) -> None:
    need = WINDOW_SIZE * 2 ** (scales - 1)
    h, w = shape
    if min(h, w) < need:
        raise InputError(f"{'MS-SSIM with ' + str(scales) + ' scales' if scales > 1 else 'SSIM'} needs images "
                         f"of at least {need}x{need} pixels (an {WINDOW_SIZE}x{WINDOW_SIZE} window at the "
                         f"coarsest scale), got {h}x{w}"
                         + ("; pass fewer weights to ms_ssim for smaller images" if scales > 1 else ""))


def _ssim_per_channel(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    luminance, contrast_structure = _ssim_maps(x, y, data_range)
    return (luminance * contrast_structure).mean(axis=(1, 2))


def ssim(a, b):
    """Mean SSIM (Wang et al. 2004) of pixel-aligned RGB images, in [-1, 1]; 1 when identical.

    A float for one image, one value per image for a batch. Images must be at least 11x11.
    """
    x, y, single = as_pair(a, b)
    _check_window_fits(x.shape[1:3], 1)
    return per_image(_ssim_per_channel(x, y, 255.0).mean(axis=1), single)


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average then every second sample (Wang et al. 2003, Sec. 3.1: low-pass and downsample by 2)."""
    h, w = (x.shape[1] // 2) * 2, (x.shape[2] // 2) * 2
    x = x[:, :h, :w]
    return (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) / 4


def ms_ssim(a, b, weights=MS_SSIM_WEIGHTS):
    """Multi-scale SSIM (Wang et al. 2003, Eq. 7) of pixel-aligned RGB images; 1 when identical.

    Per channel, ``prod_j mean(cs_j)^w_j`` over scales ``j = 1..M-1`` times ``mean(l_M cs_M)^w_M`` at the
    coarsest scale (the full SSIM there, as the reference TensorFlow/pytorch_msssim code does), then the
    mean over R, G, B. Negative contrast-structure means are clipped to 0 so that fractional powers stay
    real. Five scales need images of at least 176x176; pass a shorter ``weights`` (e.g. the first three)
    to use fewer scales on smaller images - with ``weights=(1.0,)`` this is exactly :func:`ssim`.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or weights.size == 0:
        raise InputError(f"ms_ssim: weights must be a non-empty 1-D sequence, got {weights!r}")
    x, y, single = as_pair(a, b)
    _check_window_fits(x.shape[1:3], weights.size)
    value = np.ones((x.shape[0], x.shape[3]))
    for j, w in enumerate(weights):
        luminance, contrast_structure = _ssim_maps(x, y, 255.0)
        last = j == weights.size - 1
        term = (luminance * contrast_structure if last else contrast_structure).mean(axis=(1, 2))
        value *= np.maximum(term, 0.0) ** w
        if not last:
            x, y = _downsample(x), _downsample(y)
    return per_image(value.mean(axis=1), single)


@full_precision  # variances as E[x^2] - E[x]^2: fp32 under autocast
def ssim_torch(x, y, data_range: float = 1.0, reduction: str = "mean"):
    """Differentiable SSIM of float torch batches ``(N, C, H, W)``: the same formula as :func:`ssim`.

    For losses such as paper 003's structural cycle loss ``2 - SSIM(x, F(G(x))) - SSIM(y, G(F(y)))``.
    ``data_range`` is the span of the value scale (1 for [0, 1], 255 for 0-255). The luminance term is
    not shift-invariant, so map [-1, 1] network outputs to [0, 1] with ``(x + 1) / 2`` to get the value
    the papers report. ``reduction="mean"`` gives a scalar over the batch, ``"none"`` one value per image.
    """
    import torch
    import torch.nn.functional as F

    if x.shape != y.shape or x.ndim != 4:
        raise InputError(f"ssim_torch: expected two (N, C, H, W) tensors of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if reduction not in ("mean", "none"):
        raise InputError(f"ssim_torch: reduction must be 'mean' or 'none', got {reduction!r}")
    _check_window_fits(x.shape[2:], 1)
    channels = x.shape[1]
    g = torch.as_tensor(gaussian_window(), dtype=x.dtype, device=x.device)
    rows = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    cols = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def window_mean(t):
        return F.conv2d(F.conv2d(t, rows, groups=channels), cols, groups=channels)

    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = window_mean(x), window_mean(y)
    var_x = window_mean(x * x) - mu_x ** 2
    var_y = window_mean(y * y) - mu_y ** 2
    cov = window_mean(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    per_image_value = ssim_map.mean(dim=(1, 2, 3))
    return per_image_value.mean() if reduction == "mean" else per_image_value
