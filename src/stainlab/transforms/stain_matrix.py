"""The stain-matrix machinery shared by Macenko, Vahadane and Ruifrok: the normalization step of
Macenko et al. (ISBI 2009), which the later methods reuse with their own stain matrices.

A two-stain normalizer (:class:`StainMatrixTransform`) estimates per image a stain matrix ``W`` (unit
rows, haematoxylin then eosin, in optical-density space) and the robust maxima of the stain
concentrations. Normalization: concentrations ``C`` of the source solve ``OD = C W`` (each method its own
way); each stain's concentrations are scaled so their 99th percentile over tissue matches the
reference's, and the image is rebuilt with the reference's stain vectors,
``I = 256 exp(-(C * maxC_ref / maxC_src) W_ref) - 1``.

Every statistic takes the colour-histogram weights, so a histogram gives the same answer as its
pixels. Guards: stain directions closer than ``MIN_STAIN_ANGLE`` (a one-stain or black tile) and no
tissue both raise :class:`~stainlab.errors.NoTissueError`, which passes a source through unchanged with
a warning; so does a flat colour channel (:func:`~stainlab.transforms.checks.require_color_spread`); a
stain whose robust maximum is below ``MIN_MAX_CONCENTRATION`` is left unscaled. A target (fitted, loaded
or standard) has unit, non-negative, separable stain rows and both maxima in
[``MIN_MAX_CONCENTRATION``, ``MAX_CONCENTRATION``].
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from stainlab.color.od import BACKGROUND, MAX_OD, od_to_rgb, rgb_to_od
from stainlab.color.pixels import count_below, od_moments, percentiles, tissue_limits
from stainlab.color.stains import MACENKO_REFERENCE_HE, MACENKO_REFERENCE_MAX_C, angle_degrees, normalize_rows
from stainlab.color.stats import weighted_percentile
from stainlab.color.tissue import TISSUE_BETA, tissue_mask
from stainlab.errors import InputError, NoTissueError
from stainlab.io.arrays import check_rgb8, from_unit_batch, is_torch_tensor, torch_unit_batch
from stainlab.transforms import small
from stainlab.transforms.base import PixelTransform, check_tissue_amount, require_tissue
from stainlab.transforms.lighting import LightMixin
from stainlab.transforms.checks import (check_bool, check_choice, check_fields, check_float,
                                        require_color_spread, require_spread, stored_array)
from stainlab.transforms.lut import DEFAULT_BITS, ColorHistogram, to_uint8

MIN_STAIN_ANGLE = 5.0
"""Degrees. Stain directions closer than this are one stain seen through quantization noise (a
one-stain or black tile spreads by 1-5 degrees on the 8- to 6-bit colour lattice); real H&E pairs are
15-80 degrees apart."""
MIN_MAX_CONCENTRATION = 0.01
"""OD units. A stain whose robust maximum is below this is absent: its ratio is not taken."""
MAX_CONCENTRATION = np.sqrt(3.0) * MAX_OD / np.sqrt(1.0 - np.cos(np.radians(MIN_STAIN_ANGLE)))
"""OD units, about 156: an 8-bit colour's OD vector is at most sqrt(3) ln 256 long, and the pseudo-inverse
of two unit stain rows ``MIN_STAIN_ANGLE`` apart lengthens it at most 1 / sqrt(1 - cos 5 deg) times, so no
colour holds more of a stain; a larger stored maximum is corrupt."""
NEGATIVE_OD_NOISE = 0.2
"""OD units. An estimated stain row may dip this far below zero in a channel from noise; further is no stain."""
UNIT_TOLERANCE = 1e-3
"""A stored stain row's length may differ from 1 by this (the published reference rows have 4 digits)."""
MULTI_MODES = ("pool", "average")
CONVENTIONS = ("stainlab", "torchstain")
TORCHSTAIN_LIGHT = np.full(3, 239.0)
"""torchstain's ``Io = 240`` as a light: its ``-ln((I + 1) / 240)`` is ``-ln((I + 1) / (239 + 1))``."""


