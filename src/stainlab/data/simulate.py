"""The restaining simulator: real tissue, a known change of staining, exact ground truth.

Real tissue is separated into stain concentrations by colour deconvolution (Beer-Lambert, Ruifrok &
Johnston 2001): ``OD = -ln((I + 1) / 256)`` and ``C = OD M^-1`` with the source's 3x3 stain matrix ``M``
(its stain rows, fitted by Macenko et al. 2009 unless given, completed by the residual row that
:mod:`stainlab.color.deconvolution` adds, so nothing of the image is lost). The concentrations are then
rendered under another, known :class:`Staining`:

1. stain amounts scaled per stain, ``C' = C * s`` (over- or under-staining; the residual is kept);
2. other stain vectors, ``OD' = C' M_t`` (the target's rows, or the source's turned by ``rotation``
   degrees about the grey axis ``(1, 1, 1)``: a change of hue of each dye; the residual channel of a
   two-stain set goes along the target's residual row, orthogonal to its stains);
3. Beer-Lambert back to light, ``I = 256 exp(-OD') - 1``;
4. the scanner: optical blur (Gaussian, ``blur`` pixels, on light intensity), the response
   ``255 (g_c I / 255) ^ gamma`` per channel ``c`` (``g`` = colour cast / illumination spectrum tint,
   ``gamma`` > 1 darkens mid-tones), then sensor noise (Gaussian, ``noise`` grey levels) and 8-bit
   rounding.

Every pixel keeps its place, so a rendered image and the tissue it came from (or its rendering under a
reference staining) form a pixel-aligned pair: any normalizer can be scored against exact ground truth.
The identity staining (the source's own stains, scale 1, no scanner effects) gives the source back
byte for byte.

:func:`he_to_ihc` makes H&E -> IHC pairs from the same tissue for the virtual-staining work of paper
002 (DeReStainer, BCI data): the haematoxylin is kept, eosin dropped and DAB laid in membrane-like
rings around the nuclei at a HER2 level 0 / 1+ / 2+ / 3+, rendered under Ruifrok's H-DAB stains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy import ndimage

from stainlab.color.deconvolution import combine, separate, stain_basis
from stainlab.color.stains import normalize_rows
from stainlab.errors import InputError
from stainlab.io.arrays import check_rgb8

GREY_AXIS = np.ones(3) / np.sqrt(3.0)
"""Rotating a stain's OD vector about this axis changes its hue and keeps its overall density."""

HER2_LEVELS = ("0", "1+", "2+", "3+")
DAB_PEAK = {"0": 0.0, "1+": 0.3, "2+": 0.7, "3+": 1.3}
"""Peak DAB concentration (OD units) of the membrane rings per HER2 level: 0 has none, 1+ is faint,
3+ is the dark brown complete membrane staining of strongly positive tumour (BCI, paper 002)."""

_NUCLEUS_SMOOTH = 1.0      # px: haematoxylin smoothed before finding nuclei
_MEMBRANE_WIDTH = 3.0      # px: how far outside a nucleus its membrane ring reaches
_HETEROGENEITY = 12.0      # px: scale of the smooth random modulation of DAB between cells


