"""Per-channel statistics of the separable methods (histogram matching, colour balance, the background
method): each needs, per RGB channel, the distribution of the tissue pixels, of the glass pixels, or of
all of them, and nothing of how the channels go together.

A distribution is a list of three ``(values, weights)`` pairs, one per channel. From a weighted colour set
(:func:`split_colors`) the values are the colours' own; from a small image they are the 256 levels with
the pixel counts of a compiled pass (:func:`split_pixels`), which is the same distribution exactly and
far cheaper than the image's 8-bit colour histogram.
"""

from __future__ import annotations

import numpy as np

from stainlab.color.pixels import channel_counts, tissue_limit
from stainlab.color.stats import weighted_mean_std
from stainlab.color.tissue import TISSUE_BETA, tissue_mask

Channels = list  # three (values, weights) pairs of 1-D float arrays
_LEVELS = np.arange(256.0)


def split_colors(colors: np.ndarray, weights: np.ndarray | None) -> tuple[Channels, Channels]:
    """The per-channel distributions of the tissue colours and of the glass colours (the rule of
    :mod:`stainlab.color.tissue`) of float colours ``(M, 3)`` with optional weights."""
    w = np.ones(len(colors)) if weights is None else np.asarray(weights, dtype=np.float64)
    tissue = tissue_mask(colors)
    return ([(colors[tissue, c], w[tissue]) for c in range(3)],
            [(colors[~tissue, c], w[~tissue]) for c in range(3)])


def split_pixels(pixels: np.ndarray) -> tuple[Channels, Channels]:
    """:func:`split_colors` of uint8 pixels ``(M, 3)``, from per-level counts."""
    counts = channel_counts(pixels, tissue_limit(TISSUE_BETA))
    return tuple([(_LEVELS[row > 0], row[row > 0]) for row in part] for part in counts)


def merged(a: Channels, b: Channels) -> Channels:
    """The distribution of both sets of pixels."""
    return [(np.concatenate([va, vb]), np.concatenate([wa, wb])) for (va, wa), (vb, wb) in zip(a, b)]


def total(channels: Channels) -> float:
    """How many pixels (the weight) a distribution holds."""
    return float(channels[0][1].sum())


def spread(channels: Channels) -> np.ndarray:
    """The standard deviation of each channel."""
    return np.array([weighted_mean_std(v, w)[1] if len(v) else 0.0 for v, w in channels])
