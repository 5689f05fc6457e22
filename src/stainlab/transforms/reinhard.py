"""Reinhard colour transfer (Reinhard, Ashikhmin, Gooch & Shirley, "Color transfer between images",
IEEE CG&A 2001).

Each LAB channel of the source is standardised and given the reference's mean and standard deviation:
``out = (x - mu_src) / sd_src * sd_ref + mu_ref`` (Eq. 10-11 of the paper, applied in CIELAB as the
peer libraries do rather than the paper's l-alpha-beta). The masked variant computes both sets of
statistics on tissue pixels only and leaves background pixels untouched (HistomicsTK PR #734,
torch-staintools #2), so glass does not dilute the statistics of sparse tissue; the split variant
(:mod:`stainlab.transforms.reinhard_split`) also sends the glass to the reference's glass.

A channel without spread cannot be standardised (issue 12): a reference whose colours or CIELAB channels
are flat (black, white, one colour, grey) is refused, and such a source is passed through with a
warning, where dividing by its zero spread used to paint it the reference's mean colour.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stainlab.color.lab import lab_to_rgb, rgb_to_lab
from stainlab.color.lab_pixels import lab_affine, lab_moments
from stainlab.color.stats import weighted_mean_std
from stainlab.transforms.base import (MIN_TISSUE_FRACTION, MaskedGlass, PixelTransform, check_tissue_amount,
                                      require_tissue)
from stainlab.transforms.checks import check_bool, check_fields, require_color_spread, require_spread, stored_array
from stainlab.transforms.lut import DEFAULT_BITS

LAB = ("L*", "a*", "b*")
MIN_STD = 0.1      # CIELAB units: a channel that varies less is flat (standardising would blow up its noise)
MAX_STD = 128.0    # CIELAB units: no channel of the sRGB gamut spreads wider
LAB_RANGE = (-128.0, 128.0)  # every CIELAB value of an sRGB colour lies inside


def lab_stats(colors, weights, what: str, keep=None) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB mean and standard deviation of float RGB ``colors`` (those flagged in ``keep``) with optional
    weights; :class:`~stainlab.errors.NoTissueError` naming ``what`` when their colours or a CIELAB channel
    do not vary (nothing to standardise)."""
    if keep is not None:
        colors = colors[keep]
        weights = None if weights is None else weights[keep]
    require_color_spread(colors, weights, what)
    mean, std = weighted_mean_std(rgb_to_lab(colors), weights)
    require_spread(std, what, LAB, MIN_STD)
    return mean, std


def pixel_lab_stats(pixels: np.ndarray, below, what: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lab_stats` of uint8 pixels ``(M, 3)`` by one compiled pass (:func:`lab_moments`): over
    those with a channel under its bound in ``below`` (tissue bounds, one for all channels or three;
    256: every pixel), with the same refusals, and too little tissue refused when bounded."""
    count, rgb_std, mean, std = lab_moments(pixels, below)
    if np.any(np.asarray(below) < 256):
        check_tissue_amount(count, len(pixels), what)
    require_spread(rgb_std, what)
    require_spread(std, what, LAB, MIN_STD)
    return mean, std


class LabSource(NamedTuple):
    """A source's CIELAB statistics."""

    mean: np.ndarray
    std: np.ndarray


class Reinhard(MaskedGlass, PixelTransform):
    """Reinhard 2001: match the mean and standard deviation of each CIELAB channel to the reference."""

    name = "reinhard"

    def __init__(self, mask: bool = False, lut_bits: int = DEFAULT_BITS) -> None:
        super().__init__(lut_bits)
        self.mask = check_bool("reinhard: mask", mask)
        self.target_mean: np.ndarray | None = None
        self.target_std: np.ndarray | None = None

    def _stats(self, colors, weights, what):
        return lab_stats(colors, weights, what, require_tissue(colors, weights, what) if self.mask else None)

    def _fit_colors(self, colors, weights):
        self._adopt(LabSource(*self._stats(colors, weights, "reinhard reference")))

    def _adopt(self, source):
        self.target_mean, self.target_std = source.mean, source.std

    def _source(self, colors, weights):
        return LabSource(*self._stats(colors, weights, "reinhard source"))

    def _map(self, colors, source):
        lab = rgb_to_lab(colors)
        return lab_to_rgb((lab - source.mean) / source.std * self.target_std + self.target_mean)

    def _small_source(self, image):
        """:meth:`_source` on the small-image path: the same statistics and checks by one compiled pass
        over every pixel (:func:`~stainlab.color.lab_pixels.lab_moments`)."""
        return LabSource(*pixel_lab_stats(image.reshape(-1, 3), self._keep_below, "reinhard source"))

    kernel_maps = True

    def _small_map(self, image, source):
        """:meth:`_map` by one compiled pass (:func:`~stainlab.color.lab_pixels.lab_affine`)."""
        gain = self.target_std / source.std
        return lab_affine(image.reshape(-1, 3), gain, self.target_mean - source.mean * gain,
                          self._keep_below).reshape(image.shape)

    def _torch(self, x):
        """The torch engine on a float (N,3,H,W) batch in [0, 1] (``t(tensor)``)."""
        from stainlab.transforms import torch_engine

        out, ok = torch_engine.reinhard(x, self.target_mean, self.target_std, self.mask,
                                        min_tissue_fraction=MIN_TISSUE_FRACTION, min_std=MIN_STD)
        torch_engine.warn_passed(self.name, ok)
        return out

    def _get_state(self):
        return {"target_mean": self.target_mean, "target_std": self.target_std}

    def _set_state(self, state):
        what = "reinhard fitted state"
        check_fields(state, ("target_mean", "target_std"), what)
        self.target_mean = stored_array(state, "target_mean", (3,), what, *LAB_RANGE)
        self.target_std = stored_array(state, "target_std", (3,), what, MIN_STD, MAX_STD)