@dataclass(frozen=True)
class Staining:
    """A known staining and scanner: how concentrations become an 8-bit RGB image.

    ``stains``: stain rows (2 or 3, each an OD vector; normalised), or ``None`` for the source image's
    own stains. ``scale``: concentration factor per stain (one number applies to all). ``rotation``:
    degrees each stain's vector turns about the grey axis. ``gamma``, ``gain`` (R, G, B), ``blur``
    (sigma in pixels) and ``noise`` (sigma in grey levels): the scanner, see the module docstring.
    """

    stains: tuple | None = None
    scale: tuple = (1.0,)
    rotation: tuple = (0.0,)
    gamma: float = 1.0
    gain: tuple = (1.0, 1.0, 1.0)
    blur: float = 0.0
    noise: float = 0.0
    name: str = field(default="identity", compare=False)

    def __post_init__(self) -> None:
        if self.stains is not None:
            rows = np.asarray(self.stains, dtype=np.float64)
            if rows.ndim != 2 or rows.shape[1] != 3 or rows.shape[0] not in (2, 3) or not np.isfinite(rows).all() \
                    or (np.linalg.norm(rows, axis=1) == 0).any():
                raise InputError(f"Staining.stains must be 2 or 3 finite, non-zero OD rows of 3 values, "
                                 f"got {rows.tolist()}")
            object.__setattr__(self, "stains", _as_tuple(normalize_rows(rows)))
        object.__setattr__(self, "scale", _positive_tuple("scale", self.scale))
        object.__setattr__(self, "rotation", _finite_tuple("rotation", self.rotation))
        object.__setattr__(self, "gain", _positive_tuple("gain", self.gain))
        if len(self.gain) != 3:
            raise InputError(f"Staining.gain needs one factor per R, G, B channel, got {self.gain}")
        object.__setattr__(self, "gamma", _scalar("gamma", self.gamma, positive=True))
        object.__setattr__(self, "blur", _scalar("blur", self.blur, positive=False))
        object.__setattr__(self, "noise", _scalar("noise", self.noise, positive=False))

    def to_dict(self) -> dict:
        """Plain JSON-ready parameters (:meth:`from_dict` restores them)."""
        params = asdict(self)
        for key, value in params.items():
            if isinstance(value, tuple):
                params[key] = [list(row) if isinstance(row, tuple) else row for row in value]
        return params

    @classmethod
    def from_dict(cls, params: dict) -> Staining:
        """The staining whose :meth:`to_dict` gave ``params`` (for example from a benchmark's meta.json)."""
        return cls(**params)

    def with_stains(self, stains) -> Staining:
        """This staining with explicit stain rows (for example a fitted source matrix)."""
        return replace(self, stains=_as_tuple(np.asarray(stains, dtype=np.float64)))

    def stain_rows(self, source_rows: np.ndarray) -> np.ndarray:
        """The (k, 3) stain rows this staining renders with: its own, or ``source_rows``, each turned by
        its ``rotation`` about the grey axis."""
        rows = source_rows if self.stains is None else np.asarray(self.stains)
        angles = _per_stain("rotation", self.rotation, len(rows))
        return np.array([_rotate_about_grey(row, angle) for row, angle in zip(rows, angles, strict=True)])

    def concentration_scale(self, n_stains: int) -> np.ndarray:
        """Factors for the 3 deconvolution channels: ``scale`` per stain, 1 for a residual channel."""
        return np.concatenate([_per_stain("scale", self.scale, n_stains), np.ones(3 - n_stains)])


def render(conc: np.ndarray, stains, staining: Staining | None = None, seed: int = 0) -> np.ndarray:
    """uint8 RGB of concentrations ``conc`` (H, W, 3) in the deconvolution channels of ``stains``
    ((2, 3) rows, a named set or a :class:`StainBasis`), under ``staining``'s scale, stain rotation and
    scanner (``None``: the identity staining). ``staining.stains`` (when set) replaces the rows, which
    must be as many."""
    staining = Staining() if staining is None else staining
    basis = stain_basis(stains)
    n_stains = len(basis.stains)
    rows = staining.stain_rows(basis.matrix[:n_stains])
    if len(rows) != n_stains:
        raise InputError(f"the staining has {len(rows)} stains but the concentrations have {n_stains}")
    light = combine(np.asarray(conc, dtype=np.float64) * staining.concentration_scale(n_stains), rows)
    return scan(light, staining, seed)


def scan(light: np.ndarray, staining: Staining, seed: int = 0) -> np.ndarray:
    """The scanner model on float light intensities in [0, 255]: blur, gain and gamma, noise, 8 bits."""
    if staining.blur > 0:
        light = ndimage.gaussian_filter(light, sigma=(staining.blur, staining.blur, 0), mode="reflect")
    response = np.clip(light * np.asarray(staining.gain) / 255.0, 0.0, 1.0) ** staining.gamma * 255.0
    if staining.noise > 0:
        response = response + np.random.default_rng(seed).normal(0.0, staining.noise, response.shape)
    return np.clip(np.rint(response), 0, 255).astype(np.uint8)


def source_stain_rows(image: np.ndarray, source_stains=None) -> np.ndarray:
    """The source's stain rows: fitted by Macenko (``None`` or ``"fit"``), a named set or a matrix."""
    if source_stains is None or (isinstance(source_stains, str) and source_stains == "fit"):
        from stainlab.transforms.macenko import Macenko   # transforms depend on color; data on both

        return Macenko().stain_matrix_of(image)
    basis = stain_basis(source_stains)
    return basis.matrix[:len(basis.stains)]


def restain(image, target: Staining, source_stains=None, seed: int = 0) -> np.ndarray:
    """Real tissue rendered under the ``target`` staining; pixel-aligned with ``image``.

    ``image`` (uint8 HxWx3) is separated with the source's stain matrix (``source_stains``: ``None`` or
    ``"fit"`` = Macenko's fit of this image, else a named stain set or a (2, 3) / (3, 3) matrix), then
    rendered by :func:`render`; ``seed`` drives the scanner noise. Raises
    :class:`~stainlab.errors.NoTissueError` when stains cannot be fitted (no tissue, one stain).
    """
    image = check_rgb8(image)
    rows = source_stain_rows(image, source_stains)
    return render(separate(image, rows), rows, target, seed)


