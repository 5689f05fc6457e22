"""The light of an image: the colour of its glass, the ``I0`` of Beer-Lambert per channel.

Optical density is taken against the incident light, ``OD = -ln((I + 1) / (I0 + 1))``
(:mod:`stainlab.color.od`). Scanners do not agree on ``I0``: one renders glass pure white, another a
grey-beige near 234, a halogen microscope a warm yellow. Against a fixed ``I0 = 255`` such glass has
optical density of its own, tissue detection counts it as tissue, and a normalized image gets the
reference's stains but the wrong glass. So the light is estimated per image, per channel, from the glass:

1. brightness ``b = (R + G + B) / 3`` of every pixel, its histogram over the 256 levels;
2. the glass peak: the fullest brightness level at or above ``MIN_GLASS_BRIGHTNESS``, if the pixels
   within ``PEAK_HALF_WIDTH`` levels of it are at least ``MIN_GLASS_FRACTION`` of the image and at least
   ``MIN_SHARPNESS`` times as many as in each equally wide shoulder beside the peak (glass is one flat
   colour, so its peak is narrow; pale stroma and light eosin spread over many levels);
3. their colour must be flat too: each channel's median absolute deviation at most ``MAX_GLASS_MAD``;
4. the light is the per-channel mean of those pixels (a median would jump between the few levels a
   compressed scan's glass takes, 243 or 246, from tile to tile).

A tile fully covered by tissue has no glass: the estimate then falls back to white (255 in every
channel, today's fixed convention) and says so (``found=False``); estimate it once over a whole slide
(or give it) where tiles lack glass. The peak beat a plain top percentile on real scans, where the
brightest pixels are often pale pink tissue rather than glass.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stainlab.color.od import BACKGROUND

WHITE = np.full(3, BACKGROUND)
"""The fixed light: glass rendered pure white."""
MIN_GLASS_BRIGHTNESS = 150
"""Brightness levels below this are never glass (a dark, dim scan's glass still reads above 180)."""
PEAK_HALF_WIDTH = 4
MIN_GLASS_FRACTION = 0.01
MIN_SHARPNESS = 3.0
MAX_GLASS_MAD = 4.0
SAMPLE = 1 << 18
"""Pixels beyond this many are strided down to about it: the glass peak needs no more."""


class Light(NamedTuple):
    """The estimated light: ``rgb`` (3,) float in [1, 255], whether glass was ``found``, and the
    fraction of the image in the glass peak."""

    rgb: np.ndarray
    found: bool
    glass_fraction: float

    def describe(self) -> str:
        shown = ", ".join(f"{v:.0f}" for v in self.rgb)
        if self.found:
            return f"light ({shown}) from glass covering {100 * self.glass_fraction:.1f}% of the image"
        return f"no glass found (fully covered by tissue?): light taken as white ({shown})"


def estimate_light(image, weights=None) -> Light:
    """The :class:`Light` of a uint8 RGB image (``(H, W, 3)`` or pixels ``(M, 3)``), or of colours
    ``(M, 3)`` in [0, 255] with ``weights`` (a colour histogram's counts: the same answer, within the
    width of its cells)."""
    pixels = np.asarray(image).reshape(-1, 3)
    if weights is None and len(pixels) > SAMPLE:
        pixels = pixels[::-(-len(pixels) // SAMPLE)]
    w = np.ones(len(pixels)) if weights is None else np.asarray(weights, dtype=np.float64)
    brightness = np.clip(np.rint(pixels.sum(axis=1, dtype=np.float64) / 3.0), 0, 255).astype(np.int64)
    counts = np.bincount(brightness, w, minlength=256)
    peak = MIN_GLASS_BRIGHTNESS + int(np.argmax(counts[MIN_GLASS_BRIGHTNESS:]))
    low, high = peak - PEAK_HALF_WIDTH, peak + PEAK_HALF_WIDTH
    width = high - low + 1
    inside = counts[low:high + 1].sum()
    below = counts[max(low - width, 0):low].sum()
    above = counts[high + 1:high + 1 + width].sum()
    fraction = float(inside / max(w.sum(), 1e-12))
    # A peak at the top of the scale has no upper shoulder (glass clipped to white): only the lower counts.
    shoulder = max(below, above) if high + width <= 255 else below
    if fraction < MIN_GLASS_FRACTION or inside < MIN_SHARPNESS * shoulder:
        return Light(WHITE.copy(), False, fraction)
    near = (brightness >= low) & (brightness <= high)
    glass, gw = pixels[near].astype(np.float64), w[near]
    median = np.array([_weighted_median(glass[:, c], gw) for c in range(3)])
    spread = np.array([_weighted_median(np.abs(glass[:, c] - median[c]), gw) for c in range(3)])
    if (spread > MAX_GLASS_MAD).any():
        return Light(WHITE.copy(), False, fraction)
    return Light(np.clip(gw @ glass / gw.sum(), 1.0, BACKGROUND), True, fraction)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def resolve_light(light, image=None, what: str = "light") -> Light:
    """A ``light`` option as a :class:`Light`: ``"estimate"`` (from ``image``), ``"fixed"`` (white) or
    an RGB triple in [1, 255]; :class:`ValueError` naming ``what`` otherwise."""
    if isinstance(light, str):
        if light == "estimate":
            return estimate_light(image)
        if light == "fixed":
            return Light(WHITE.copy(), True, 0.0)
        raise ValueError(f"{what}: expected 'estimate', 'fixed' or an (R, G, B) light, got {light!r}")
    rgb = check_light_rgb(light, what)
    return Light(rgb, True, 0.0)


def check_light_rgb(light, what: str = "light") -> np.ndarray:
    """An RGB light given by the user or read from a file: three finite values in [1, 255]."""
    try:
        rgb = np.asarray(light, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        rgb = np.array([np.nan])
    if rgb.shape != (3,) or not np.isfinite(rgb).all() or rgb.min() < 1.0 or rgb.max() > BACKGROUND:
        raise ValueError(f"{what}: expected 'estimate', 'fixed' or an (R, G, B) light with values in "
                         f"[1, 255], got {light!r}")
    return rgb
