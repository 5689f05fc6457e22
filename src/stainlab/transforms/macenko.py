"""Macenko stain normalization (Macenko et al., "A method for normalizing histology slides for
quantitative analysis", ISBI 2009).

Stain vectors of one image (the paper's eight steps):

1. optical density ``OD = -ln((I + 1) / 256)`` of every colour (:mod:`stainlab.color.od`);
2. drop transparent pixels, keeping those whose OD exceeds ``beta = 0.15`` in **any** channel (the
   rule of :mod:`stainlab.color.tissue`; the authors' code keeps a pixel only when all channels pass);
3-4. the plane of the two largest eigenvectors of the OD covariance;
5-6. the angle ``phi`` of each OD point in that plane (measured from the mean OD direction, so the
   angles never wrap around);
7. the robust extremes, the ``alpha``-th and ``(100 - alpha)``-th percentiles of ``phi`` (``alpha = 1``);
8. back to OD space: ``v = cos(phi) e1 + sin(phi) e2`` for both extremes = the two stain vectors,
   labelled haematoxylin/eosin by :func:`~stainlab.color.stains.order_like` (nearest to the reference
   H and E directions; a single-channel rule mislabels some images, PEERS.md).

Normalization: concentrations ``C`` solve ``OD = C W`` by least squares, then are rescaled to the
reference's robust maxima and rendered with its stain vectors (:mod:`stainlab.transforms.stain_matrix`,
which also holds the guards against one-stain and tissue-free images).
"""

from __future__ import annotations

import numpy as np

from stainlab.color.od import map_od_linear
from stainlab.color.stains import order_like
from stainlab.color.stats import weighted_percentile
from stainlab.color.tissue import TISSUE_BETA
from stainlab.errors import NoTissueError
from stainlab.transforms.checks import check_float
from stainlab.transforms.lut import DEFAULT_BITS
from stainlab.transforms.base import MIN_TISSUE_FRACTION
from stainlab.transforms.stain_matrix import (MIN_MAX_CONCENTRATION, MIN_STAIN_ANGLE, StainMatrixTransform,
                                              scale_factors)

_MIN_PLANE_VARIANCE = 1e-12   # OD^2; the second-largest OD variance of any two-stain image is far above


def least_squares_concentrations(od: np.ndarray, stain_matrix: np.ndarray) -> np.ndarray:
    """``C`` minimising ``||OD - C W||`` per row: ``C = OD W^+`` (Moore-Penrose pseudo-inverse)."""
    return od @ np.linalg.pinv(stain_matrix)


def macenko_stain_matrix(od: np.ndarray, weights: np.ndarray, alpha: float = 1.0,
                         what: str = "image") -> np.ndarray:
    """Steps 3-8 of Macenko et al. on tissue optical densities: (2, 3) unit stain rows, H then E."""
    total = weights.sum()
    mean = weights @ od / total
    covariance = (od * weights[:, None]).T @ od / total - np.outer(mean, mean)
    variances, directions = np.linalg.eigh(covariance)     # ascending
    if variances[1] <= _MIN_PLANE_VARIANCE:
        raise NoTissueError(f"{what}: optical density varies along fewer than two directions (one colour "
                            "or one stain); cannot separate two stains")
    normal = directions[:, 0]                            # the normal of the plane of the two largest
    axis = mean - (mean @ normal) * normal
    length = np.linalg.norm(axis)
    if length < 1e-9:
        raise NoTissueError(f"{what}: optical density has no usable stain plane")
    e1 = axis / length
    e2 = np.cross(normal, e1)
    phi = np.arctan2(od @ e2, od @ e1)
    low, high = weighted_percentile(phi, [alpha, 100.0 - alpha], weights)
    rows = np.array([np.cos(low) * e1 + np.sin(low) * e2, np.cos(high) * e1 + np.sin(high) * e2])
    return order_like(rows)


class Macenko(StainMatrixTransform):
    """Macenko 2009: H&E stain vectors from robust extreme angles of optical density in its SVD plane."""

    name = "macenko"

    def __init__(self, alpha: float = 1.0, beta: float = TISSUE_BETA, percentile: float = 99.0,
                 multi: str = "pool", rescale: bool = True, lut_bits: int = DEFAULT_BITS) -> None:
        super().__init__(beta, percentile, multi, rescale, lut_bits)
        self.alpha = check_float("macenko: alpha", alpha, 0.0, 49.0)

    def _estimate(self, od, weights, what):
        return macenko_stain_matrix(od, weights, self.alpha, what)

    def _concentrations(self, od, stain_matrix):
        return least_squares_concentrations(od, stain_matrix)

    def _torch(self, x):
        """The torch engine on a float (N,3,H,W) batch in [0, 1] (``t(tensor)``)."""
        from stainlab.transforms import torch_engine

        return torch_engine.normalized(self.name, x, self._torch_stains(x))

    def _torch_stains(self, x):
        from stainlab.transforms import torch_engine

        return torch_engine.macenko_stains(x, self.stain_matrix, self.max_concentrations, self.alpha, self.beta,
                                           self.percentile, self.rescale, min_tissue_fraction=MIN_TISSUE_FRACTION,
                                           min_plane_variance=_MIN_PLANE_VARIANCE, min_stain_angle=MIN_STAIN_ANGLE,
                                           min_max_concentration=MIN_MAX_CONCENTRATION)

    def _map(self, colors, source):
        """Least squares is linear in OD, so the whole map is one 3x3 matrix in OD space."""
        stain_matrix, max_concentrations = source
        factors = scale_factors(max_concentrations, self.max_concentrations) if self.rescale else np.ones(2)
        return map_od_linear(colors, np.linalg.pinv(stain_matrix) @ (factors[:, None] * self.stain_matrix))
