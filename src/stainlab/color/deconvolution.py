"""Colour deconvolution (Ruifrok & Johnston, "Quantification of histochemical staining by color
deconvolution", Anal. Quant. Cytol. Histol. 23(4), 2001).

Beer-Lambert makes optical density linear in the stain amounts: ``OD = C @ M``, where the rows of the
3x3 matrix ``M`` are the stains' unit OD vectors. Deconvolution inverts it, ``C = OD @ M^-1``; a
two-stain set gets a third row orthogonal to both (the paper's residual channel), so ``M`` is always
invertible and :func:`combine` undoes :func:`separate` exactly.

Named stain sets: ``"hed"`` (haematoxylin, eosin, DAB), ``"he"`` (H, E + residual) and ``"hdab"``
(H, DAB + residual); any (2, 3) or (3, 3) matrix of stain rows is accepted too.

Paper 002 (DeReStainer, Sec. 2.1 "Staining Separation") takes a single stain back to RGB as
``I^H = T^-1([v_H, 0, 0])``: deconvolve, zero every other channel, reconvolve; that is :func:`project`.

Two conventions:

- ``"stainlab"`` (default): RGB in [0, 255] (uint8 or float), ``OD = -ln((I + 1) / 256)`` as in
  :mod:`stainlab.color.od` (finite on black pixels), unit stain rows; nothing is clipped, so the round
  trip is exact and RGB out is float in [0, 255].
- ``"skimage"``: exactly ``skimage.color.rgb2hed`` / ``hed2rgb`` / ``separate_stains`` /
  ``combine_stains``: RGB in [0, 1] (uint8 divided by 255), intensities floored at 1e-6, densities
  divided by ``-ln(1e-6)``, the matrix rows as given (not normalised), negative concentrations clipped
  to 0, RGB out in [0, 1]. (scikit-image's own ``hdx_from_rgb`` uses three-digit stain values; with
  ``"hdab"`` here the two-digit ones of :mod:`stainlab.color.stains` are used.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stainlab.color.od import od_to_rgb, rgb_to_od
from stainlab.color.stains import DAB, EOSIN, HEMATOXYLIN, complete_basis

STAIN_SETS: dict[str, tuple[tuple[str, ...], tuple[np.ndarray, ...]]] = {
    "hed": (("H", "E", "DAB"), (HEMATOXYLIN, EOSIN, DAB)),
    "he": (("H", "E"), (HEMATOXYLIN, EOSIN)),
    "hdab": (("H", "DAB"), (HEMATOXYLIN, DAB)),
}
RESIDUAL = "residual"
CONVENTIONS = ("stainlab", "skimage")

_SKIMAGE_FLOOR = 1e-6   # skimage.color.separate_stains floors intensities here before the log
_MIN_DETERMINANT = 1e-6


@dataclass(frozen=True)
class StainBasis:
    """A 3x3 stain matrix (rows = OD vectors) with a name per row; two-stain sets end in ``residual``."""

    names: tuple[str, ...]
    matrix: np.ndarray
    inverse: np.ndarray

    @property
    def stains(self) -> tuple[str, ...]:
        """The names of the real stains (the residual row excluded)."""
        return tuple(n for n in self.names if n != RESIDUAL)

    def index(self, channel) -> int:
        """Row index of a stain given by name (case-insensitive) or by index."""
        if isinstance(channel, (int, np.integer)) and not isinstance(channel, bool):
            if 0 <= channel < len(self.names):
                return int(channel)
        elif isinstance(channel, str):
            lowered = [n.lower() for n in self.names]
            if channel.lower() in lowered:
                return lowered.index(channel.lower())
        raise ValueError(f"unknown stain channel {channel!r}; this stain set has {', '.join(self.names)} "
                         f"(or an index 0-{len(self.names) - 1})")


def stain_basis(stains="hed", convention: str = "stainlab") -> StainBasis:
    """The :class:`StainBasis` of a named set or of a (2, 3) / (3, 3) matrix of stain rows.

    A :class:`StainBasis` passed in is returned as it is (every function below accepts one, so callers
    that deconvolve many times build it once).
    """
    _check_convention(convention)
    if isinstance(stains, StainBasis):
        return stains
    if isinstance(stains, str):
        key = stains.lower()
        if key not in STAIN_SETS:
            raise ValueError(f"unknown stain set {stains!r}; known: {', '.join(STAIN_SETS)} "
                             "(or pass a (2, 3) or (3, 3) matrix of stain OD vectors)")
        names, rows = STAIN_SETS[key]
        rows = np.array(rows, dtype=np.float64)
    else:
        rows = np.array(stains, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 3 or rows.shape[0] not in (2, 3) or not np.isfinite(rows).all():
            raise ValueError(f"a stain matrix must be a finite (2, 3) or (3, 3) array of stain rows, "
                             f"got shape {rows.shape}")
        names = tuple(f"stain {i + 1}" for i in range(rows.shape[0]))
    if len(names) == 2:
        names = names + (RESIDUAL,)
    matrix = complete_basis(rows) if convention == "stainlab" else _raw_basis(rows)
    if abs(np.linalg.det(matrix)) < _MIN_DETERMINANT:
        raise ValueError("the stain vectors are linearly dependent; colour deconvolution needs distinct stains")
    return StainBasis(names, matrix, np.linalg.inv(matrix))


def separate(rgb, stains="hed", convention: str = "stainlab") -> np.ndarray:
    """Stain concentrations ``(..., 3)`` of RGB values ``(..., 3)``: ``C = OD @ M^-1``.

    For a two-stain set the last column is the residual (what the two stains do not explain).
    """
    basis = stain_basis(stains, convention)
    if convention == "stainlab":
        return rgb_to_od(_check_rgb255(rgb)) @ basis.inverse
    conc = (np.log(np.maximum(_skimage_float(rgb), _SKIMAGE_FLOOR)) / np.log(_SKIMAGE_FLOOR)) @ basis.inverse
    return np.maximum(conc, 0.0, out=conc)


def combine(conc, stains="hed", convention: str = "stainlab") -> np.ndarray:
    """RGB of stain concentrations ``(..., 3)``, the inverse of :func:`separate` (float; see conventions)."""
    basis = stain_basis(stains, convention)
    conc = np.asarray(conc, dtype=np.float64)
    if conc.shape[-1:] != (3,):
        raise ValueError(f"concentrations must have 3 channels in the last axis, got shape {conc.shape}")
    if convention == "stainlab":
        return od_to_rgb(conc @ basis.matrix)
    rgb = np.exp(-(conc * -np.log(_SKIMAGE_FLOOR)) @ basis.matrix)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def project(rgb, channel, stains="hed", convention: str = "stainlab") -> np.ndarray:
    """One stain alone, back in RGB (3 channels): paper 002's ``T^-1([v_H, 0, 0])``.

    ``channel`` is a stain name of the set (``"H"``, ``"E"``, ``"DAB"``, case-insensitive) or an index.
    """
    basis = stain_basis(stains, convention)
    keep = basis.index(channel)
    conc = separate(rgb, basis, convention)
    single = np.zeros_like(conc)
    single[..., keep] = conc[..., keep]
    return combine(single, basis, convention)


def stain_images(rgb, stains="hed") -> dict[str, np.ndarray]:
    """Each stain of the set rendered alone as a uint8 RGB image (stainlab convention), by stain name."""
    basis = stain_basis(stains)
    conc = separate(rgb, basis)
    out = {}
    for i, name in enumerate(basis.names):
        if name != RESIDUAL:
            rgb_i = od_to_rgb(conc[..., i:i + 1] * basis.matrix[i])
            out[name] = np.clip(np.rint(rgb_i), 0, 255).astype(np.uint8)
    return out


def _raw_basis(rows: np.ndarray) -> np.ndarray:
    """scikit-image's way: rows as given, a two-stain set completed by their plain cross product."""
    return rows if rows.shape[0] == 3 else np.vstack([rows, np.cross(rows[0], rows[1])])


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; use one of {', '.join(CONVENTIONS)}")


def _check_shape(arr: np.ndarray) -> np.ndarray:
    if arr.shape[-1:] != (3,):
        raise ValueError(f"expected RGB values with 3 channels in the last axis, got shape {arr.shape}")
    return arr


def _check_rgb255(rgb) -> np.ndarray:
    """uint8, or float in [0, 255]: the stainlab convention's input."""
    arr = _check_shape(np.asarray(rgb))
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected uint8 RGB or float RGB in [0, 255], got dtype {arr.dtype} "
                         "(for skimage-style input in [0, 1] pass convention='skimage')")
    if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 255.0):
        raise ValueError("float RGB values must be finite and in [0, 255]")
    return arr


def _skimage_float(rgb) -> np.ndarray:
    """scikit-image's img_as_float: unsigned integers scaled by their maximum, floats taken as [0, 1]."""
    arr = _check_shape(np.asarray(rgb))
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return arr / float(np.iinfo(arr.dtype).max)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float64)
    raise ValueError(f"expected unsigned-integer or float RGB, got dtype {arr.dtype}")
