"""Which pixels are tissue.

Rule (documented choice; cucim PR #316 flipped a peer's between "any" and "all"): a pixel is tissue
when the optical density of **any** channel exceeds ``beta``. Pale eosin has little red density but
clear green density, so "any" keeps it; white glass has low density in every channel and is dropped.
The default ``beta = 0.15`` is Macenko et al.'s (2009, Sec. 2.2) transparency threshold.
"""

from __future__ import annotations

import numpy as np

from stainlab.color.od import rgb_to_od

TISSUE_BETA = 0.15


def tissue_mask_od(od, beta: float = TISSUE_BETA) -> np.ndarray:
    """Boolean mask over the leading axes of an optical-density array (last axis = channels)."""
    return (np.asarray(od) > beta).any(axis=-1)


def tissue_mask(rgb, beta: float = TISSUE_BETA, light=None) -> np.ndarray:
    """Boolean ``HxW`` (or ``N``) mask of tissue pixels of RGB values in [0, 255], their optical density
    taken against ``light`` (the image's glass, :mod:`stainlab.color.light`; ``None``: white)."""
    return tissue_mask_od(rgb_to_od(rgb, light), beta)
