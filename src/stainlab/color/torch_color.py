"""Colour maps and per-image statistics on torch batches, for the torch engine
(:mod:`stainlab.transforms.torch_engine`).

Images are float ``(N, 3, M)`` tensors of RGB in [0, 1] (``M = H * W`` pixels per image), on any device,
in any float dtype. The formulas and constants are those of the NumPy modules, imported from them:

- optical density ``OD = -ln((255 x + 1) / 256)`` floored at 0 and its inverse
  ``x = (256 exp(-OD) - 1) / 255`` clipped to [0, 1] (:mod:`stainlab.color.od`, Beer-Lambert);
- sRGB <-> CIELAB (:mod:`stainlab.color.lab`, IEC 61966-2-1 and CIE 1976, D65), with the same clamps;
- the tissue mask, OD above ``beta`` in any channel (:mod:`stainlab.color.tissue`);
- weighted mean and standard deviation over a mask, and masked percentiles with the linear
  interpolation of ``np.percentile`` over each image's own masked pixels (:mod:`stainlab.color.stats`).

Everything is differentiable. Each piecewise map evaluates both branches (``torch.where``), so the
branch that is not taken gets its argument clamped into its own domain: a power or cube root never sees
the values where its derivative is infinite, and no NaN leaks into a gradient through the unused side.
"""

from __future__ import annotations

import math

import torch

from stainlab.color.lab import _DELTA, _KAPPA, _RGB_TO_XYZ, _WHITE, _XYZ_TO_RGB
from stainlab.color.od import BACKGROUND
from stainlab.color.tissue import TISSUE_BETA

_SRGB_JOINT = 0.04045        # IEC 61966-2-1: the linear segment of the transfer curve ends here
_LINEAR_JOINT = 0.0031308    # ... and here on the linear-light side
_TINY_VARIANCE = 1e-30       # keeps sqrt's derivative finite on a flat channel (then refused anyway)


def channel_matrix(values: torch.Tensor, matrix) -> torch.Tensor:
    """``values @ matrix`` per pixel: ``(N, C, M)`` by a ``(C, D)`` or per-image ``(N, C, D)`` matrix."""
    matrix = torch.as_tensor(matrix, dtype=values.dtype, device=values.device)
    if matrix.ndim == 2:
        return torch.einsum("ncm,cd->ndm", values, matrix)
    return torch.einsum("ncm,ncd->ndm", values, matrix)


def rgb_to_od(x: torch.Tensor) -> torch.Tensor:
    """Optical density of RGB in [0, 1]: ``-ln((255 x + 1) / 256)``, never negative."""
    return torch.clamp(-torch.log((x * BACKGROUND + 1.0) / (BACKGROUND + 1.0)), min=0.0)


def od_to_rgb(od: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] of optical densities; negative densities render as background (white)."""
    return torch.clamp(((BACKGROUND + 1.0) * torch.exp(-od) - 1.0) / BACKGROUND, 0.0, 1.0)


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
