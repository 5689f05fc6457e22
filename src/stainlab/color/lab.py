"""CIELAB conversions on float RGB values in [0, 255] (sRGB primaries, D65 white), any leading shape.

The same formulas as scikit-image's ``rgb2lab``/``lab2rgb`` (IEC 61966-2-1 sRGB transfer curve, CIE 1976
L*a*b*), compiled with numba: per-pixel transforms call them on every distinct colour of every image.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# sRGB (linear) -> XYZ, D65 (IEC 61966-2-1), and the D65 reference white.
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0              # CIE 1976: f(t) = t^(1/3) above DELTA^3, linear below
_KAPPA = 1.0 / (3.0 * _DELTA ** 2)


@njit(cache=True, parallel=True)
def _rgb_to_lab(rgb, m, white, out):  # pragma: no cover - compiled
    for i in prange(rgb.shape[0]):
        lin = np.empty(3)
        for c in range(3):
            v = rgb[i, c] / 255.0
            lin[c] = ((v + 0.055) / 1.055) ** 2.4 if v > 0.04045 else v / 12.92
        f = np.empty(3)
        for r in range(3):
            t = (m[r, 0] * lin[0] + m[r, 1] * lin[1] + m[r, 2] * lin[2]) / white[r]
            f[r] = np.cbrt(t) if t > _DELTA ** 3 else _KAPPA * t + 4.0 / 29.0
        out[i, 0] = 116.0 * f[1] - 16.0
        out[i, 1] = 500.0 * (f[0] - f[1])
        out[i, 2] = 200.0 * (f[1] - f[2])


@njit(cache=True, parallel=True)
def _lab_to_rgb(lab, m, white, out):  # pragma: no cover - compiled
    for i in prange(lab.shape[0]):
        fy = (lab[i, 0] + 16.0) / 116.0
        f = (fy + lab[i, 1] / 500.0, fy, fy - lab[i, 2] / 200.0)
        xyz = np.empty(3)
        for c in range(3):
            xyz[c] = white[c] * (f[c] ** 3 if f[c] > _DELTA else (f[c] - 4.0 / 29.0) / _KAPPA)
        for r in range(3):
            v = min(max(m[r, 0] * xyz[0] + m[r, 1] * xyz[1] + m[r, 2] * xyz[2], 0.0), 1.0)
            v = 1.055 * v ** (1.0 / 2.4) - 0.055 if v > 0.0031308 else 12.92 * v
            out[i, r] = min(max(v * 255.0, 0.0), 255.0)


def _run(kernel, values, matrix):
    values = np.asarray(values, dtype=np.float64)
    flat = np.ascontiguousarray(values.reshape(-1, 3))
    out = np.empty_like(flat)
    kernel(flat, matrix, _WHITE, out)
    return out.reshape(values.shape)


def rgb_to_lab(rgb) -> np.ndarray:
    """CIELAB (L in [0, 100]) of float or uint8 RGB values in [0, 255]."""
    return _run(_rgb_to_lab, rgb, _RGB_TO_XYZ)


def lab_to_rgb(lab) -> np.ndarray:
    """Float RGB in [0, 255] of CIELAB values; out-of-gamut colours are clipped to the RGB cube."""
    return _run(_lab_to_rgb, lab, _XYZ_TO_RGB)
