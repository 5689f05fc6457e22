"""Optical density and the Beer-Lambert law.

A stain of concentration ``c`` and unit absorbance vector ``v`` (one value per R, G, B channel) lets
``I = I0 * exp(-c v)`` of the light through (Beer-Lambert; Ruifrok & Johnston 2001, Eq. 1-2). Optical
density ``OD = -ln(I / I0)`` is therefore linear in the concentrations: ``OD = C @ W`` with the stain
vectors as the rows of ``W``.

We use ``OD = -ln((I + 1) / (I0 + 1))``: the +1 keeps black pixels finite (a peer crashed on
``log(0)``, StainTools #4), and with ``I0 = 255`` no 8-bit pixel has negative density (StainTools #33).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

BACKGROUND = 255.0
"""Default incident light intensity I0: a white 8-bit pixel has zero optical density."""
MAX_OD = float(np.log(BACKGROUND + 1.0))
"""ln 256: the optical density of a black pixel, the largest any 8-bit channel has."""


def rgb_to_od(rgb, background=BACKGROUND, clip: bool = True) -> np.ndarray:
    """Optical density of RGB values in [0, 255] (any shape ending in 3) against the light
    ``background`` (one value, or one per channel: :mod:`stainlab.color.light`; None: white); never inf,
    and never negative unless ``clip`` is off (pixels brighter than the light: torchstain's convention
    keeps them)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    background = BACKGROUND if background is None else np.asarray(background, dtype=np.float64)
    od = -np.log((rgb + 1.0) / (background + 1.0))
    return np.maximum(od, 0.0, out=od) if clip else od


def od_to_rgb(od, background=BACKGROUND) -> np.ndarray:
    """Inverse of :func:`rgb_to_od`: float RGB in [0, 255] under the light ``background``; zero density
    renders as the light (the glass), negative densities brighter, up to 255."""
    od = np.asarray(od, dtype=np.float64)
    rgb = (background + 1.0) * np.exp(-od) - 1.0
    return np.clip(rgb, 0.0, 255.0, out=rgb)


@njit(cache=True, parallel=True)
def _od_linear(rgb, matrix, background, background_out, floor, out):  # pragma: no cover - compiled
    for i in prange(rgb.shape[0]):
        od = np.empty(3)
        for c in range(3):
            od[c] = max(-np.log((rgb[i, c] + 1.0) / (background[c] + 1.0)), floor)
        for c in range(3):
            v = (background_out[c] + 1.0) * np.exp(-(od[0] * matrix[0, c] + od[1] * matrix[1, c]
                                                     + od[2] * matrix[2, c])) - 1.0
            out[i, c] = min(max(v, 0.0), 255.0)


class LinearODMap(NamedTuple):
    """A map that is one 3x3 matrix in optical density: ``OD_out = OD @ matrix``, optical density taken
    against ``light`` (clipped at zero with ``clip``) and rendered under ``light_out`` (:func:`map_od_linear`)."""

    matrix: np.ndarray
    light: np.ndarray
    light_out: np.ndarray
    clip: bool = True


@njit(cache=True)
def _od_of_levels(levels, background, floor, out):  # pragma: no cover - compiled
    """``out[c, k]``: the optical density of level ``levels[k]`` in channel ``c``, by the very
    expression of :func:`_od_linear` (so a map built from these equals it bit for bit)."""
    for c in range(3):
        for k in range(levels.shape[0]):
            out[c, k] = max(-np.log((levels[k] + 1.0) / (background[c] + 1.0)), floor)


def od_of_levels(levels: np.ndarray, light, clip: bool = True) -> np.ndarray:
    """``(3, len(levels))``: each channel's optical density of the float ``levels`` against ``light``
    (RGB), as :func:`map_od_linear` takes it."""
    out = np.empty((3, len(levels)))
    _od_of_levels(np.asarray(levels, dtype=np.float64), np.broadcast_to(np.asarray(light, dtype=np.float64), (3,)).copy(),
                  0.0 if clip else -np.inf, out)
    return out


def map_od_linear(rgb, matrix, background=BACKGROUND, background_out=None, clip: bool = True) -> np.ndarray:
    """``od_to_rgb(rgb_to_od(rgb, background, clip) @ matrix, background_out)`` for RGB rows (M, 3), fused
    in one compiled pass (``background_out`` defaults to ``background``).

    Stain normalizations whose concentrations are linear in optical density (Macenko's least squares,
    Ruifrok's deconvolution) are this map with a 3x3 matrix: ``W_src^+ diag(scale) W_target``; the
    optical density is taken against the source's light and rendered under the target's.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.float64).reshape(-1, 3)
    out = np.empty_like(rgb)
    background = np.broadcast_to(np.asarray(background, dtype=np.float64), (3,)).copy()
    background_out = background if background_out is None else \
        np.broadcast_to(np.asarray(background_out, dtype=np.float64), (3,)).copy()
    _od_linear(rgb, np.ascontiguousarray(matrix, dtype=np.float64), background, background_out,
               0.0 if clip else -np.inf, out)
    return out
