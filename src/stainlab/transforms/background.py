"""Background-colour affine normalization: the legacy method that paper 004 (Sjostrand et al., "Color
Normalization of Blood Cell Images", SCIA 2019, Sec. 1 and Fig. 2) describes for raw slide images: it
"first finds a representative background color and uses an affine transform on the entire image to set
this background to a predefined value".

The transform is a per-channel gain, ``out_c = x_c * target_c / background_c``: the affine map
``a x + b`` with ``b = 0``, which rescales the transmitted light as a change of illumination does,
sends the image's background colour to the target and keeps black black. Choices, in order:

1. Background pixels are those the package's tissue rule calls non-tissue (every channel's optical
   density at most 0.15, :mod:`stainlab.color.tissue`).
2. The representative colour is the glass peak of each channel's histogram of those pixels: the mode
   of the histogram smoothed over a few levels, refined to the weighted median of the background values
   within a few levels of it. Pale tissue that passes the threshold sits in the tail and moves neither;
   a high percentile would instead follow the glass's noise upwards.
3. An image with (almost) no background pixels, e.g. a raw image under dim or tinted light, gets the
   per-channel 99th percentile of all its pixels (its brightest pixels) instead, with a warning.
4. If even those are darker than an eighth of full scale in some channel (a black tile), there is no
   light level to normalize: :class:`~stainlab.errors.NoTissueError`, so a source image is passed
   through unchanged with a warning and a reference is refused. Gains therefore stay below 8.

``fit(reference)`` sets the target to the reference's background colour found the same way; unfitted,
the target is ``target`` (default white, 255 in every channel). A reference with a flat colour channel
(blank glass, black, one colour) is refused: it shows no tissue to tell its background from (issue 12).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import gaussian_filter1d

from stainlab.color.stats import weighted_percentile
from stainlab.errors import InputError, NoBackgroundWarning, NoTissueError
from stainlab.transforms.base import PixelTransform
from stainlab.transforms.channels import merged, split_colors, total
from stainlab.transforms.checks import brief, check_fields, check_float, require_color_spread, stored_array
from stainlab.transforms.lut import DEFAULT_BITS

WHITE = (255.0, 255.0, 255.0)
MIN_BACKGROUND_FRACTION = 0.005  # below this share of the pixels, an image "has no background"
BRIGHTEST_PERCENTILE = 99.0      # fallback: the brightest pixels stand in for the background
MIN_BACKGROUND_LEVEL = 32.0      # an eighth of full scale: anything darker is not the light source
_PEAK_SMOOTHING = 2.0            # levels (Gaussian sigma) when locating the glass peak
_PEAK_HALF_WIDTH = 6.0           # levels either side of the peak that refine it


def glass_peak(values, weights=None) -> float:
    """The dominant level of one channel's background values: smoothed-histogram mode, refined to the
    weighted median of the values within ``_PEAK_HALF_WIDTH`` levels of it."""
    values = np.asarray(values, dtype=np.float64)
    counts = np.bincount(np.clip(np.rint(values), 0, 255).astype(np.intp), weights=weights, minlength=256)
    mode = float(np.argmax(gaussian_filter1d(counts, _PEAK_SMOOTHING, mode="constant")))
    near = np.abs(values - mode) <= _PEAK_HALF_WIDTH
    return float(weighted_percentile(values[near], 50, None if weights is None else weights[near]))


def estimate_background(colors, weights=None, what: str = "image") -> np.ndarray:
    """Representative background RGB colour of float RGB ``colors`` (module docstring, steps 1-4)."""
    return background_color(*split_colors(np.asarray(colors, dtype=np.float64), weights), what)


def background_color(tissue, glass, what: str = "image") -> np.ndarray:
    """:func:`estimate_background` from the per-channel distributions of the tissue and the glass
    (:mod:`stainlab.transforms.channels`)."""
    if total(glass) >= MIN_BACKGROUND_FRACTION * (total(tissue) + total(glass)):
        return np.array([glass_peak(v, w) for v, w in glass])
    brightest = np.array([weighted_percentile(v, BRIGHTEST_PERCENTILE, w) for v, w in merged(tissue, glass)])
    if (brightest < MIN_BACKGROUND_LEVEL).any():
        raise NoTissueError(f"background: {what} has no usable background (its brightest pixels, "
                            f"{np.round(brightest, 1).tolist()}, are too dark to be the light source)")
    warnings.warn(f"background: {what} has no background (under {100 * MIN_BACKGROUND_FRACTION:.1f}% of "
                  f"pixels are non-tissue); using its brightest pixels (per-channel "
                  f"{BRIGHTEST_PERCENTILE:g}th percentile) as the background colour",
                  NoBackgroundWarning, stacklevel=3)
    return brightest


def _check_target(target) -> tuple[float, float, float]:
    """Three RGB numbers in [1, 255]: the colour the background is sent to (0 would black out a channel)."""
    if not (isinstance(target, (list, tuple, np.ndarray)) and len(target) == 3):
        raise InputError(f"background: target must be three RGB values from 1 to 255, got {brief(target)}")
    return tuple(check_float("background: target", v, 1.0, 255.0) for v in target)


class BackgroundAffine(PixelTransform):
    """Background-colour affine normalization (paper 004's legacy method): per-channel gain to a target."""

    name = "background"
    stats_bits = 8  # per-channel statistics stay exact
    separable = True
    requires_fit = False

    def __init__(self, target=None, lut_bits: int = DEFAULT_BITS) -> None:
        super().__init__(lut_bits)
        self.target = None if target is None else _check_target(target)
        self.target_color = np.array(WHITE if target is None else self.target)

    def _fit_colors(self, colors, weights):
        require_color_spread(colors, weights, "background reference")
        self.target_color = estimate_background(colors, weights, "reference")

    def _source(self, colors, weights):
        return estimate_background(colors, weights)

    def _channel_source(self, tissue, glass):
        return background_color(tissue, glass)

    def _map(self, colors, source):
        return colors * (self.target_color / source)

    def _get_state(self):
        return {"target_color": self.target_color}

    def _set_state(self, state):
        what = "background fitted state"
        check_fields(state, ("target_color",), what)
        self.target_color = stored_array(state, "target_color", (3,), what, 1.0, 255.0)
