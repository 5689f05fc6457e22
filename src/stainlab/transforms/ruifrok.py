"""Normalization and stain separation with fixed colour-deconvolution stain vectors (Ruifrok &
Johnston, "Quantification of histochemical staining by color deconvolution", Anal. Quant. Cytol.
Histol. 23(4), 2001).

Concentrations come from the fixed matrix, ``C = OD M^-1`` (:mod:`stainlab.color.deconvolution`;
``"he"`` default, ``"hdab"`` or ``"hed"``). Two modes:

- normalization (``channel=None``, needs a reference): each stain's concentrations are scaled so their
  99th percentile over tissue matches the reference's (the percentile rule Macenko et al. 2009 use), the
  residual channel is kept as it is, and the image is reconvolved with the same matrix; a stain absent
  from the source or the reference is left unscaled; a reference whose colours do not vary in some
  channel (black, one colour) is refused, and such a source passed through with a warning (issue 12: a
  black tile used to come out yellow);
- single-stain projection (``channel="H"``, ``"E"`` or ``"DAB"``, needs no reference): every other
  channel is zeroed and the image reconvolved, paper 002's ``I^H = T^-1([v_H, 0, 0])`` (Sec. 2.1), an
  RGB image of that stain alone.
"""

from __future__ import annotations

import numpy as np

from stainlab.color.od import MAX_OD, LinearODMap, rgb_to_od
from stainlab.color.pixels import linear_od_image, od_projections
from stainlab.color.tissue import TISSUE_BETA
from stainlab.errors import InputError
from stainlab.transforms.base import MIN_TISSUE_FRACTION, PixelTransform
from stainlab.transforms.checks import check_fields, check_float, check_stains, require_color_spread, stored_array
from stainlab.transforms.lighting import LightMixin
from stainlab.transforms.lut import DEFAULT_BITS
from stainlab.transforms import small
from stainlab.transforms.stain_matrix import (MIN_MAX_CONCENTRATION, Source, StainImages, recompose, robust_max,
                                              exact_robust_max, sample_tissue, scale_factors, stain_images,
                                              tissue_od)