def he_to_ihc(he_image, level, seed: int = 0, source_stains=None) -> np.ndarray:
    """An IHC (haematoxylin + DAB) image of the same tissue as an H&E image, at HER2 ``level``.

    The haematoxylin concentration of ``he_image`` (separated as in :func:`restain`) is kept, the eosin
    dropped, and DAB added by :func:`dab_pattern`; the result is rendered under Ruifrok's H-DAB stains.
    ``level``: 0, 1, 2, 3 or "0", "1+", "2+", "3+".
    """
    level = her2_level(level)
    image = check_rgb8(he_image, "he_image")
    rows = source_stain_rows(image, source_stains)
    hematoxylin = np.maximum(separate(image, rows)[..., 0], 0.0)
    conc = np.stack([hematoxylin, dab_pattern(hematoxylin, level, seed), np.zeros_like(hematoxylin)], axis=-1)
    return render(conc, "hdab")


def dab_pattern(hematoxylin: np.ndarray, level: str, seed: int = 0) -> np.ndarray:
    """DAB concentration (H, W) following morphology: rings just outside the nuclei (membrane staining).

    Nuclei are where the smoothed haematoxylin is high (relative to its 99th percentile); the ring is
    the part of a Gaussian spread of the nuclei (``_MEMBRANE_WIDTH`` px) that lies outside them. Its
    peak is ``DAB_PEAK[level]``, modulated cell to cell by smooth random heterogeneity from ``seed``.
    """
    peak = DAB_PEAK[her2_level(level)]
    if peak == 0.0:
        return np.zeros_like(hematoxylin)
    smooth = ndimage.gaussian_filter(hematoxylin, _NUCLEUS_SMOOTH)
    top = np.percentile(smooth, 99)
    nuclei = np.clip(smooth / top, 0.0, 1.0) if top > 0 else np.zeros_like(smooth)
    ring = np.clip(ndimage.gaussian_filter(nuclei, _MEMBRANE_WIDTH) - nuclei, 0.0, None)
    ring_top = ring.max()
    if ring_top <= 0:
        return np.zeros_like(hematoxylin)
    variation = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(ring.shape), _HETEROGENEITY)
    modulation = np.clip(1.0 + 0.3 * variation / (variation.std() + 1e-12), 0.4, 1.6)
    return peak * np.clip(ring / ring_top, 0.0, 1.0) * modulation


def her2_level(level) -> str:
    """``level`` as one of "0", "1+", "2+", "3+" (ints 0-3 accepted), else :class:`InputError`."""
    valid_type = isinstance(level, (str, int, np.integer)) and not isinstance(level, bool)
    text = str(level).strip() if valid_type else None
    if text in ("1", "2", "3"):
        text += "+"
    if text not in HER2_LEVELS:
        raise InputError(f"unknown HER2 level {level!r}; use one of 0, 1+, 2+, 3+ (or 0-3)")
    return text


def _rotate_about_grey(vector: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues' rotation of a unit stain ``vector`` about the grey axis; a dye cannot absorb
    negatively, so negative components of a turned vector are clipped (and the row renormalised).
    A zero angle returns ``vector`` untouched, so the identity staining is exact."""
    if degrees == 0:
        return vector
    t = np.radians(degrees)
    k = GREY_AXIS
    turned = vector * np.cos(t) + np.cross(k, vector) * np.sin(t) + k * (k @ vector) * (1 - np.cos(t))
    return normalize_rows(np.maximum(turned, 0.0))


def _per_stain(name: str, values: tuple, n_stains: int) -> np.ndarray:
    if len(values) == 1:
        return np.full(n_stains, values[0])
    if len(values) != n_stains:
        raise InputError(f"Staining.{name} has {len(values)} values for {n_stains} stains; give one or {n_stains}")
    return np.asarray(values)


def _as_tuple(array: np.ndarray) -> tuple:
    return tuple(tuple(float(x) for x in row) for row in array)


def _finite_tuple(name: str, values) -> tuple:
    try:
        numbers = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        numbers = np.array([np.nan])
    if numbers.ndim != 1 or not numbers.size or not np.isfinite(numbers).all():
        raise InputError(f"Staining.{name} must be a finite number or a list of them, got {values!r}")
    return tuple(float(v) for v in numbers)


def _scalar(name: str, value, positive: bool) -> float:
    number = _finite_tuple(name, value)
    if len(number) != 1 or number[0] < 0 or (positive and number[0] == 0):
        raise InputError(f"Staining.{name} must be a {'positive' if positive else 'non-negative'} number, "
                         f"got {value!r}")
    return number[0]


def _positive_tuple(name: str, values) -> tuple:
    values = _finite_tuple(name, values)
    if min(values) <= 0:
        raise InputError(f"Staining.{name} must be positive, got {list(values)}")
    return values
