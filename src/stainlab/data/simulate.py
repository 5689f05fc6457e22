"""The restaining simulator: real tissue, a known change of staining, exact ground truth.

Real tissue is separated into stain concentrations by colour deconvolution (Beer-Lambert, Ruifrok &
Johnston 2001) against the image's own light ``I0`` (the colour of its glass, per channel, estimated by
:func:`stainlab.color.light.estimate_light` or given): ``OD = -ln((I + 1) / (I0 + 1))`` and
``C = OD M^-1`` with the source's 3x3 stain matrix ``M`` (its stain rows, fitted by Macenko et al. 2009
against the same light unless given, completed by the residual row that
:mod:`stainlab.color.deconvolution` adds, so nothing of the image is lost). Glass therefore separates to
zero concentrations whatever its colour. The concentrations are then rendered under another, known
:class:`Staining`:

1. stain amounts scaled per stain, ``C' = C * s`` (over- or under-staining); the residual channel of a
   two-stain set (the density neither stain explains) is kept, plus ``leak`` residual per unit of each
   scaled stain, ``R' = R + C'_stains . leak`` (where a look's dyes leave the plane of its two stain
   rows otherwise than the source's do; zero where there is no stain, so glass stays glass);
2. other stain vectors, ``OD' = C' M_t`` (the target's rows, or the source's turned by ``rotation``
   degrees about the grey axis ``(1, 1, 1)``: a change of hue of each dye; the residual channel of a
   two-stain set goes along the target's residual row, orthogonal to its stains);
3. Beer-Lambert back to light under the target's lamp, ``I = (I0' + 1) exp(-OD') - 1`` (``I0'`` is the
   staining's ``light``, or the source's own light when it has none), so the output's glass is the
   target's glass;
4. the scanner (:func:`scan`), in the order light meets it: optical blur (Gaussian, ``blur`` pixels, on
   light intensity); colour cross-talk, ``I_c = sum_j X_cj I_j`` (the colour filters of a sensor
   overlap, so each channel sees some of its neighbours' light; rows of ``X`` sum to 1, so grey stays
   grey); white balance ``g_c I_c / 255``; the tone curve per channel, a power ``x ^ gamma_c``
   (``gamma`` > 1 darkens mid-tones) and a contrast S-curve ``x + k_c x (1 - x)(2x - 1)`` (``k`` > 0
   steepens mid-tones, < 0 flattens them; the ends 0 and 1 stay); saturation, chroma scaled about
   luma, ``Y + sat (x - Y)`` with JPEG's ``Y = 0.299 R + 0.587 G + 0.114 B``; sensor noise (Gaussian,
   ``noise`` grey levels); 8-bit rounding; and JPEG recompression at ``jpeg`` quality (4:2:0 chroma),
   whose 8x8 blocks and halved chroma resolution no colour model describes.

Steps 1-3 are the two-stain Beer-Lambert model that Macenko and Vahadane assume; step 4 is not, so the
scanner presets of :mod:`stainlab.data.presets` test what a stain model cannot express.

Every pixel keeps its place, so a rendered image and the tissue it came from (or its rendering under a
reference staining) form a pixel-aligned pair: any normalizer can be scored against exact ground truth.
The identity staining (the source's own stains and light, scale 1, no scanner effects) gives the source
back byte for byte.

:func:`he_to_ihc` makes H&E -> IHC pairs from the same tissue for the virtual-staining work of paper
002 (DeReStainer, BCI data): the haematoxylin is kept, eosin dropped and DAB laid in membrane-like
rings around the nuclei at a HER2 level 0 / 1+ / 2+ / 3+, rendered under Ruifrok's H-DAB stains.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from PIL import Image
from scipy import ndimage

from stainlab.color.deconvolution import separate, stain_basis
from stainlab.color.light import WHITE, check_light_rgb, resolve_light
from stainlab.color.od import od_to_rgb
from stainlab.color.stains import normalize_rows
from stainlab.errors import InputError
from stainlab.io.arrays import check_rgb8

GREY_AXIS = np.ones(3) / np.sqrt(3.0)
"""Rotating a stain's OD vector about this axis changes its hue and keeps its overall density."""
LUMA = np.array([0.299, 0.587, 0.114])
"""ITU-R BT.601 luma weights, JPEG's Y: saturation scales a colour's distance from this grey."""
CROSSTALK_TOLERANCE = 1e-6
"""How far a cross-talk row may sum from 1 (it moves light between channels, never adds or loses it)."""

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

    The staining: ``stains``, stain rows (2 or 3, each an OD vector; normalised), or ``None`` for the
    source image's own stains; ``scale``, concentration factor per stain (one number applies to all);
    ``rotation``, degrees each stain's vector turns about the grey axis; ``leak``, residual density
    added per unit of each stain (two-stain sets; one value applies to both). The lamp: ``light``, the RGB of
    the glass (``I0`` per channel, in [1, 255]) before the scanner, or ``None`` for the source's own
    light. The scanner (see the module docstring): ``blur`` (sigma in pixels), ``crosstalk`` (3x3,
    non-negative rows summing to 1, or ``None`` for none), ``gain`` (R, G, B), ``gamma`` and
    ``contrast`` (one value, or one per R, G, B; contrast in [-1, 1] keeps the curve monotonic),
    ``saturation`` (1 keeps colours, 0 makes grey), ``noise`` (sigma in grey levels) and ``jpeg`` (a
    quality 1-100, or ``None`` for none).
    """

    stains: tuple | None = None
    scale: tuple = (1.0,)
    rotation: tuple = (0.0,)
    gamma: tuple = (1.0,)
    gain: tuple = (1.0, 1.0, 1.0)
    blur: float = 0.0
    noise: float = 0.0
    light: tuple | None = None
    crosstalk: tuple | None = None
    contrast: tuple = (0.0,)
    saturation: float = 1.0
    jpeg: int | None = None
    leak: tuple = (0.0,)
    name: str = field(default="identity", compare=False)

    def __post_init__(self) -> None:
        if self.stains is not None:
            rows = np.asarray(self.stains, dtype=np.float64)
            if rows.ndim != 2 or rows.shape[1] != 3 or rows.shape[0] not in (2, 3) or not np.isfinite(rows).all() \
                    or (np.linalg.norm(rows, axis=1) == 0).any():
                raise InputError(f"Staining.stains must be 2 or 3 finite, non-zero OD rows of 3 values, "
                                 f"got {rows.tolist()}")
            unit = np.abs(np.linalg.norm(rows, axis=1) - 1.0).max() < 1e-12   # kept as given: JSON round-trips
            object.__setattr__(self, "stains", _as_tuple(rows if unit else normalize_rows(rows)))
        object.__setattr__(self, "scale", _positive_tuple("scale", self.scale))
        object.__setattr__(self, "rotation", _finite_tuple("rotation", self.rotation))
        object.__setattr__(self, "gain", _positive_tuple("gain", self.gain))
        if len(self.gain) != 3:
            raise InputError(f"Staining.gain needs one factor per R, G, B channel, got {self.gain}")
        object.__setattr__(self, "gamma", _per_channel("gamma", _positive_tuple("gamma", self.gamma)))
        contrast = _per_channel("contrast", _finite_tuple("contrast", self.contrast))
        if max(abs(c) for c in contrast) > 1:
            raise InputError(f"Staining.contrast must lie in [-1, 1] (beyond, the S-curve folds back), got "
                             f"{list(contrast)}")
        object.__setattr__(self, "contrast", contrast)
        object.__setattr__(self, "blur", _scalar("blur", self.blur, positive=False))
        object.__setattr__(self, "noise", _scalar("noise", self.noise, positive=False))
        object.__setattr__(self, "saturation", _scalar("saturation", self.saturation, positive=False))
        object.__setattr__(self, "leak", _finite_tuple("leak", self.leak))
        if self.light is not None:
            try:
                object.__setattr__(self, "light", tuple(float(v) for v in check_light_rgb(self.light)))
            except ValueError:
                raise InputError(f"Staining.light must be None (the source's own) or an RGB glass colour "
                                 f"with values in [1, 255], got {self.light!r}") from None
        if self.crosstalk is not None:
            object.__setattr__(self, "crosstalk", _crosstalk(self.crosstalk))
        if self.jpeg is not None:
            if isinstance(self.jpeg, bool) or not isinstance(self.jpeg, (int, np.integer)) or not 1 <= self.jpeg <= 100:
                raise InputError(f"Staining.jpeg must be None or a JPEG quality from 1 to 100, got {self.jpeg!r}")
            object.__setattr__(self, "jpeg", int(self.jpeg))

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

    def leak_matrix(self, n_stains: int) -> np.ndarray:
        """(3, 3) added to the identity on scaled concentrations: each stain's ``leak`` into a two-stain
        set's residual channel (zeros for three stains, which have no residual)."""
        matrix = np.zeros((3, 3))
        if n_stains == 2:
            matrix[:2, 2] = _per_stain("leak", self.leak, 2)
        return matrix

    def lamp(self, source_light=None) -> np.ndarray:
        """The ``I0`` (3,) this staining renders under: its ``light``, else ``source_light`` (the light
        the concentrations were separated against), else white."""
        chosen = self.light if self.light is not None else source_light
        return WHITE.copy() if chosen is None else np.asarray(chosen, dtype=np.float64)


