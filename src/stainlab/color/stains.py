"""Reference stain vectors and stain-matrix helpers.

Stain matrices are ``(n_stains, 3)`` arrays of unit optical-density vectors, one row per stain, so that
``OD = C @ W`` for concentrations ``C`` of shape ``(n_pixels, n_stains)``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Ruifrok & Johnston, "Quantification of histochemical staining by color deconvolution", 2001
# (the values scikit-image uses for rgb2hed / rgb2hdx).
HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])
DAB = np.array([0.27, 0.57, 0.78])

# Macenko et al. 2009 reference H&E target used by the authors' public code and by most peers
# (columns of HERef there); the 99th-percentile concentrations that go with it.
MACENKO_REFERENCE_HE = np.array([[0.5626, 0.7201, 0.4062],
                                 [0.2159, 0.8012, 0.5581]])
MACENKO_REFERENCE_MAX_C = np.array([1.9705, 1.0308])


def normalize_rows(matrix) -> np.ndarray:
    """Scale each row of ``matrix`` to unit Euclidean length (zero rows stay zero)."""
    m = np.asarray(matrix, dtype=np.float64)
    norms = np.sqrt((m * m).sum(axis=-1, keepdims=True))    # np.linalg.norm's arithmetic, without its checks
    return m / np.where(norms > 0, norms, 1.0)


def complete_basis(matrix) -> np.ndarray:
    """Return a 3x3 stain matrix: two stains get a third row orthogonal to both (Ruifrok's residual)."""
    m = normalize_rows(matrix)
    if m.shape[0] == 3:
        return m
    if m.shape[0] != 2:
        raise ValueError(f"a stain matrix has 2 or 3 rows, got {m.shape[0]}")
    third = np.cross(m[0], m[1])
    return np.vstack([m, normalize_rows(third)])


_HE = (HEMATOXYLIN, EOSIN)
HE_UNIT = normalize_rows(np.array(_HE))
"""Haematoxylin and eosin (Ruifrok's) as unit rows: what :func:`order_like` labels against by default."""


def order_like(matrix, reference=_HE) -> np.ndarray:
    """Reorder the rows of a 2-stain matrix so row 0 is nearest ``reference[0]`` (haematoxylin).

    Macenko's angle search yields two unlabeled directions; several libraries labeled them with a
    single-channel rule that fails on some images (HistomicsTK #556, MONAI PR #8551). Here the labeling
    maximises the summed cosine similarity to the reference H and E directions over both assignments.
    """
    ref = HE_UNIT if reference is _HE else normalize_rows(np.asarray(reference))
    return ordered_rows(np.asarray(matrix, dtype=np.float64), ref)


@njit(cache=True, nogil=True)
def ordered_rows(matrix, reference):  # pragma: no cover - compiled
    """:func:`order_like` of two float rows ``(2, 3)`` against two unit reference rows, compiled (for
    Macenko's tile statistics, :mod:`stainlab.transforms.macenko`): the rows scaled to unit length
    (zero rows stay zero), swapped when the other assignment is nearer."""
    m = np.empty((2, 3))
    for r in range(2):
        norm = np.sqrt(matrix[r, 0] ** 2 + matrix[r, 1] ** 2 + matrix[r, 2] ** 2)
        for c in range(3):
            m[r, c] = matrix[r, c] / norm if norm > 0 else matrix[r, c]
    cosines = m @ reference.T                 # [i, j]: row i against reference j
    if cosines[0, 0] + cosines[1, 1] >= cosines[1, 0] + cosines[0, 1]:
        return m
    return m[::-1].copy()


def angle_degrees(u, v) -> float:
    """Angle between two stain vectors in degrees."""
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    lengths = math.sqrt((u @ u) * (v @ v))
    cosine = float(u @ v) / lengths if lengths > 0 else 0.0   # a zero vector is at right angles to all
    return math.degrees(math.acos(min(max(cosine, -1.0), 1.0)))