def tissue_od(colors: np.ndarray, weights: np.ndarray | None, beta: float,
              what: str, light=None) -> tuple[np.ndarray, np.ndarray]:
    """Optical densities (against ``light``, the image's glass; white by default) and weights of the
    tissue colours (OD above ``beta`` in any channel).

    Raises :class:`NoTissueError` when the image has too little tissue (see ``require_tissue``).
    """
    keep = require_tissue(colors, weights, what, light=light)
    if beta != TISSUE_BETA:
        keep = tissue_mask(colors, beta, light)
        if np.count_nonzero(keep) < 2:
            raise NoTissueError(f"{what}: no tissue (no pixel has optical density above beta={beta})")
    w = np.ones(len(colors)) if weights is None else np.asarray(weights, dtype=np.float64)
    return rgb_to_od(colors[keep], light), w[keep]


def sample_tissue(image: np.ndarray, beta: float, what: str, light=None):
    """The checks of :func:`tissue_od` and ``require_color_spread`` on the small-image path, by compiled
    kernels over a :func:`small.stats_sample` of a uint8 image's pixels, optical density against
    ``light`` (a callable of the sample giving it, or None: white): returns the sample, the byte bounds
    of tissue at ``beta`` (:func:`~stainlab.color.pixels.tissue_limits`), its
    :class:`~stainlab.color.pixels.TissueMoments` and the light."""
    pixels, below, light = tissue_sample(image, beta, light)
    moments = od_moments(pixels, below, light)
    check_sampled_tissue(pixels, beta, light, moments.count, moments.rgb_std, what)
    return pixels, below, moments, light


def tissue_sample(image: np.ndarray, beta: float, light=None):
    """:func:`sample_tissue`'s sample of a uint8 image, the byte bounds of its tissue and its light."""
    pixels = small.stats_sample(image.reshape(-1, 3))
    light = None if light is None else light(pixels)
    return pixels, tissue_limits(beta, light), light


def check_sampled_tissue(pixels: np.ndarray, beta: float, light, count: int, rgb_std: np.ndarray, what: str) -> None:
    """:class:`NoTissueError` unless a sample has enough tissue (judged at the usual ``TISSUE_BETA``),
    ``count`` of at least two pixels at ``beta`` and colour that varies (:func:`sample_tissue`)."""
    usual = count if beta == TISSUE_BETA else count_below(pixels, tissue_limits(TISSUE_BETA, light))
    check_tissue_amount(usual, len(pixels), what)
    if count < 2:
        raise NoTissueError(f"{what}: no tissue (no pixel has optical density above beta={beta})")
    require_spread(rgb_std, what)


def exact_robust_max(conc: np.ndarray, percentile: float) -> np.ndarray:
    """:func:`robust_max` of unweighted concentrations ``(k, M)`` (one row a stain), by exact
    linear-time order statistics."""
    return np.array([percentiles(row, [percentile])[0] for row in conc])


def robust_max(conc: np.ndarray, weights: np.ndarray | None, percentile: float) -> np.ndarray:
    """Per-stain ``percentile`` of concentrations ``(M, k)``: the paper's robust maximum ``maxC``."""
    return np.array([weighted_percentile(conc[:, j], percentile, weights) for j in range(conc.shape[1])])


def scale_factors(source_max: np.ndarray, target_max: np.ndarray) -> np.ndarray:
    """``maxC_target / maxC_source`` per stain; 1 for a stain that the source or the target lacks
    (robust maximum under ``MIN_MAX_CONCENTRATION``), so no ratio divides by ~0 (StainTools #40)."""
    return _scale_factors(np.asarray(source_max, np.float64), np.asarray(target_max, np.float64),
                          MIN_MAX_CONCENTRATION)


@njit(cache=True, nogil=True)
def _scale_factors(source_max, target_max, least):  # pragma: no cover - compiled
    """Compiled: a tile's three NumPy calls here took longer than its statistics' Python checks."""
    factors = np.ones(source_max.shape[0])
    for j in range(factors.shape[0]):
        if source_max[j] >= least and target_max[j] >= least:
            factors[j] = target_max[j] / source_max[j]
    return factors


def recompose(conc: np.ndarray, factors: np.ndarray, target_matrix: np.ndarray, light=BACKGROUND) -> np.ndarray:
    """Float RGB of concentrations scaled per stain and rendered with the target stain rows under
    ``light`` (the reference's glass)."""
    return od_to_rgb((conc * factors) @ target_matrix, light)


