"""SimAM, the parameter-free attention of Yang, Zhang, Li & Xie, "SimAM: a simple, parameter-free
attention module for convolutional neural networks", ICML 2021 (Eq. 5 and the closed form of Sec. 3.2).

Each activation ``x`` of a channel with ``M = H W`` positions is weighted by ``sigmoid(1 / e*)`` where
``1 / e* = (x - mu)^2 / (4 (sigma^2 + lambda)) + 1/2``, ``mu`` the channel mean and
``sigma^2 = sum (x - mu)^2 / (M - 1)``: neurons that stand out of their channel get more weight.
Paper 002 (DeReStainer, Sec. 2.2) appends it to every block of the feature fusion module.
"""

from __future__ import annotations

import torch
from torch import nn

SIMAM_LAMBDA = 1e-4  # SimAM paper, Sec. 4 (the coefficient lambda of its energy function)


class SimAM(nn.Module):
    """``x * sigmoid((x - mu)^2 / (4 (var + lambda)) + 0.5)`` per channel of an NCHW tensor; no parameters."""

    def __init__(self, e_lambda: float = SIMAM_LAMBDA) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = x.shape[2] * x.shape[3] - 1
        squared = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2
        variance = squared.sum(dim=(2, 3), keepdim=True) / max(positions, 1)
        inverse_energy = squared / (4 * (variance + self.e_lambda)) + 0.5
        return x * torch.sigmoid(inverse_energy)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