class Ruifrok(LightMixin, PixelTransform):
    """Ruifrok 2001: fixed stain vectors (H&E, HED, H-DAB); stain amounts matched, or one stain alone."""

    name = "ruifrok"

    def __init__(self, stains="he", channel: str | int | None = None, percentile: float = 99.0,
                 beta: float = TISSUE_BETA, lut_bits: int = DEFAULT_BITS, light="estimate") -> None:
        super().__init__(lut_bits)
        self._init_light(light)
        self._basis = check_stains("ruifrok: stains", stains)
        try:
            self._channel = None if channel is None else self._basis.index(channel)
        except ValueError as err:
            raise InputError(f"ruifrok: {err}") from None
        self.stains = stains if isinstance(stains, str) else self._basis.matrix[:self.n_stains].tolist()
        self.channel = channel
        self.percentile = check_float("ruifrok: percentile", percentile, 50.0, 100.0)
        self.beta = check_float("ruifrok: beta", beta, 0.0, 5.0)
        self.max_concentrations: np.ndarray | None = None
        # requires_fit is a class attribute; a projection needs no reference, so this instance is ready.
        self._fitted = channel is not None

    @property
    def n_stains(self) -> int:
        return len(self._basis.stains)

    def _robust_max(self, colors, weights, what: str, light) -> np.ndarray:
        od, w = tissue_od(colors, weights, self.beta, what, light)
        require_color_spread(colors, weights, what)
        return robust_max((od @ self._basis.inverse)[:, :self.n_stains], w, self.percentile)

    def _fit(self, images):
        if self._channel is None:
            super()._fit(images)

    def _fit_colors(self, colors, weights):
        light = self._fit_light(colors, weights, "ruifrok reference")
        self._adopt(Source(None, self._robust_max(colors, weights, "ruifrok reference", light), light))

    def _adopt(self, source):
        self.max_concentrations, self.target_light = source.max_concentrations, source.light

    def _source(self, colors, weights, light=None):
        light = self.light_of(colors, weights) if light is None else light
        if self._channel is not None:
            return Source(None, None, light)
        return Source(None, self._robust_max(colors, weights, "ruifrok source", light), light)

    def _factors(self, source) -> np.ndarray:
        """Per-channel multipliers of the concentrations: one-hot for a projection, else the percentile
        ratios of the stains and 1 for the residual."""
        factors = np.ones(3)
        if self._channel is not None:
            factors[:] = 0.0
            factors[self._channel] = 1.0
        else:
            factors[:self.n_stains] = scale_factors(source.max_concentrations, self.max_concentrations)
        return factors

    def _map(self, colors, source):
        conc = rgb_to_od(colors, source.light) @ self._basis.inverse
        return recompose(conc, self._factors(source), self._basis.matrix, self.target_light)

    def _small_source(self, image):
        """:meth:`_source` on the small-image path (compiled kernels over a sample)."""
        if self._channel is not None:
            return Source(None, None, self.light_of(small.stats_sample(image.reshape(-1, 3))))
        pixels, below, moments, light = sample_tissue(image, self.beta, "ruifrok source", self.light_of)
        conc = od_projections(pixels, below, self._basis.inverse[:, :self.n_stains], moments.counts, light)
        return Source(None, exact_robust_max(conc, self.percentile), light)

    kernel_maps = True

    def linear_od_map(self, source) -> LinearODMap:
        """Deconvolution is linear in optical density: the whole map is one 3x3 matrix,
        ``M^-1 diag(factors) M``."""
        return LinearODMap(self._basis.inverse @ (self._factors(source)[:, None] * self._basis.matrix),
                           source.light, self.target_light)

    def _small_map(self, image, source):
        return linear_od_image(image, self.linear_od_map(source))

    def _torch_stains(self, x):
        from stainlab.transforms import torch_engine

        return torch_engine.ruifrok_stains(x, self._basis, self.max_concentrations, self._channel, self.beta,
                                           self.percentile, light=self.light, target_light=self.target_light,
                                           min_tissue_fraction=MIN_TISSUE_FRACTION,
                                           min_max_concentration=MIN_MAX_CONCENTRATION)

    def _torch(self, x):
        """The torch engine on a float (N,3,H,W) batch in [0, 1] (``t(tensor)``)."""
        from stainlab.transforms import torch_engine

        return torch_engine.normalized(self.name, x, self._torch_stains(x))

    def _scaled_concentrations(self, od, source):
        """Per-pixel concentrations as :meth:`_map` scales them, and the rows that render them."""
        return (od @ self._basis.inverse) * self._factors(source), self._basis.matrix

    def stain_images(self, image, *, value_range=None) -> StainImages:
        """The normalized image (or projection), the first and the second stain of the set each alone
        (haematoxylin and eosin for ``"he"``/``"hed"``; DAB second for ``"hdab"``) and their scaled
        concentrations; see :func:`~stainlab.transforms.stain_matrix.stain_images`."""
        return stain_images(self, image, value_range)

    def _get_state(self):
        return {} if self._channel is not None else {"max_concentrations": self.max_concentrations,
                                                     **self._light_state()}

    def _set_state(self, state):
        what = "ruifrok fitted state"
        check_fields(state, () if self._channel is not None else ("max_concentrations", "light"), what)
        self._set_light_state(state, what)
        if self._channel is None:  # no 8-bit colour deconvolves to more than its OD length times ||M^-1||
            bound = np.sqrt(3.0) * MAX_OD * np.linalg.norm(self._basis.inverse, 2)
            self.max_concentrations = stored_array(state, "max_concentrations", (self.n_stains,), what,
                                                   -bound, bound)
