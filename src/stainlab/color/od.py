"""Optical density and the Beer-Lambert law.

A stain of concentration ``c`` and unit absorbance vector ``v`` (one value per R, G, B channel) lets
``I = I0 * exp(-c v)`` of the light through (Beer-Lambert; Ruifrok & Johnston 2001, Eq. 1-2). Optical
density ``OD = -ln(I / I0)`` is therefore linear in the concentrations: ``OD = C @ W`` with the stain
vectors as the rows of ``W``.

We use ``OD = -ln((I + 1) / (I0 + 1))``: the +1 keeps black pixels finite (a peer crashed on
``log(0)``, StainTools #4), and with ``I0 = 255`` no 8-bit pixel has negative density (StainTools #33).
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 255.0
"""Default incident light intensity I0: a white 8-bit pixel has zero optical density."""


def rgb_to_od(rgb, background: float = BACKGROUND) -> np.ndarray:
    """Optical density of RGB values in [0, 255] (any shape ending in 3); never negative, never inf."""
    rgb = np.asarray(rgb, dtype=np.float64)
    od = -np.log((rgb + 1.0) / (background + 1.0))
    return np.maximum(od, 0.0, out=od)


def od_to_rgb(od, background: float = BACKGROUND) -> np.ndarray:
    """Inverse of :func:`rgb_to_od`: float RGB in [0, 255]; negative densities render as background."""
    od = np.asarray(od, dtype=np.float64)
    rgb = (background + 1.0) * np.exp(-od) - 1.0
    return np.clip(rgb, 0.0, 255.0, out=rgb)
