"""Colour maps and per-image statistics on torch batches, for the torch engine
(:mod:`stainlab.transforms.torch_engine`).

Images are float ``(N, 3, M)`` tensors of RGB in [0, 1] (``M = H * W`` pixels per image), on any device,
in any float dtype. The formulas and constants are those of the NumPy modules, imported from them:

- optical density against a light ``L`` (0-255 units, per channel; white by default)
  ``OD = -ln((255 x + 1) / (L + 1))`` floored at 0 and its inverse ``x = ((L + 1) exp(-OD) - 1) / 255``
  clipped to [0, 1] (:mod:`stainlab.color.od`, Beer-Lambert);
- each image's light, the colour of its glass (:func:`estimate_light`, the rule and constants of
  :mod:`stainlab.color.light`);
- sRGB <-> CIELAB (:mod:`stainlab.color.lab`, IEC 61966-2-1 and CIE 1976, D65), with the same clamps;
- the tissue mask, OD above ``beta`` in any channel (:mod:`stainlab.color.tissue`);
- weighted mean and standard deviation over a mask, and masked percentiles with the linear
  interpolation of ``np.percentile`` over each image's own masked pixels (:mod:`stainlab.color.stats`).

Everything is differentiable but the light, a statistic taken without gradient. Each piecewise map
evaluates both branches (``torch.where``), so the branch that is not taken gets its argument clamped into
its own domain: a power or cube root never sees the values where its derivative is infinite, and no NaN
leaks into a gradient through the unused side.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from stainlab.color.lab import _DELTA, _KAPPA, _RGB_TO_XYZ, _WHITE, _XYZ_TO_RGB
from stainlab.color.light import (MAX_GLASS_MAD, MIN_GLASS_BRIGHTNESS, MIN_GLASS_FRACTION, MIN_SHARPNESS,
                                  PEAK_HALF_WIDTH, SAMPLE)
from stainlab.color.od import BACKGROUND
from stainlab.color.tissue import TISSUE_BETA

_SRGB_JOINT = 0.04045        # IEC 61966-2-1: the linear segment of the transfer curve ends here
_LINEAR_JOINT = 0.0031308    # ... and here on the linear-light side
_TINY_VARIANCE = 1e-30       # keeps sqrt's derivative finite on a flat channel (then refused anyway)
_LEVELS = 256


def channel_matrix(values: torch.Tensor, matrix) -> torch.Tensor:
    """``values @ matrix`` per pixel: ``(N, C, M)`` by a ``(C, D)`` or per-image ``(N, C, D)`` matrix."""
    matrix = torch.as_tensor(matrix, dtype=values.dtype, device=values.device)
    if matrix.ndim == 2:
        return torch.einsum("ncm,cd->ndm", values, matrix)
    return torch.einsum("ncm,ncd->ndm", values, matrix)


def _per_channel(light, like: torch.Tensor) -> torch.Tensor:
    """A light, (3,) for every image or (N, 3) one per image (0-255 units; None: white), as ``L + 1``
    broadcasting over ``(N, 3, M)``."""
    if light is None:
        return torch.full((), BACKGROUND + 1.0, dtype=like.dtype, device=like.device)
    return torch.as_tensor(light, dtype=like.dtype, device=like.device)[..., None] + 1.0


def rgb_to_od(x: torch.Tensor, light=None, clip: bool = True) -> torch.Tensor:
    """Optical density of RGB in [0, 1] against ``light`` (see :func:`_per_channel`):
    ``-ln((255 x + 1) / (L + 1))``, never negative unless ``clip`` is off (pixels brighter than the glass)."""
    od = -torch.log((x * BACKGROUND + 1.0) / _per_channel(light, x))
    return torch.clamp(od, min=0.0) if clip else od


def od_to_rgb(od: torch.Tensor, light=None) -> torch.Tensor:
    """RGB in [0, 1] of optical densities rendered under ``light`` (see :func:`_per_channel`): zero
    density is the light (the glass), negative densities brighter, up to white."""
    return torch.clamp((_per_channel(light, od) * torch.exp(-od) - 1.0) / BACKGROUND, 0.0, 1.0)


class Lights(NamedTuple):
    """The :class:`~stainlab.color.light.Light` of each image of a batch: ``rgb`` ``(N, 3)`` in [1, 255]
    (0-255 units), whether glass was ``found`` ``(N,)`` and the fraction of each image in the glass peak."""

    rgb: torch.Tensor
    found: torch.Tensor
    glass_fraction: torch.Tensor


def estimate_light(x: torch.Tensor) -> Lights:
    """:func:`stainlab.color.light.estimate_light` of each image of ``(N, 3, M)`` RGB in [0, 1], for the
    whole batch at once on its device, on the image's 8-bit levels ``round(255 x)`` (what the NumPy path
    sees of a float tensor): the same pixels (strided down to about ``SAMPLE``), brightness histogram,
    glass peak, sharpness, fraction and flatness tests (the latter on the per-channel lower median) and
    per-channel mean of the glass, all from per-image histograms (two passes over the pixels, no sort);
    white where an image has no glass.
    It equals the NumPy estimate of those levels exactly.

    The light is a statistic of rounded levels, piecewise constant in ``x``: it carries no gradient,
    which is its derivative wherever no value sits on a rounding boundary."""
    if x.shape[-1] > SAMPLE:
        x = x[..., ::-(-x.shape[-1] // SAMPLE)]
    m = x.shape[-1]
    levels = torch.round(x.detach() * BACKGROUND).clamp(0, BACKGROUND).to(torch.int32)     # (N, 3, M)
    brightness = (levels.sum(dim=1, dtype=torch.int32) + 1) // 3   # rint of a third of a whole sum, no tie
    counts = _histograms(brightness[:, None])[:, 0]                                       # (N, 256)
    below_level = torch.nn.functional.pad(counts.cumsum(dim=1), (1, 0))  # [:, k]: pixels under level k

    def pixels_in(start, stop):  # pixels at levels start..stop-1, the range cut to the scale
        return (below_level.gather(1, stop.clamp(0, _LEVELS)[:, None])
                - below_level.gather(1, start.clamp(0, _LEVELS)[:, None])).squeeze(1)

    peak = MIN_GLASS_BRIGHTNESS + counts[:, MIN_GLASS_BRIGHTNESS:].argmax(dim=1)
    low, high = peak - PEAK_HALF_WIDTH, peak + PEAK_HALF_WIDTH
    width = 2 * PEAK_HALF_WIDTH + 1
    inside = pixels_in(low, high + 1)
    below, above = pixels_in(low - width, low), pixels_in(high + 1, high + 1 + width)
    # A peak at the top of the scale has no upper shoulder (glass clipped to white): only the lower counts.
    shoulder = torch.where(high + width <= BACKGROUND, torch.maximum(below, above), below)
    fraction = inside.to(x.dtype) / m
    near = (brightness >= low[:, None]) & (brightness <= high[:, None])
    glass = _histograms(levels, near)                                                      # (N, 3, 256)
    rank = (inside + 1) // 2 - 1                                # the lower median's, ceil(n / 2) - 1
    median = _order_statistic(glass, rank)
    spread = _order_statistic(_distance_counts(glass, median), rank)
    found = ((fraction >= MIN_GLASS_FRACTION) & (inside >= MIN_SHARPNESS * shoulder)
             & (spread <= MAX_GLASS_MAD).all(dim=1))
    mean = (glass * torch.arange(_LEVELS, device=x.device)).sum(dim=-1).to(x.dtype) / inside.clamp(min=1)[:, None]
    rgb = torch.where(found[:, None], mean.clamp(1.0, BACKGROUND), BACKGROUND)
    return Lights(rgb, found, fraction)


def _histograms(levels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Counts ``(N, C, 256)`` of the levels ``(N, C, M)`` (0-255) of the pixels where ``mask`` ``(N, M)``
    is true (all without one), one ``bincount`` for the batch: each image and channel offset to its own
    256 bins, the pixels outside the mask sent to one more bin, dropped."""
    n, c, _ = levels.shape
    bins = n * c * _LEVELS
    index = levels + torch.arange(0, bins, _LEVELS, dtype=levels.dtype, device=levels.device).view(n, c, 1)
    if mask is not None:
        index = torch.where(mask[:, None], index, bins)
    return torch.bincount(index.reshape(-1), minlength=bins + 1)[:bins].view(n, c, _LEVELS)


