"""A glass-anchored linear optimal-transport map in optical density: stain normalization without a
stain model.

Optical density is taken against each image's own light (:mod:`stainlab.transforms.lighting`), so glass
sits at the origin of both images' OD spaces. The source's tissue densities ``x`` are mapped to
``y = A x`` by the symmetric positive-definite matrix that sends their second moment ``S_s = E[x x^T]``
(taken about the glass point, not centred) onto the reference's ``S_r``:

    A S_s A = S_r,   A = S_s^(-1/2) (S_s^(1/2) S_r S_s^(1/2))^(1/2) S_s^(-1/2)

the Monge map between two zero-mean Gaussians of those second moments (Dowson & Landau, "The Frechet
distance between multivariate normal distributions", J. Multivar. Anal. 12, 1982; Knott & Smith, "On the
optimal mapping of distributions", J. Optim. Theory Appl. 43, 1984), the least total squared movement
of OD among all linear maps that give the source the reference's second moments. Anchoring at glass
keeps glass glass (``A 0 = 0``, rendered under the reference's light) and makes the map cover every
gain, gamma-like scaling and cross-talk between channels that a change of stain amounts, dyes or
scanner filters causes, without assuming two stains. The moments are taken over tissue only (OD above
``beta`` in some channel), so a source with more or less glass than the reference gets the same map.

Being linear in OD, the whole normalization is one 3x3 matrix: the same compiled kernel as Macenko's
on small images, and baked into the lookup table (slide-consistent) on large ones.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stainlab.color.od import MAX_OD, LinearODMap, map_od_linear
from stainlab.color.pixels import linear_od_image
from stainlab.color.tissue import TISSUE_BETA
from stainlab.errors import InputError, NoTissueError
from stainlab.transforms.base import PixelTransform
from stainlab.transforms.checks import check_fields, check_float, require_color_spread, stored_array
from stainlab.transforms.lighting import LightMixin
from stainlab.transforms.lut import DEFAULT_BITS
from stainlab.transforms.stain_matrix import sample_tissue, tissue_od

RIDGE = 1e-6
"""Relative to the mean eigenvalue: added to both second moments, so a tile whose tissue spans fewer than
three OD directions (one stain) keeps a finite, well-conditioned map."""
MIN_SECOND_MOMENT = 1e-8
"""OD^2. A second moment whose trace is below this has no tissue to map."""


class Moments(NamedTuple):
    """A source's tissue OD second moment about its glass, and its light (RGB)."""

    moment: np.ndarray
    light: np.ndarray


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """The symmetric positive semi-definite square root of a symmetric matrix."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def monge_map(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The symmetric positive-definite ``A`` with ``A source A = target`` for second moments (3, 3)."""
    ridge = RIDGE * (np.trace(source) + np.trace(target)) / 6.0
    s = source + ridge * np.eye(3)
    root = _sqrtm(s)
    inverse_root = np.linalg.inv(root)
    a = inverse_root @ _sqrtm(root @ (target + ridge * np.eye(3)) @ root) @ inverse_root
    return (a + a.T) / 2.0


def second_moment(od: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``E[x x^T]`` of optical densities ``(M, 3)`` with weights: the moment about the glass point."""
    return (od * weights[:, None]).T @ od / weights.sum()


class LinearOT(LightMixin, PixelTransform):
    """Linear optimal transport of tissue optical density about the glass point (one 3x3 map in OD)."""

    name = "linear-ot"

    def __init__(self, beta: float = TISSUE_BETA, lut_bits: int = DEFAULT_BITS, light="estimate") -> None:
        super().__init__(lut_bits)
        self.beta = check_float("linear-ot: beta", beta, 0.0, 5.0)
        self._init_light(light)
        self.target_moment: np.ndarray | None = None

    def _moment(self, colors, weights, what: str, light) -> np.ndarray:
        od, w = tissue_od(colors, weights, self.beta, what, light)
        require_color_spread(colors, weights, what)
        return self._checked(second_moment(od, w), what)

    @staticmethod
    def _checked(moment: np.ndarray, what: str) -> np.ndarray:
        if not np.trace(moment) >= MIN_SECOND_MOMENT:
            raise NoTissueError(f"{what}: tissue optical density is all but zero; nothing to map")
        return moment

    def _fit_colors(self, colors, weights):
        what = "linear-ot reference"
        light = self._fit_light(colors, weights, what)
        self._adopt(Moments(self._moment(colors, weights, what, light), light))

    def _adopt(self, source):
        self.target_moment, self.target_light = source.moment, source.light

    def _source(self, colors, weights, light=None):
        light = self.light_of(colors, weights) if light is None else light
        return Moments(self._moment(colors, weights, "linear-ot source", light), light)

    def _small_source(self, image):
        """:meth:`_source` on the small-image path: the moments by one compiled pass over a sample."""
        what = "linear-ot source"
        _, _, moments, light = sample_tissue(image, self.beta, what, self.light_of)
        moment = moments.covariance + np.outer(moments.mean, moments.mean)
        return Moments(self._checked(moment, what), light)

    def od_map(self, source: Moments) -> np.ndarray:
        """The 3x3 map of a source's optical density (rows act on OD row vectors; symmetric)."""
        return monge_map(source.moment, self.target_moment)

    def linear_od_map(self, source) -> LinearODMap:
        return LinearODMap(self.od_map(source), source.light, self.target_light)

    def _map(self, colors, source):
        return map_od_linear(colors, *self.linear_od_map(source))

    kernel_maps = True

    def _small_map(self, image, source):
        return linear_od_image(image, self.linear_od_map(source))

    def _get_state(self):
        return {"target_moment": self.target_moment, **self._light_state()}

    def _set_state(self, state):
        what = "linear-ot fitted state"
        check_fields(state, ("target_moment", "light"), what)
        moment = stored_array(state, "target_moment", (3, 3), what, 0.0, 3.0 * MAX_OD ** 2)
        if not np.allclose(moment, moment.T) or np.linalg.eigvalsh(moment)[0] < -1e-9:
            raise InputError(f"{what}: target_moment must be a symmetric positive semi-definite second moment")
        self.target_moment = self._checked(moment, what)
        self._set_light_state(state, what)
