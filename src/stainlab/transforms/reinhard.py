"""Reinhard colour transfer (Reinhard, Ashikhmin, Gooch & Shirley, "Color transfer between images",
IEEE CG&A 2001).

Each LAB channel of the source is standardised and given the reference's mean and standard deviation:
``out = (x - mu_src) / sd_src * sd_ref + mu_ref`` (Eq. 10-11 of the paper, applied in CIELAB as the
peer libraries do rather than the paper's l-alpha-beta). The masked variant computes both sets of
statistics on tissue pixels only and leaves background pixels untouched (HistomicsTK PR #734,
torch-staintools #2), so glass does not dilute the statistics of sparse tissue.
"""

from __future__ import annotations

import numpy as np

from stainlab.color.lab import lab_to_rgb, rgb_to_lab
from stainlab.color.stats import weighted_mean_std
from stainlab.color.tissue import tissue_mask
from stainlab.transforms.base import PixelTransform, require_tissue
from stainlab.transforms.lut import DEFAULT_BITS

_MIN_STD = 1e-3  # LAB units; a flat source channel is shifted, not blown up


class Reinhard(PixelTransform):
    """Reinhard 2001: match the mean and standard deviation of each CIELAB channel to the reference."""

    name = "reinhard"

    def __init__(self, mask: bool = False, lut_bits: int = DEFAULT_BITS) -> None:
        super().__init__(lut_bits)
        self.mask = bool(mask)
        self.target_mean: np.ndarray | None = None
        self.target_std: np.ndarray | None = None

    def _stats(self, colors, weights, what):
        if self.mask:
            keep = require_tissue(colors, weights, what)
            colors = colors[keep]
            weights = None if weights is None else weights[keep]
        return weighted_mean_std(rgb_to_lab(colors), weights)

    def _fit_colors(self, colors, weights):
        self.target_mean, self.target_std = self._stats(colors, weights, "reinhard reference")

    def _source(self, colors, weights):
        return self._stats(colors, weights, "reinhard source")

    def _map(self, colors, source):
        mean, std = source
        lab = rgb_to_lab(colors)
        return lab_to_rgb((lab - mean) / np.maximum(std, _MIN_STD) * self.target_std + self.target_mean)

    def _keep(self, colors):
        return ~tissue_mask(colors) if self.mask else None

    def _get_state(self):
        return {"target_mean": self.target_mean, "target_std": self.target_std}

    def _set_state(self, state):
        self.target_mean = np.asarray(state["target_mean"], dtype=np.float64).reshape(3)
        self.target_std = np.asarray(state["target_std"], dtype=np.float64).reshape(3)
