"""Grayscale: the luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601 weights; paper 001,
Arshad et al., Sec. 2.2.4, Eq. 3, the weights OpenCV uses) replicated to three channels.

Reference-free: it removes colour, and with it stain variation, rather than matching a target; a
common lower bound for what colour information adds to a downstream model.
"""

from __future__ import annotations

import numpy as np

from stainlab.color.pixels import weighted_gray
from stainlab.transforms.base import PixelTransform

LUMINANCE_THOUSANDTHS = np.array([299, 587, 114])
LUMINANCE_WEIGHTS = LUMINANCE_THOUSANDTHS / 1000


class Grayscale(PixelTransform):
    """Grayscale: luminance 0.299 R + 0.587 G + 0.114 B (paper 001, Eq. 3) in all three channels."""

    name = "grayscale"
    requires_fit = False
    uses_reference = False

    kernel_maps = True  # every image not mapped through an exact table: one integer pass (:meth:`_small_map`)

    def _map(self, colors, source):
        return np.repeat(colors @ LUMINANCE_WEIGHTS[:, None], 3, axis=1)

    def _small_source(self, image):
        """Nothing to learn from an image."""
        return None

    def _small_map(self, image, source):
        """The luminance of each pixel in integer thousandths, rounded (0.05 ms a 256 x 256 tile, against
        2 ms through the interpolated lattice of occupied cells): the exact path's value but for a
        level at an exact tie."""
        return weighted_gray(image.reshape(-1, 3), LUMINANCE_THOUSANDTHS).reshape(image.shape)
