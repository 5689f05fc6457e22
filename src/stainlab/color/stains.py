"""Reference stain vectors and stain-matrix helpers.

Stain matrices are ``(n_stains, 3)`` arrays of unit optical-density vectors, one row per stain, so that
``OD = C @ W`` for concentrations ``C`` of shape ``(n_pixels, n_stains)``.
"""

from __future__ import annotations

import math

import numpy as np

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
_HE_UNIT = normalize_rows(np.array(_HE))


def order_like(matrix, reference=_HE) -> np.ndarray:
    """Reorder the rows of a 2-stain matrix so row 0 is nearest ``reference[0]`` (haematoxylin).

    Macenko's angle search yields two unlabeled directions; several libraries labeled them with a
    single-channel rule that fails on some images (HistomicsTK #556, MONAI PR #8551). Here the labeling
    maximises the summed cosine similarity to the reference H and E directions over both assignments.
    """
    m = normalize_rows(matrix)
    ref = _HE_UNIT if reference is _HE else normalize_rows(np.asarray(reference))
    cosines = m @ ref.T                       # [i, j]: row i against reference j
    keep, swap = cosines[0, 0] + cosines[1, 1], cosines[1, 0] + cosines[0, 1]
    return m if keep >= swap else m[::-1].copy()


def angle_degrees(u, v) -> float:
    """Angle between two stain vectors in degrees."""
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    lengths = math.sqrt((u @ u) * (v @ v))
    cosine = float(u @ v) / lengths if lengths > 0 else 0.0   # a zero vector is at right angles to all
    return math.degrees(math.acos(min(max(cosine, -1.0), 1.0)))
