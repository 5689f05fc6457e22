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
from numba import njit

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


def estimate_light(image, weights=None, every_pixel: bool = False) -> Light:
    """The :class:`Light` of a uint8 RGB image (``(H, W, 3)`` or pixels ``(M, 3)``), or of colours
    ``(M, 3)`` in [0, 255] with ``weights`` (a colour histogram's counts: the same answer, within the
    width of its cells). Bytes beyond :data:`SAMPLE` pixels are strided down to about it unless
    ``every_pixel`` (the exact path's light, for a method whose glass moves with it by a fraction of a
    level)."""
    pixels = np.asarray(image).reshape(-1, 3)
    if weights is None and pixels.dtype == np.uint8:
        return _from_bytes(pixels[::-(-len(pixels) // SAMPLE)] if len(pixels) > SAMPLE and not every_pixel
                           else pixels)
    w = np.ones(len(pixels)) if weights is None else np.asarray(weights, dtype=np.float64)
    brightness = np.clip(np.rint(pixels.sum(axis=1, dtype=np.float64) / 3.0), 0, 255).astype(np.int64)
    low, high, fraction = _glass_window(np.bincount(brightness, w, minlength=256), float(w.sum()))
    if low < 0:
        return Light(WHITE.copy(), False, fraction)
    near = (brightness >= low) & (brightness <= high)
    glass, gw = pixels[near].astype(np.float64), w[near]
    median = np.array([_weighted_median(glass[:, c], gw) for c in range(3)])
    spread = np.array([_weighted_median(np.abs(glass[:, c] - median[c]), gw) for c in range(3)])
    return _light(gw @ glass / gw.sum(), spread, fraction)


@njit(cache=True, nogil=True)
def _glass_window(counts, total):  # pragma: no cover - compiled
    """Step 2 of the module docstring on a brightness histogram: the lowest and highest level of the
    glass peak (-1, -1 without glass), and the fraction of the pixels in that window."""
    peak = MIN_GLASS_BRIGHTNESS + np.argmax(counts[MIN_GLASS_BRIGHTNESS:])
    low, high = peak - PEAK_HALF_WIDTH, peak + PEAK_HALF_WIDTH
    width = high - low + 1
    inside = counts[low:high + 1].sum()
    below = counts[max(low - width, 0):low].sum()
    above = counts[high + 1:high + 1 + width].sum()
    fraction = inside / max(total, 1e-12)
    # A peak at the top of the scale has no upper shoulder (glass clipped to white): only the lower counts.
    shoulder = max(below, above) if high + width <= 255 else below
    if fraction >= MIN_GLASS_FRACTION and inside >= MIN_SHARPNESS * shoulder:
        return low, high, fraction
    return -1, -1, fraction


def _light(mean: np.ndarray, spread: np.ndarray, fraction: float) -> Light:
    """Steps 3-4: the light from the glass pixels' mean, unless their colour is not flat."""
    if (spread > MAX_GLASS_MAD).any():
        return Light(WHITE.copy(), False, fraction)
    return Light(np.clip(mean, 1.0, BACKGROUND), True, fraction)


def _from_bytes(pixels: np.ndarray) -> Light:
    """:func:`estimate_light` of uint8 pixels by one compiled call (:func:`_glass_of_bytes`)."""
    found, mean, spread, fraction = _glass_of_bytes(pixels)
    return _light(mean, spread, fraction) if found else Light(WHITE.copy(), False, fraction)


@njit(cache=True, nogil=True)
def _glass_of_bytes(pixels):  # pragma: no cover - compiled
    """Steps 1-3 on uint8 pixels by two passes: the brightness histogram, then the per-channel level
    histograms of the glass peak, whose mean, median and spread (median absolute deviation) are exact.
    Returns whether glass was found, its mean and spread per channel, and the fraction in the peak.

    Both passes tally ``R + G + B`` (brightness ``b`` is ``(R + G + B + 1) // 3``, so ``low <= b <= high``
    exactly when ``3 low - 1 <= R + G + B <= 3 high + 1``) into interleaved tables: glass is long runs of
    one colour, whose increments of one counter would each wait for the last (0.124 -> 0.098 ms a 256 x
    256 tile)."""
    n = pixels.shape[0]
    sums = np.zeros((4, 768), dtype=np.int64)
    for i in range(n):
        sums[i & 3, np.int64(pixels[i, 0]) + pixels[i, 1] + pixels[i, 2]] += 1
    counts = np.zeros(256, dtype=np.int64)
    for total in range(766):
        counts[(total + 1) // 3] += sums[0, total] + sums[1, total] + sums[2, total] + sums[3, total]
    low, high, fraction = _glass_window(counts, float(n))
    mean, spread = np.zeros(3), np.zeros(3)
    if low < 0:
        return False, mean, spread, fraction
    interleaved = np.zeros((2, 3, 256), dtype=np.int64)
    for i in range(n):
        total = np.int64(pixels[i, 0]) + pixels[i, 1] + pixels[i, 2]
        if 3 * low - 1 <= total <= 3 * high + 1:
            for c in range(3):
                interleaved[i & 1, c, pixels[i, c]] += 1
    glass = interleaved[0] + interleaved[1]
    half = 0.5 * glass[0].sum()
    for c in range(3):
        median = _first_reaching(glass[c], half)
        distances = np.zeros(256, dtype=np.int64)
        for level in range(256):
            distances[abs(level - median)] += glass[c, level]
            mean[c] += level * glass[c, level]
        spread[c] = _first_reaching(distances, half)
        mean[c] /= 2.0 * half
    return True, mean, spread, fraction


@njit(cache=True, nogil=True)
def _first_reaching(counts, level):  # pragma: no cover - compiled
    """The first index at which the running sum of ``counts`` reaches ``level``."""
    total = 0
    for i in range(counts.shape[0]):
        total += counts[i]
        if total >= level:
            return i
    return counts.shape[0]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The lower weighted median: the first value whose cumulative weight reaches half the total."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def resolve_light(light, image=None, what: str = "light", weights=None, every_pixel: bool = False) -> Light:
    """A ``light`` option as a :class:`Light`: ``"estimate"`` (from ``image``, or from colours with
    histogram ``weights``, as :func:`estimate_light` takes them), ``"fixed"`` (white) or an RGB triple in
    [1, 255]; :class:`ValueError` naming ``what`` otherwise."""
    if isinstance(light, str):
        if light == "estimate":
            return estimate_light(image, weights, every_pixel)
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
