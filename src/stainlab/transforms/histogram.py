"""Per-channel histogram matching (histogram specification; Gonzalez & Woods, *Digital Image
Processing*, 3rd ed., Sec. 3.3.2).

Each RGB channel of the source is sent through ``out = G^-1(F(x))``: ``F`` is the source channel's
cumulative distribution (the fraction of pixels at or below ``x``) and ``G^-1`` the reference's
quantile function, interpolated linearly between the reference's occupied levels (the discrete
specification procedure there, with interpolation in place of the nearest-level search). This is
what scikit-image's ``exposure.match_histograms`` computes, so on uint8 images the two agree to
rounding. All statistics are weighted by colour-histogram counts, so they equal the
statistics of the pixels themselves.

``mask=True`` matches tissue pixels only: both distributions are taken over tissue pixels (the
package's tissue rule, :mod:`stainlab.color.tissue`) and background pixels are left as they are, so
empty glass neither dilutes the statistics nor changes colour.

The lookup table is exact (``lut_bits = 8``) by default: a coarser lattice evaluates each cell at its
pixels' mean colour, which can break the per-channel monotonicity that defines histogram matching.

A flat channel (a single level, or nearly) has no distribution: a reference with one would give every
output the same value in that channel, a source would be sent to the reference's brightest level. The
reference is refused and the source passed through with a warning (issue 12), as is a stored histogram
with a flat channel.
"""

from __future__ import annotations

import numpy as np

from stainlab.color.stats import weighted_mean_std
from stainlab.errors import InputError
from stainlab.transforms.base import MaskedGlass, PixelTransform, check_tissue_amount
from stainlab.transforms.channels import merged, spread, split_colors, total
from stainlab.transforms.checks import check_bool, check_fields, require_spread, stored_array

LEVELS = 256
MAX_COUNT = 2.0 ** 53  # pixels a channel's histogram may hold: counts stay exact in float64


def weighted_cdf(values, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a 1-D array (ascending) and the cumulative weight at or below each."""
    levels, inverse = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True)
    counts = np.bincount(inverse, weights=weights, minlength=len(levels))
    return levels, np.cumsum(counts)


def match_channel(values, source_cdf, target_counts) -> np.ndarray:
    """``G^-1(F(values))`` for one channel: ``source_cdf`` = (levels, cumulative weights) of the
    source, ``target_counts`` = the reference's 256-level histogram."""
    levels, cumulative = source_cdf
    quantile = np.interp(values, levels, cumulative / cumulative[-1])
    occupied = np.flatnonzero(target_counts)
    target_cdf = np.cumsum(target_counts[occupied]) / target_counts.sum()
    return np.interp(quantile, target_cdf, occupied.astype(np.float64))


class HistogramMatching(MaskedGlass, PixelTransform):
    """Histogram matching: give each RGB channel the reference's distribution (histogram specification)."""

    name = "histogram"
    stats_bits = 8  # per-channel statistics stay exact
    separable = True

    def __init__(self, mask: bool = False, lut_bits: int = 8) -> None:
        super().__init__(lut_bits)
        self.mask = check_bool("histogram: mask", mask)
        self.target_counts: np.ndarray | None = None

    def _matched(self, tissue, glass, what):
        """The per-channel distributions matched (:mod:`stainlab.transforms.channels`): the tissue's when
        masked, else all pixels'; no channel may be flat."""
        if self.mask:
            check_tissue_amount(total(tissue), total(tissue) + total(glass), what)
        channels = tissue if self.mask else merged(tissue, glass)
        require_spread(spread(channels), what)
        return channels

    def _fit_colors(self, colors, weights):
        channels = self._matched(*split_colors(colors, weights), "histogram reference")
        self.target_counts = np.stack([np.bincount(np.clip(np.rint(v), 0, LEVELS - 1).astype(np.intp), weights=w,
                                                   minlength=LEVELS) for v, w in channels])

    def _source(self, colors, weights):
        return self._channel_source(*split_colors(colors, weights))

    def _channel_source(self, tissue, glass):
        return [weighted_cdf(v, w) for v, w in self._matched(tissue, glass, "histogram source")]

    def _map(self, colors, source):
        return np.stack([match_channel(colors[:, c], source[c], self.target_counts[c]) for c in range(3)],
                        axis=1)

    def _get_state(self):
        return {"target_counts": self.target_counts}

    def _set_state(self, state):
        what = "histogram fitted state"
        check_fields(state, ("target_counts",), what)
        counts = stored_array(state, "target_counts", (3, LEVELS), what, 0.0, MAX_COUNT)
        if not (counts.sum(axis=1) > 0).all():
            raise InputError(f"{what}: target_counts has an empty channel")
        levels = np.arange(LEVELS, dtype=np.float64)
        require_spread([weighted_mean_std(levels, counts[c])[1] for c in range(3)], what)
        self.target_counts = counts