def render(conc: np.ndarray, stains, staining: Staining | None = None, seed: int = 0,
           source_light=None) -> np.ndarray:
    """uint8 RGB of concentrations ``conc`` (H, W, 3) in the deconvolution channels of ``stains``
    ((2, 3) rows, a named set or a :class:`StainBasis`), under ``staining``'s scale, stain rotation,
    light and scanner (``None``: the identity staining). ``staining.stains`` (when set) replaces the
    rows, which must be as many. ``source_light``: the RGB light the concentrations were separated
    against, which a staining without a ``light`` of its own keeps (``None``: white)."""
    staining = Staining() if staining is None else staining
    basis = stain_basis(stains)
    n_stains = len(basis.stains)
    rows = staining.stain_rows(basis.matrix[:n_stains])
    if len(rows) != n_stains:
        raise InputError(f"the staining has {len(rows)} stains but the concentrations have {n_stains}")
    conc = np.asarray(conc, dtype=np.float64) * staining.concentration_scale(n_stains)
    od = conc @ (np.eye(3) + staining.leak_matrix(n_stains)) @ stain_basis(rows).matrix
    return scan(od_to_rgb(od, staining.lamp(source_light)), staining, seed)


def scan(intensity: np.ndarray, staining: Staining, seed: int = 0) -> np.ndarray:
    """The scanner model on float light intensities in [0, 255] (the module docstring's step 4, in that
    order): blur, cross-talk, white balance, tone curve, saturation, noise, 8 bits, JPEG."""
    if staining.blur > 0:
        intensity = ndimage.gaussian_filter(intensity, sigma=(staining.blur, staining.blur, 0), mode="reflect")
    if staining.crosstalk is not None:
        intensity = intensity @ np.asarray(staining.crosstalk).T
    response = np.clip(intensity * np.asarray(staining.gain) / 255.0, 0.0, 1.0) ** np.asarray(staining.gamma)
    if any(staining.contrast):
        response = s_curve(response, np.asarray(staining.contrast))
    if staining.saturation != 1.0:
        luma = (response @ LUMA)[..., None]
        response = np.clip(luma + staining.saturation * (response - luma), 0.0, 1.0)
    response = response * 255.0
    if staining.noise > 0:
        response = response + np.random.default_rng(seed).normal(0.0, staining.noise, response.shape)
    image = np.clip(np.rint(response), 0, 255).astype(np.uint8)
    return image if staining.jpeg is None else jpeg_recompress(image, staining.jpeg)


