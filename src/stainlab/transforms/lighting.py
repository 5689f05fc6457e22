"""The ``light`` option of the optical-density methods (Macenko, Vahadane, Ruifrok, the optimal-transport
map): optical density against each image's own light, the output rendered under the reference's.

``light="estimate"`` (default) takes every source's and reference's light from its glass
(:func:`stainlab.color.light.estimate_light`; white when an image has no glass, with a warning at fit);
``"fixed"`` takes white (255) for all, the convention of stainlab before per-image light and of most
peers; an ``(R, G, B)`` triple is the light of every image (a scanner's measured glass, or one estimated
over a whole slide). The reference's light is fitted state (``target_light``): the glass of a normalized
image is the reference's glass.
"""

from __future__ import annotations

import warnings

import numpy as np

from stainlab.color.light import WHITE, check_light_rgb, resolve_light
from stainlab.errors import InputError, NoBackgroundWarning
from stainlab.transforms.checks import stored_array

LIGHT_MODES = ("estimate", "fixed")


def check_light(what: str, light):
    """A ``light`` parameter as stored: ``"estimate"``, ``"fixed"`` or a list of three numbers in [1, 255]."""
    if isinstance(light, str):
        if light not in LIGHT_MODES:
            raise InputError(f"{what}: expected 'estimate', 'fixed' or an (R, G, B) light, got {light!r}")
        return light
    try:
        return check_light_rgb(light, what).tolist()
    except ValueError as err:
        raise InputError(str(err)) from None


class LightMixin:
    """Per-image light for a :class:`~stainlab.transforms.base.PixelTransform` in optical density.

    The class stores the option as ``self.light`` and the reference's light as ``self.target_light``
    (white until fitted), both set by :meth:`_init_light`."""

    name: str
    _clip = True   # optical density clipped at zero (StainMatrixTransform: not in torchstain's convention)

    def _init_light(self, light) -> None:
        self.light = check_light(f"{self.name}: light", light)
        self.target_light = WHITE.copy()

    def light_of(self, colors, weights=None, every_pixel: bool = False) -> np.ndarray:
        """The light (RGB, (3,)) of one image's pixels ``(M, 3)`` (``every_pixel``: not strided, see
        :func:`~stainlab.color.light.estimate_light`), or of colours with histogram weights."""
        return resolve_light(self.light, colors, weights=weights, every_pixel=every_pixel).rgb

    def source_of(self, hist):
        """Per-image parameters from a colour histogram (``PixelTransform.source_of``), the light taken on
        the histogram's own lattice: on the coarser statistics lattice, cells of pale tissue pool into
        spikes that can hide a small glass peak. The class's ``_source`` takes the light as a third
        argument."""
        stats = self._statistics_lattice(hist)
        return self._source(stats.colors, stats.counts, self.light_of(hist.colors, hist.counts))

    def _fit_light(self, colors, weights, what: str) -> np.ndarray:
        """The reference's light, with a warning when it had to fall back to white."""
        found = resolve_light(self.light, colors, weights=weights)
        if not found.found:
            warnings.warn(f"{what}: {found.describe()}; pass light=(R, G, B) to set the reference's glass",
                          NoBackgroundWarning, stacklevel=5)
        return found.rgb

    def _refuse_reference(self, pixels, what: str) -> None:
        """Nothing before a sampled reference's analysis (``PixelTransform._sampled_reference``): its source
        analysis refuses too little tissue, judged against its own light (no more lenient than white)."""

    def _note_reference(self, pixels, source, what: str) -> None:
        """A sampled reference warns when it has no glass, as :meth:`_fit_light` does; its light is looked
        for again only when it came out white (glass not found, or glass that is pure white)."""
        if np.array_equal(source.light, WHITE):
            self._fit_light(pixels, None, what)

    def _light_state(self) -> dict:
        return {"light": self.target_light}

    def _set_light_state(self, state, what: str) -> None:
        """The stored reference light (files written before per-image light have none: white)."""
        self.target_light = stored_array(state, "light", (3,), what, 1.0, 255.0) if "light" in state else WHITE.copy()