def _order_statistic(counts: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """The level ``(N, C)`` of 0-based ``rank`` ``(N,)`` in each histogram ``(N, C, 256)``: the first
    level whose cumulative count exceeds it (``light._weighted_median`` with unit weights, for the lower
    median's rank); 0 where the histogram is empty."""
    target = rank.view(-1, 1, 1).expand(-1, counts.shape[1], 1).contiguous()
    return torch.searchsorted(counts.cumsum(dim=-1), target, right=True).squeeze(-1).clamp(max=_LEVELS - 1)


def _distance_counts(counts: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """From histograms ``(N, C, 256)``, the histograms of the distances ``|level - center|`` (0-255) of
    the same pixels to ``center`` ``(N, C)``: the median absolute deviation without another pass."""
    distance = torch.arange(_LEVELS, device=counts.device)
    up, down = center[..., None] + distance, center[..., None] - distance
    above = torch.where(up < _LEVELS, counts.gather(-1, up.clamp(max=_LEVELS - 1)), 0)
    below = torch.where((down >= 0) & (distance > 0), counts.gather(-1, down.clamp(min=0)), 0)
    return above + below


def tissue_mask(od: torch.Tensor, beta: float = TISSUE_BETA) -> torch.Tensor:
    """Bool ``(N, M)``: pixels whose optical density ``(N, 3, M)`` exceeds ``beta`` in any channel."""
    return (od > beta).any(dim=1)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """CIELAB ``(N, 3, M)`` (L in [0, 100]) of RGB in [0, 1]."""
    high = ((x.clamp(min=_SRGB_JOINT) + 0.055) / 1.055) ** 2.4
    linear = torch.where(x > _SRGB_JOINT, high, x / 12.92)
    t = channel_matrix(linear, (_RGB_TO_XYZ / _WHITE[:, None]).T)
    f = torch.where(t > _DELTA ** 3, t.clamp(min=_DELTA ** 3) ** (1.0 / 3.0), _KAPPA * t + 4.0 / 29.0)
    fx, fy, fz = f.unbind(dim=1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] of CIELAB ``(N, 3, M)``; out-of-gamut colours are clipped to the RGB cube."""
    big_l, a, b = lab.unbind(dim=1)
    fy = (big_l + 16.0) / 116.0
    f = torch.stack([fy + a / 500.0, fy, fy - b / 200.0], dim=1)
    xyz = torch.where(f > _DELTA, f ** 3, (f - 4.0 / 29.0) / _KAPPA)
    linear = torch.clamp(channel_matrix(xyz, (_XYZ_TO_RGB * _WHITE).T), 0.0, 1.0)
    high = 1.055 * linear.clamp(min=_LINEAR_JOINT) ** (1.0 / 2.4) - 0.055
    return torch.clamp(torch.where(linear > _LINEAR_JOINT, high, 12.92 * linear), 0.0, 1.0)


def masked_mean_std(values: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel, mean and population standard deviation of ``(N, C, M)`` over the pixels
    where ``mask`` ``(N, M)`` is true (all pixels without one): ``(N, C)`` each. An image with an empty
    mask gets 0 and 0."""
    if mask is None:
        mean = values.mean(dim=-1)
        var = ((values - mean[..., None]) ** 2).mean(dim=-1)
    else:
        w = mask.to(values.dtype)[:, None, :]
        total = w.sum(dim=-1).clamp(min=1.0)
        mean = (values * w).sum(dim=-1) / total
        var = (((values - mean[..., None]) ** 2) * w).sum(dim=-1) / total
    return mean, var.clamp(min=_TINY_VARIANCE).sqrt()


def masked_percentile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile (0-100) of ``values`` ``(N, ..., M)`` over each image's masked pixels
    (``mask`` ``(N, M)``): ``(N, ...)``, the linear interpolation of ``np.percentile``.

    With ``n`` masked pixels sorted ascending as ``s``, ``pos = q / 100 (n - 1)`` and the result is
    ``s[floor(pos)] + frac(pos) (s[floor(pos) + 1] - s[floor(pos)])``. Only the tail that holds those two
    neighbours is sorted: the smallest ``q / 100 (M - 1) + 2`` values (masked-out entries pushed to
    +inf) for ``q < 50``, else the largest (masked-out entries at -inf) counted from the top, so images
    with different counts share one ``topk`` call. An image with an empty mask gets 0.
    """
    m = values.shape[-1]
    n = mask.sum(dim=-1)                                     # (N,) per-image counts
    pos = (q / 100.0) * (n - 1).clamp(min=0).to(values.dtype)
    lo = pos.floor()
    frac = pos - lo
    lo = lo.long()
    hi = torch.minimum(lo + 1, (n - 1).clamp(min=0))
    from_top = q >= 50.0
    tail = min(m, math.floor((1.0 - q / 100.0 if from_top else q / 100.0) * (m - 1)) + 2)
    lead = (1,) * (values.ndim - 2)
    fill = -math.inf if from_top else math.inf
    keyed = torch.where(mask.view(mask.shape[0], *lead, m), values, torch.full((), fill, dtype=values.dtype,
                                                                                 device=values.device))
    part = torch.topk(keyed, tail, dim=-1, largest=from_top, sorted=True).values
    if from_top:                                             # descending: s[i] is part[n - 1 - i]
        lo, hi = n - 1 - lo, n - 1 - hi
    shape = (len(n), *lead, 1)
    expand = (*values.shape[:-1], 1)

    def pick(index):
        index = index.clamp(0, tail - 1).view(shape).expand(expand)
        return torch.gather(part, -1, index).squeeze(-1)

    low, high = pick(lo), pick(hi)
    result = low + frac.view(shape[:-1]) * (high - low)
    return torch.where((n > 0).view(shape[:-1]), result, torch.zeros((), dtype=values.dtype, device=values.device))
