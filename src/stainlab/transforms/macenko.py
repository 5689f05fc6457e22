"""Macenko stain normalization (Macenko et al., "A method for normalizing histology slides for
quantitative analysis", ISBI 2009).

Stain vectors of one image (the paper's eight steps):

1. optical density ``OD = -ln((I + 1) / (I0 + 1))`` of every colour (:mod:`stainlab.color.od`), against
   the image's own light ``I0`` (its glass, :mod:`stainlab.transforms.lighting`; the paper's is fixed);
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
reference's robust maxima and rendered with its stain vectors under its light (:mod:`stainlab.transforms.stain_matrix`,
which also holds the guards against one-stain and tissue-free images).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stainlab.color.od import LinearODMap, map_od_linear
from stainlab.color.pixels import gram_inverse, linear_od_image, macenko_statistics, plane_axes
from stainlab.color.stains import order_like
from stainlab.color.stats import weighted_percentile
from stainlab.color.tissue import TISSUE_BETA
from stainlab.errors import NoTissueError
from stainlab.transforms.checks import check_float
from stainlab.transforms.lut import DEFAULT_BITS
from stainlab.transforms.base import MIN_TISSUE_FRACTION
from stainlab.transforms.stain_matrix import (MIN_MAX_CONCENTRATION, MIN_STAIN_ANGLE, Source,
                                              StainMatrixTransform, check_sampled_tissue, check_separable,
                                              tissue_sample)

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
    e1, e2 = stain_plane(mean, covariance, what)
    phi = np.arctan2(od @ e2, od @ e1)
    return stain_rows(e1, e2, *weighted_percentile(phi, [alpha, 100.0 - alpha], weights))


def stain_plane(mean: np.ndarray, covariance: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps 3-5: the plane of the two largest eigenvectors of the OD covariance, as unit axes ``e1``
    (along the mean OD, so angles never wrap around) and ``e2``."""
    variance, length, e1, e2 = plane_axes(np.asarray(mean, np.float64), np.asarray(covariance, np.float64))
    check_plane(variance, length, what)
    return e1, e2


def check_plane(variance: float, length: float, what: str) -> None:
    """:class:`NoTissueError` unless the plane of :func:`stain_plane` (its second variance and the length of
    the mean's projection onto it, :func:`~stainlab.color.pixels.plane_axes`) can hold two stains."""
    if variance <= _MIN_PLANE_VARIANCE:
        raise NoTissueError(f"{what}: optical density varies along fewer than two directions (one colour "
                            "or one stain); cannot separate two stains")
    if length < 1e-9:
        raise NoTissueError(f"{what}: optical density has no usable stain plane")


@njit(cache=True, nogil=True)
def least_squares_map(rows, factors, target):  # pragma: no cover - compiled
    """``rows.T (rows rows.T)^-1 diag(factors) target``: the least-squares concentrations under the two
    stain ``rows`` (``W^+ = W^T (W W^T)^-1``, the Gram inverse of :func:`~stainlab.color.pixels.gram_inverse`),
    scaled per stain and recomposed with the ``target`` rows, as one 3x3 matrix in optical density.
    Compiled, since a tile's map paid 26 us for these few NumPy calls."""
    inverse, _ = gram_inverse(rows)
    out = np.empty((3, 3))
    for a in range(3):
        p0 = rows[0, a] * inverse[0, 0] + rows[1, a] * inverse[1, 0]      # row a of W^+
        p1 = rows[0, a] * inverse[0, 1] + rows[1, a] * inverse[1, 1]
        for b in range(3):
            out[a, b] = p0 * factors[0] * target[0, b] + p1 * factors[1] * target[1, b]
    return out


def stain_rows(e1: np.ndarray, e2: np.ndarray, low: float, high: float) -> np.ndarray:
    """Step 8: the directions at the robust extreme angles ``low`` and ``high``, labelled H then E."""
    return order_like(np.array([np.cos(low) * e1 + np.sin(low) * e2, np.cos(high) * e1 + np.sin(high) * e2]))


class Macenko(StainMatrixTransform):
    """Macenko 2009: H&E stain vectors from robust extreme angles of optical density in its SVD plane."""

    name = "macenko"

    def __init__(self, alpha: float = 1.0, beta: float = TISSUE_BETA, percentile: float = 99.0,
                 multi: str = "pool", rescale: bool = True, lut_bits: int = DEFAULT_BITS, light="estimate",
                 convention: str = "stainlab") -> None:
        super().__init__(beta, percentile, multi, rescale, lut_bits, light, convention)
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
                                           self.percentile, self.rescale, light=self.light,
                                           target_light=self.target_light, min_tissue_fraction=MIN_TISSUE_FRACTION,
                                           min_plane_variance=_MIN_PLANE_VARIANCE, min_stain_angle=MIN_STAIN_ANGLE,
                                           min_max_concentration=MIN_MAX_CONCENTRATION)

    def _od_matrix(self, source) -> np.ndarray:
        """Least squares is linear in OD, so the whole map is one 3x3 matrix in OD space:
        ``W^+ = W^T (W W^T)^-1`` (two separable rows) times the scaled target rows."""
        return least_squares_map(source.stain_matrix, self._factors(source), self.stain_matrix)

    def linear_od_map(self, source) -> LinearODMap:
        return LinearODMap(self._od_matrix(source), source.light, self.target_light, self._clip)

    def _map(self, colors, source):
        return map_od_linear(colors, *self.linear_od_map(source))

    def _small_source(self, image):
        """:meth:`_analyse` on the small-image path, by compiled passes over a sample in one call
        (:func:`~stainlab.color.pixels.macenko_statistics`): the moments give the plane (steps 1-4), one
        pass projects the tissue onto it and finds the robust extreme angles (steps 5-7,
        :func:`~stainlab.color.pixels.plane_angles`), and one pass over the projections the robust maxima
        of the concentrations, since the stain rows lie in the plane: ``OD W^+ = (x e1 + y e2) W^+``, a 2x2
        matrix applied to ``(x, y)``. torchstain's convention takes the generic path (its tissue rule and
        maxima differ)."""
        if not self._clip:
            return super()._small_source(image)
        what = f"{self.name} source"
        pixels, below, light = tissue_sample(image, self.beta, self.light_of)
        count, rgb_std, variance, length, rows, maxima = macenko_statistics(
            pixels, below, light, self.alpha, self.percentile, _MIN_PLANE_VARIANCE, MIN_STAIN_ANGLE)
        check_sampled_tissue(pixels, self.beta, light, count, rgb_std, what)
        check_plane(variance, length, what)
        check_separable(rows, what)
        return Source(rows, maxima, light)

    def _small_map(self, image, source):
        if not self._clip:
            return super()._small_map(image, source)
        return linear_od_image(image, self.linear_od_map(source))