def s_curve(x: np.ndarray, contrast) -> np.ndarray:
    """``x + k x (1 - x)(2x - 1)`` on [0, 1]: a blend of ``x`` and the smoothstep ``3x^2 - 2x^3`` by
    ``k`` (per channel), the mid-tone contrast of a camera's tone curve; monotonic for ``k`` in [-1, 1]."""
    return x + contrast * x * (1.0 - x) * (2.0 * x - 1.0)


def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` encoded as a JPEG at ``quality`` (4:2:0 chroma, as scanners write them) and decoded."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def source_light(light, image: np.ndarray) -> np.ndarray:
    """The (3,) light ``image`` is separated against: ``"estimate"`` (its glass, white when it has none),
    ``"fixed"`` (white) or an RGB triple; :class:`InputError` otherwise."""
    try:
        return resolve_light(light, image, "source light").rgb
    except ValueError as err:
        raise InputError(str(err)) from None


def concentrations(image: np.ndarray, stains, light=WHITE) -> np.ndarray:
    """Stain concentrations (H, W, 3) of ``image`` in the deconvolution channels of ``stains``, with
    optical density taken against ``light``: ``OD = OD_255(I) - OD_255(I0)``, so glass of exactly the
    light's colour has none, and brighter noise keeps its small negative density (the round trip stays
    exact)."""
    basis = stain_basis(stains)
    return separate(image, basis) - separate(np.asarray(light, dtype=np.float64), basis)


def source_stain_rows(image: np.ndarray, source_stains=None, light=WHITE) -> np.ndarray:
    """The source's stain rows: fitted by Macenko (``None`` or ``"fit"``) with optical density against
    ``light``, so glass is not taken for stain; else a named set or a matrix."""
    if source_stains is None or (isinstance(source_stains, str) and source_stains == "fit"):
        from stainlab.transforms.macenko import Macenko   # transforms depend on color; data on both

        return Macenko(light=np.asarray(light, dtype=np.float64).tolist()).stain_matrix_of(image)
    basis = stain_basis(source_stains)
    return basis.matrix[:len(basis.stains)]


def restain(image, target: Staining, source_stains=None, seed: int = 0, light="estimate") -> np.ndarray:
    """Real tissue rendered under the ``target`` staining; pixel-aligned with ``image``.

    ``image`` (uint8 HxWx3) is separated against its ``light`` (``"estimate"``: the colour of its glass,
    white when it has none; ``"fixed"``: white; or an RGB triple, e.g. estimated once over the whole
    slide a tile came from) with the source's stain matrix (``source_stains``: ``None`` or ``"fit"`` =
    Macenko's fit of this image, else a named stain set or a (2, 3) / (3, 3) matrix), then rendered by
    :func:`render` (under the target's light, or this one when the target has none); ``seed`` drives
    the scanner noise. Raises :class:`~stainlab.errors.NoTissueError` when stains cannot be fitted (no
    tissue, one stain).
    """
    image = check_rgb8(image)
    lamp = source_light(light, image)
    rows = source_stain_rows(image, source_stains, lamp)
    return render(concentrations(image, rows, lamp), rows, target, seed, lamp)


def he_to_ihc(he_image, level, seed: int = 0, source_stains=None, light="estimate") -> np.ndarray:
    """An IHC (haematoxylin + DAB) image of the same tissue as an H&E image, at HER2 ``level``.

    The haematoxylin concentration of ``he_image`` (separated as in :func:`restain`) is kept, the eosin
    dropped, and DAB added by :func:`dab_pattern`; the result is rendered under Ruifrok's H-DAB stains
    and the H&E image's light (the same microscope). ``level``: 0, 1, 2, 3 or "0", "1+", "2+", "3+".
    """
    level = her2_level(level)
    image = check_rgb8(he_image, "he_image")
    lamp = source_light(light, image)
    rows = source_stain_rows(image, source_stains, lamp)
    hematoxylin = np.maximum(concentrations(image, rows, lamp)[..., 0], 0.0)
    conc = np.stack([hematoxylin, dab_pattern(hematoxylin, level, seed), np.zeros_like(hematoxylin)], axis=-1)
    return render(conc, "hdab", source_light=lamp)


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


def _per_channel(name: str, values: tuple) -> tuple:
    if len(values) not in (1, 3):
        raise InputError(f"Staining.{name} takes one value or one per R, G, B channel, got {list(values)}")
    return values


def _crosstalk(matrix) -> tuple:
    """A 3x3 cross-talk matrix as nested tuples: finite, non-negative, each row summing to 1."""
    try:
        rows = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        rows = np.full((1,), np.nan)
    if rows.shape != (3, 3) or not np.isfinite(rows).all() or rows.min() < 0 \
            or np.abs(rows.sum(axis=1) - 1.0).max() > CROSSTALK_TOLERANCE:
        raise InputError(f"Staining.crosstalk must be None or a 3x3 matrix of non-negative rows that each sum "
                         f"to 1 (the share of each channel's light seen by R, G and B), got {matrix!r}")
    return _as_tuple(rows)
