"""Differentiable torch twins of Ruifrok colour deconvolution and single-stain projection.

The same maps as :mod:`stainlab.color.deconvolution` (Ruifrok & Johnston, "Quantification of
histochemical staining by color deconvolution", 2001), on float ``(N, 3, H, W)`` tensors so that a
network's loss can look through them: paper 002 (DeReStainer, Sec. 2.1 "Staining Separation") takes
the haematoxylin of an image back to RGB as ``I^H = T^-1([v_H, 0, 0])`` (and the DAB channel alike,
Sec. 2.3, ``L_DAB``), with ``T`` the logarithm followed by the inverse stain matrix.

Images here are RGB **in [0, 1]** (``(x + 1) / 2`` of a network's [-1, 1] output); concentrations are
``(N, 3, H, W)`` with one channel per row of the stain set (``H, E, DAB`` for ``"hed"``). Both
conventions of :mod:`stainlab.color.deconvolution` are available, with the same numbers:

- ``"skimage"`` (default): exactly scikit-image's ``rgb2hed`` / ``hed2rgb`` (intensities floored at
  1e-6, densities divided by ``-ln(1e-6)``, negative concentrations clipped to 0, RGB clipped to [0, 1]).
- ``"stainlab"``: ``OD = -ln((255 I + 1) / 256)`` floored at 0, unit stain rows, RGB back in [0, 1].

Gradients flow everywhere except where a floor or clip is active (pixels darker than 1e-6, negative
concentrations), where the maps are flat. Values outside [0, 1] are not checked (a check would stall
a GPU); they are the caller's to avoid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stainlab.color.deconvolution import _SKIMAGE_FLOOR, stain_basis
from stainlab.precision import full_precision

_LOG_FLOOR = -math.log(_SKIMAGE_FLOOR)   # scikit-image's log_adjust, 13.8155...
_I0 = 255.0                              # stainlab's incident light in 8-bit units


def separate(rgb: torch.Tensor, stains="hed", convention: str = "skimage") -> torch.Tensor:
    """Stain concentrations ``(N, 3, H, W)`` of RGB images ``(N, 3, H, W)`` in [0, 1]; torch twin of
    :func:`stainlab.color.deconvolution.separate` (``"skimage"``: ``skimage.color.rgb2hed`` for ``"hed"``)."""
    return _separate(_check_nchw(rgb, "rgb"), _inverse(stains, convention, rgb), convention)


def combine(conc: torch.Tensor, stains="hed", convention: str = "skimage") -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] of stain concentrations ``(N, 3, H, W)``; the inverse of
    :func:`separate` (``"skimage"``: ``skimage.color.hed2rgb`` for ``"hed"``)."""
    return _combine(_check_nchw(conc, "concentrations"), _matrix(stains, convention, conc), convention)


def project(rgb: torch.Tensor, channel, stains="hed", convention: str = "skimage") -> torch.Tensor:
    """One stain alone back in RGB ``(N, 3, H, W)`` in [0, 1]: paper 002's ``T^-1([v_H, 0, 0])``.

    ``channel`` is a stain name of the set (``"H"``, ``"E"``, ``"DAB"``, case-insensitive) or an index.
    """
    basis = stain_basis(stains, convention)
    keep = basis.index(channel)
    return _project(_check_nchw(rgb, "rgb"), keep, _as_tensor(basis.inverse, rgb),
                    _as_tensor(basis.matrix, rgb), convention)


class StainSeparator(nn.Module):
    """The stain matrices of one stain set as (non-persistent) buffers, so they follow ``.to(device)``.

    Methods take and give RGB in [0, 1] like the functions above; :meth:`project_net` takes and gives
    a network's [-1, 1] images. No parameters, nothing in the state dict.
    """

    def __init__(self, stains="hed", convention: str = "skimage") -> None:
        super().__init__()
        basis = stain_basis(stains, convention)
        self.convention = convention
        self.register_buffer("matrix", torch.as_tensor(basis.matrix, dtype=torch.float32), persistent=False)
        self.register_buffer("inverse", torch.as_tensor(basis.inverse, dtype=torch.float32), persistent=False)
        self._basis = basis

    @full_precision
    def separate(self, rgb: torch.Tensor) -> torch.Tensor:
        """Concentrations of RGB in [0, 1]."""
        return _separate(_check_nchw(rgb, "rgb"), self.inverse.to(rgb.dtype), self.convention)

    @full_precision
    def combine(self, conc: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] of concentrations."""
        return _combine(_check_nchw(conc, "concentrations"), self.matrix.to(conc.dtype), self.convention)

    @full_precision  # logarithms of light: fp32 under autocast
    def project(self, rgb: torch.Tensor, channel) -> torch.Tensor:
        """One stain alone, RGB in [0, 1] -> RGB in [0, 1]."""
        keep = self._basis.index(channel)
        return _project(_check_nchw(rgb, "rgb"), keep, self.inverse.to(rgb.dtype), self.matrix.to(rgb.dtype),
                        self.convention)

    def project_net(self, images: torch.Tensor, channel) -> torch.Tensor:
        """One stain alone, for network images: [-1, 1] in, [-1, 1] out."""
        return self.project((images + 1) / 2, channel) * 2 - 1


def _separate(rgb: torch.Tensor, inverse: torch.Tensor, convention: str) -> torch.Tensor:
    if convention == "stainlab":
        od = torch.clamp(-torch.log((rgb * _I0 + 1.0) / (_I0 + 1.0)), min=0.0)
        return _apply(od, inverse)
    density = torch.log(torch.clamp(rgb, min=_SKIMAGE_FLOOR)) / -_LOG_FLOOR
    return torch.clamp(_apply(density, inverse), min=0.0)


def _combine(conc: torch.Tensor, matrix: torch.Tensor, convention: str) -> torch.Tensor:
    if convention == "stainlab":
        rgb255 = (_I0 + 1.0) * torch.exp(-_apply(conc, matrix)) - 1.0
        return torch.clamp(rgb255, 0.0, _I0) / _I0
    return torch.clamp(torch.exp(-_apply(conc * _LOG_FLOOR, matrix)), 0.0, 1.0)


def _project(rgb: torch.Tensor, keep: int, inverse: torch.Tensor, matrix: torch.Tensor,
             convention: str) -> torch.Tensor:
    conc = _separate(rgb, inverse, convention)
    mask = torch.zeros(3, dtype=conc.dtype, device=conc.device)
    mask[keep] = 1.0
    return _combine(conc * mask.view(1, 3, 1, 1), matrix, convention)


def _apply(values: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``values @ matrix`` along the channel axis of an NCHW tensor (per pixel row vector times 3x3)."""
    return torch.einsum("nchw,cd->ndhw", values, matrix)


def _as_tensor(array, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(array, dtype=like.dtype, device=like.device)


def _inverse(stains, convention: str, like: torch.Tensor) -> torch.Tensor:
    return _as_tensor(stain_basis(stains, convention).inverse, like)


def _matrix(stains, convention: str, like: torch.Tensor) -> torch.Tensor:
    return _as_tensor(stain_basis(stains, convention).matrix, like)


def _check_nchw(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what}: expected a float tensor of shape (N, 3, H, W), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected a float tensor, got dtype {x.dtype}")
    return x