def check_separable(stain_matrix: np.ndarray, what: str) -> None:
    """Raise :class:`NoTissueError` when the two stain directions are (nearly) the same."""
    angle = angle_degrees(stain_matrix[0], stain_matrix[1])
    if not angle >= MIN_STAIN_ANGLE:
        shown = np.floor(angle * 100) / 100  # rounded down, so it never reads as the minimum itself
        raise NoTissueError(f"{what}: the two stain directions found are {shown:.2f} degrees apart "
                            f"(need at least {MIN_STAIN_ANGLE:g}): one stain only, or none; cannot separate")


def _stain_rows(matrix, what: str) -> np.ndarray:
    """A (2, 3) matrix of finite, non-zero stain rows, scaled to unit length (a stain matrix the user gives)."""
    rows = np.asarray(matrix, dtype=np.float64)
    if rows.shape != (2, 3) or not np.isfinite(rows).all() or (np.linalg.norm(rows, axis=1) == 0).any():
        raise InputError(f"{what}: expected a finite (2, 3) stain matrix with non-zero rows, got {rows.shape}")
    return normalize_rows(rows)


def absorbing_rows(rows: np.ndarray, what: str) -> np.ndarray:
    """Estimated stain rows as a target: small negative optical densities (estimation noise, e.g. -0.01
    in one channel of a palette image's eosin) set to zero and the rows renormalised, since a stain
    absorbs light and never adds it; a row more negative than :data:`NEGATIVE_OD_NOISE` is no stain
    (:class:`InputError`)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.min() < -NEGATIVE_OD_NOISE:
        raise InputError(f"{what}: a stain direction with a negative optical density of {rows.min():.3f} "
                         f"(noise is above -{NEGATIVE_OD_NOISE}); this is not a two-stain absorbing image")
    return normalize_rows(np.clip(rows, 0.0, None))


def check_target_rows(rows: np.ndarray, what: str) -> np.ndarray:
    """A target's (2, 3) stain rows, unit length and non-negative (light absorbed, never added), and
    separable; :class:`InputError` naming ``what`` otherwise."""
    norms = np.linalg.norm(rows, axis=1)
    if (rows < 0).any() or (np.abs(norms - 1.0) > UNIT_TOLERANCE).any():
        raise InputError(f"{what}: stain_matrix rows must be unit-length optical densities with no negative "
                         f"entry, got {np.round(rows, 4).tolist()}")
    check_separable(rows, what)
    return rows / norms[:, None]


class Source(NamedTuple):
    """The per-image parameters of a stain-matrix method: its (2, 3) stain rows (None where the method's
    are fixed), the robust maxima of its concentrations and its light (RGB of the glass)."""

    stain_matrix: Any
    max_concentrations: Any
    light: np.ndarray


class StainImages(NamedTuple):
    """A normalization with its stains separated (torchstain's ``normalize(I, stains=True)``).

    NumPy: uint8 HxWx3 images and float64 ``(H, W, 2)`` concentrations. Torch: ``(N, 3, H, W)`` images in
    the input's dtype and value range and ``(N, 2, H, W)`` concentrations in the compute dtype (float32,
    or float64), without the batch axis for a ``(3, H, W)`` input. ``passed``: the image (bool) or the
    images (bool tensor ``(N,)``) passed through for lack of tissue, whose concentrations are 0 and whose
    stain renderings are white."""

    normalized: Any
    hematoxylin: Any     # the first stain alone, under the target's first stain row
    eosin: Any           # the second stain alone (DAB for Ruifrok's "hdab")
    concentrations: Any  # the two stains' concentrations, scaled to the target as the normalization scales them
    passed: Any


def stain_images(t: PixelTransform, image, value_range=None) -> StainImages:
    """:class:`StainImages` of a uint8 RGB image (exact, per pixel, like ``t.transform(image, exact=True)``)
    or of a torch batch (the torch engine, differentiable; conventions of :mod:`stainlab.io.arrays`).
    ``t`` has ``_source`` and ``_scaled_concentrations`` (NumPy) and ``_torch_stains`` (torch)."""
    t._require_fitted()
    if is_torch_tensor(image):
        from stainlab.transforms import torch_engine

        if getattr(t, "_torch_stains", None) is None or t._torch_engine() is None:
            raise InputError(f"{t.name}: no torch engine {t._no_engine_reason}; pass the images as uint8 HxWx3 "
                             "NumPy arrays")
        x, token = torch_unit_batch(image, value_range, f"{t.name} image")
        if x.shape[0] == 0:
            raise InputError(f"{t.name}: an empty batch has no stains to separate")
        stains = t._torch_stains(x)
        torch_engine.warn_passed(t.name, stains.ok, stacklevel=3)
        *rendered, conc = torch_engine.separated(x, stains)
        single = token[0]
        return StainImages(*(from_unit_batch(r, token) for r in rendered), conc[0] if single else conc,
                           ~stains.ok[0] if single else ~stains.ok)
    image = check_rgb8(image)
    pixels = image.reshape(-1, 3).astype(np.float64)
    ok, source = t._source_or_none(lambda: t._source(pixels, None))
    if ok:
        conc, matrix = t._scaled_concentrations(rgb_to_od(pixels, source.light, t._clip), source)
    else:
        conc, matrix = np.zeros((len(pixels), 2)), None
    light = t.target_light
    alone = [to_uint8(od_to_rgb(conc[:, i:i + 1] * matrix[i], light)) if ok else np.full_like(pixels, 255, np.uint8)
             for i in range(2)]
    normalized = to_uint8(od_to_rgb(conc @ matrix, light)) if ok else image.reshape(-1, 3).copy()
    return StainImages(*(a.reshape(image.shape) for a in (normalized, *alone)),
                       conc[:, :2].reshape(*image.shape[:2], 2), not ok)


class StainMatrixTransform(LightMixin, PixelTransform):
    """Base of two-stain (H&E) normalizers: a per-image stain matrix ``W`` (rows H, E) and robust maxima.

    Subclasses give ``_estimate`` (stain rows from tissue OD and weights) and ``_concentrations``.
    ``multi`` decides how several references are fitted: ``"pool"`` estimates once from all their
    pixels, ``"average"`` averages the per-reference stain matrices and maxima (torchstain's
    multi-target normalizer). ``rescale=False`` keeps the source's concentrations and only swaps the
    stain colours (percentile rescaling hurts weakly stained sources, tiatoolbox #289). ``light``: each
    image's light, see :mod:`stainlab.transforms.lighting`.

    ``convention="torchstain"`` reproduces torchstain's Macenko for people who migrate: a fixed light
    ``Io = 240`` (``light`` is ignored), optical density not clipped at zero (glass brighter than 240 has
    negative density and is rendered brighter again), a pixel is tissue only when **all** its channels
    exceed ``beta`` and the robust maxima are percentiles over **all** pixels, glass included. The
    default, ``"stainlab"``, uses each image's own light, the "any channel" tissue rule (pale eosin has
    little red density) and percentiles over tissue, so the amount of glass does not move the maxima.
    """

    def __init__(self, beta: float = TISSUE_BETA, percentile: float = 99.0, multi: str = "pool",
                 rescale: bool = True, lut_bits: int = DEFAULT_BITS, light="estimate",
                 convention: str = "stainlab") -> None:
        super().__init__(lut_bits)
        self._init_light(light)
        self.convention = check_choice(f"{self.name}: convention", convention, CONVENTIONS)
        if self.convention == "torchstain":
            self.target_light = TORCHSTAIN_LIGHT.copy()
        self.beta = check_float(f"{self.name}: beta", beta, 0.0, 5.0)
        self.percentile = check_float(f"{self.name}: percentile", percentile, 50.0, 100.0)
        self.multi = check_choice(f"{self.name}: multi", multi, MULTI_MODES)
        self.rescale = check_bool(f"{self.name}: rescale", rescale)
        self.stain_matrix: np.ndarray | None = None
        self.max_concentrations: np.ndarray | None = None

    @abstractmethod
    def _estimate(self, od: np.ndarray, weights: np.ndarray, what: str) -> np.ndarray:
        """(2, 3) unit stain rows, haematoxylin first, from tissue optical densities and weights."""

    @abstractmethod
    def _concentrations(self, od: np.ndarray, stain_matrix: np.ndarray) -> np.ndarray:
        """(M, 2) stain concentrations of optical densities (M, 3)."""

    @classmethod
    def standard(cls, **params) -> "StainMatrixTransform":
        """A fitted transform whose target is Macenko et al.'s published reference H&E stain matrix
        and maxima: normalize without a reference image of your own."""
        t = cls(**params)
        t._set_target(MACENKO_REFERENCE_HE, MACENKO_REFERENCE_MAX_C, "standard target")
        t._fitted = True
        return t

    # -- estimation --------------------------------------------------------------------------------
    def _analyse(self, colors, weights, what: str, light=None) -> Source:
        """Stain matrix, robust maximum concentrations and light of one image's colours (``light``:
        already known, else taken by the option)."""
        light = self.light_of(colors, weights) if light is None else light
        if self.convention == "torchstain":
            return self._analyse_torchstain(colors, weights, what, light)
        od, w = tissue_od(colors, weights, self.beta, what, light)
        require_color_spread(colors, weights, what)
        stain_matrix = self._estimate(od, w, what)
        check_separable(stain_matrix, what)
        return Source(stain_matrix, robust_max(self._concentrations(od, stain_matrix), w, self.percentile), light)

    def _analyse_torchstain(self, colors, weights, what: str, light) -> Source:
        """:meth:`_analyse` in torchstain's convention (see the class docstring)."""
        w = np.ones(len(colors)) if weights is None else np.asarray(weights, dtype=np.float64)
        od = rgb_to_od(colors, light, clip=False)
        keep = (od > self.beta).all(axis=1)
        check_tissue_amount(float(w[keep].sum()), float(w.sum()), what)
        require_color_spread(colors, weights, what)
        stain_matrix = self._estimate(od[keep], w[keep], what)
        check_separable(stain_matrix, what)
        return Source(stain_matrix, robust_max(self._concentrations(od, stain_matrix), w, self.percentile), light)

    def light_of(self, colors, weights=None, every_pixel: bool = False) -> np.ndarray:
        if self.convention == "torchstain":
            return TORCHSTAIN_LIGHT.copy()
        return super().light_of(colors, weights, every_pixel)

    def _fit_light(self, colors, weights, what: str) -> np.ndarray:
        return TORCHSTAIN_LIGHT.copy() if self.convention == "torchstain" else super()._fit_light(colors, weights, what)

    def _torch_engine(self):
        """None in torchstain's convention, which the torch engine does not compute."""
        return None if self.convention == "torchstain" else super()._torch_engine()

    @property
    def _no_engine_reason(self) -> str:
        return ("in torchstain's convention" if self.convention == "torchstain"
                else "(batched dictionary learning does not pay)")

    @property
    def _clip(self) -> bool:
        """Whether optical density is clipped at zero (not in torchstain's convention)."""
        return self.convention != "torchstain"

    @property
    def kernel_maps(self) -> bool:
        """Each subclass's ``_small_map`` is a compiled kernel on clipped optical density; torchstain's
        convention takes the generic path."""
        return self._clip

    def _set_target(self, stain_matrix: np.ndarray, max_concentrations: np.ndarray, what: str) -> None:
        """Adopt a target after checking it (the same checks for a fit, a saved file and the standard)."""
        stain_matrix = check_target_rows(stain_matrix, what)
        absent = max_concentrations < MIN_MAX_CONCENTRATION
        if absent.any():
            raise NoTissueError(f"{what}: stain {int(np.argmax(absent))} (0 = haematoxylin) has a "
                                f"{self.percentile:g}th-percentile concentration of "
                                f"{max_concentrations[absent][0]:.4f}; the reference lacks it")
        self.stain_matrix, self.max_concentrations = stain_matrix, max_concentrations

    def _fit(self, images: list[np.ndarray]) -> None:
        if self.multi == "pool" or len(images) == 1:
            super()._fit(images)
            return
        fits = [self._reference_analysis(image, f"{self.name} reference {i}") for i, image in enumerate(images)]
        what = f"{self.name} references"
        rows = np.mean([absorbing_rows(f.stain_matrix, what) for f in fits], axis=0)
        self._set_target(normalize_rows(rows), np.mean([f.max_concentrations for f in fits], axis=0), what)
        self.target_light = np.mean([f.light for f in fits], axis=0)

    def _reference_analysis(self, image: np.ndarray, what: str) -> Source:
        """One reference's :class:`Source`, from a sample when it is large (:meth:`_fits_from_sample`)."""
        if self._fits_from_sample([image]):
            return self._sampled_reference([image], what)
        hist = ColorHistogram.of(image, 8)
        return self._analyse(hist.colors, hist.counts, what, self._fit_light(hist.colors, hist.counts, what))

    def _fit_colors(self, colors, weights) -> None:
        what = f"{self.name} reference"
        self._adopt(self._analyse(colors, weights, what, self._fit_light(colors, weights, what)))

    def _adopt(self, source: Source) -> None:
        what = f"{self.name} reference"
        self._set_target(absorbing_rows(source.stain_matrix, what), source.max_concentrations, what)
        self.target_light = source.light

    def _source(self, colors, weights, light=None):
        return self._analyse(colors, weights, f"{self.name} source", light)

    def _factors(self, source) -> np.ndarray:
        """The per-stain multipliers of a source's concentrations: the robust-maximum ratios to the
        target's (:func:`scale_factors`), or ones without ``rescale``."""
        return scale_factors(source[1], self.max_concentrations) if self.rescale else np.ones(2)

    def _map(self, colors, source):
        conc = self._concentrations(rgb_to_od(colors, source.light, self._clip), source.stain_matrix)
        return recompose(conc, self._factors(source), self.stain_matrix, self.target_light)

    # -- what users ask for: the image's own stains and its separated channels --------------------
    def stain_matrix_of(self, image: np.ndarray) -> np.ndarray:
        """(2, 3) stain rows (haematoxylin, eosin) of a uint8 RGB image; needs no fit."""
        return self._image_source(check_rgb8(image)).stain_matrix

    def _image_source(self, image: np.ndarray) -> Source:
        """:meth:`_analyse` of every colour of a (checked) uint8 RGB image."""
        hist = ColorHistogram.of(image, 8)
        return self._analyse(hist.colors, hist.counts, f"{self.name} image")

    def concentrations(self, image: np.ndarray, stain_matrix=None) -> np.ndarray:
        """(H, W, 2) haematoxylin and eosin concentrations (OD units, against the image's light) of a
        uint8 RGB image.

        Uses the image's own stain matrix unless ``stain_matrix`` (2, 3) is given (for example the
        fitted ``self.stain_matrix``). Needs no fit. The result is float64 (16 bytes a pixel): take
        whole slides tile by tile.
        """
        image = check_rgb8(image)
        pixels = image.reshape(-1, 3)
        if stain_matrix is None:
            rows, _, light = self._image_source(image)
        else:
            rows, light = _stain_rows(stain_matrix, "stain_matrix"), self.light_of(pixels)
        conc = self._concentrations(rgb_to_od(pixels, light), rows)
        return conc.reshape(image.shape[0], image.shape[1], 2)

    def _scaled_concentrations(self, od, source):
        """Per-pixel concentrations as :meth:`_map` scales them, and the target rows that render them."""
        return self._concentrations(od, source[0]) * self._factors(source), self.stain_matrix

    def stain_images(self, image, *, value_range=None) -> StainImages:
        """The normalized image with its stains separated: haematoxylin and eosin each rendered alone
        with the target's stain rows, and their concentrations scaled to the target's, from a uint8 RGB
        image (exact, per pixel) or a torch batch (the torch engine; Vahadane: NumPy images only)."""
        return stain_images(self, image, value_range)

    # -- persistence -----------------------------------------------------------------------------
    def _get_state(self):
        return {"stain_matrix": self.stain_matrix, "max_concentrations": self.max_concentrations,
                **self._light_state()}

    def _set_state(self, state):
        what = f"{self.name} fitted state"
        check_fields(state, ("stain_matrix", "max_concentrations", "light"), what)
        self._set_target(stored_array(state, "stain_matrix", (2, 3), what, 0.0, 1.0 + UNIT_TOLERANCE),
                         stored_array(state, "max_concentrations", (2,), what, MIN_MAX_CONCENTRATION,
                                      MAX_CONCENTRATION), what)
        self._set_light_state(state, what)
