"""Pixel-wise fidelity: PSNR, MAE and the CIEDE2000 colour difference.

All three compare pixel-aligned images on the 0-255 scale (data range 255), as the paired evaluations of
papers 000 (cycle PSNR), 002 (PSNR against the real IHC) and 003 (PSNR and MAE of reconstructions) do.
"""

from __future__ import annotations

import numpy as np

from stainlab.color.lab import rgb_to_lab
from stainlab.metrics._inputs import as_pair, per_image

DATA_RANGE = 255.0


def psnr(a, b):
    """Peak signal-to-noise ratio in dB, ``10 log10(255^2 / MSE)``, MSE over all pixels and channels.

    Identical images give ``inf`` (as scikit-image's ``peak_signal_noise_ratio``). A float for one image,
    one value per image for a batch.
    """
    x, y, single = as_pair(a, b)
    mse = np.mean((x - y) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(DATA_RANGE ** 2 / mse)
    return per_image(values, single)


def mae(a, b):
    """Mean absolute error in grey levels (0-255), over all pixels and channels (paper 003's MAE)."""
    x, y, single = as_pair(a, b)
    return per_image(np.mean(np.abs(x - y), axis=(1, 2, 3)), single)


def _primed_chroma_hue(lab: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C' and h' (radians in [0, 2 pi)) after stretching a* by (1 + G) (Sharma et al. 2005, Eq. 2-4)."""
    a_primed = (1.0 + g) * lab[..., 1]
    chroma = np.hypot(a_primed, lab[..., 2])
    hue = np.mod(np.arctan2(lab[..., 2], a_primed), 2 * np.pi)
    return chroma, hue


def _hue_difference_and_mean(h1, h2, both_chromatic):
    """Delta h' and the mean hue h-bar' with the 360-degree wrap rules (Sharma et al. 2005, Eq. 10, 14)."""
    diff = h2 - h1
    dh = diff - 2 * np.pi * np.sign(diff) * (np.abs(diff) > np.pi)
    total = h1 + h2
    wrap = both_chromatic & (np.abs(diff) > np.pi)
    mean = np.where(wrap, (total + np.where(total < 2 * np.pi, 2 * np.pi, -2 * np.pi)) / 2, total / 2)
    mean = np.where(both_chromatic, mean, total)
    return np.where(both_chromatic, dh, 0.0), mean


def delta_e_2000(lab1, lab2) -> np.ndarray:
    """CIEDE2000 colour difference of CIELAB arrays (any shape ending in 3), k_L = k_C = k_H = 1.

    Sharma, Wu & Dalal, "The CIEDE2000 color-difference formula: implementation notes, supplementary test
    data, and mathematical observations", Color Res. Appl. 30 (2005), Eq. 1-22, vectorised.
    """
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    c_mean = (np.hypot(lab1[..., 1], lab1[..., 2]) + np.hypot(lab2[..., 1], lab2[..., 2])) / 2
    g = 0.5 * (1 - np.sqrt(c_mean ** 7 / (c_mean ** 7 + 25.0 ** 7)))
    c1, h1 = _primed_chroma_hue(lab1, g)
    c2, h2 = _primed_chroma_hue(lab2, g)
    dh, h_mean = _hue_difference_and_mean(h1, h2, (c1 * c2) != 0)
    d_lightness = lab2[..., 0] - lab1[..., 0]
    d_chroma = c2 - c1
    d_hue = 2 * np.sqrt(c1 * c2) * np.sin(dh / 2)
    l_mean = (lab1[..., 0] + lab2[..., 0]) / 2
    cp_mean = (c1 + c2) / 2
    t = (1 - 0.17 * np.cos(h_mean - np.deg2rad(30)) + 0.24 * np.cos(2 * h_mean)
         + 0.32 * np.cos(3 * h_mean + np.deg2rad(6)) - 0.20 * np.cos(4 * h_mean - np.deg2rad(63)))
    d_theta = np.deg2rad(30) * np.exp(-(((np.rad2deg(h_mean) - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_mean ** 7 / (cp_mean ** 7 + 25.0 ** 7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -np.sin(2 * d_theta) * r_c
    terms = ((d_lightness / s_l) ** 2 + (d_chroma / s_c) ** 2 + (d_hue / s_h) ** 2
             + r_t * (d_chroma / s_c) * (d_hue / s_h))
    return np.sqrt(np.maximum(terms, 0.0))


def ciede2000(a, b):
    """Mean CIEDE2000 difference between pixel-aligned RGB images (sRGB, D65 CIELAB); 0 when identical.

    Roughly, 1 is a just-noticeable difference. A float for one image, one value per image for a batch.
    """
    x, y, single = as_pair(a, b)
    return per_image(delta_e_2000(rgb_to_lab(x), rgb_to_lab(y)).mean(axis=(1, 2)), single)
