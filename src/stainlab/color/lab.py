"""CIELAB conversions on float RGB values in [0, 255] (sRGB, D65), any leading shape."""

from __future__ import annotations

import warnings

import numpy as np
from skimage import color as skcolor


def rgb_to_lab(rgb) -> np.ndarray:
    """CIELAB (L in [0, 100]) of float or uint8 RGB values in [0, 255]."""
    rgb = np.asarray(rgb, dtype=np.float64) / 255.0
    return skcolor.rgb2lab(rgb.reshape(-1, 1, 3)).reshape(rgb.shape)


def lab_to_rgb(lab) -> np.ndarray:
    """Float RGB in [0, 255] of CIELAB values; out-of-gamut colours are clipped."""
    lab = np.asarray(lab, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns for each out-of-gamut colour it clips
        rgb = skcolor.lab2rgb(lab.reshape(-1, 1, 3)).reshape(lab.shape)
    return rgb * 255.0
