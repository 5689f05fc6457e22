"""Grayscale: the luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601 weights; paper 001,
Arshad et al., Sec. 2.2.4, Eq. 3, the weights OpenCV uses) replicated to three channels.

Reference-free: it removes colour, and with it stain variation, rather than matching a target; a
common lower bound for what colour information adds to a downstream model.
"""

from __future__ import annotations

import numpy as np

from stainlab.transforms.base import PixelTransform

LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114])


class Grayscale(PixelTransform):
    """Grayscale: luminance 0.299 R + 0.587 G + 0.114 B (paper 001, Eq. 3) in all three channels."""

    name = "grayscale"
    requires_fit = False
    uses_reference = False

    def _map(self, colors, source):
        return np.repeat(colors @ LUMINANCE_WEIGHTS[:, None], 3, axis=1)
