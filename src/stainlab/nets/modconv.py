"""StyleGAN2's modulated convolution with weight demodulation, conditioned on a style vector.

Karras et al., "Analyzing and improving the image quality of StyleGAN", CVPR 2020, Sec. 2.2, Eq. 1-3:
the weights are scaled per input channel by a style ``s`` (an affine map of the conditioning vector),
then each output channel's weights are divided by their norm, so the output keeps unit variance
without normalising the activations. Paper 002 (DeReStainer, Sec. 2.2) writes it with the predicted
HER2 level ``S`` and a ``+1`` on the style:

    ModConv(x, S) = Conv(x, W (S + 1) / sqrt(sum (W (S + 1))^2 + eps)) + b

the sum running over the input channels and the kernel taps of one output channel, for each sample.
One grouped convolution runs the whole batch with its per-sample weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEMODULATION_EPS = 1e-8  # StyleGAN2, Eq. 3


class ModConv2d(nn.Module):
    """Modulated + demodulated ``kernel x kernel`` convolution, stride 1, reflect padding, optional bias.

    ``style_dim`` is the length of the conditioning vector (the HER2-level prediction, 4 values); an
    affine layer maps it to one style per input channel.
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, kernel: int = 3,
                 bias: bool = True, eps: float = DEMODULATION_EPS) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel, self.eps = in_channels, out_channels, kernel, eps
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel).normal_(0.0, 0.02))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.affine = nn.Linear(style_dim, in_channels)
        nn.init.zeros_(self.affine.bias)

    def modulated_weight(self, condition: torch.Tensor) -> torch.Tensor:
        """The per-sample demodulated weights ``(N, out, in, k, k)`` for conditions ``(N, style_dim)``."""
        scale = self.affine(condition) + 1.0                                  # S + 1, per input channel
        weight = self.weight.unsqueeze(0) * scale[:, None, :, None, None]
        norm = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + self.eps)
        return weight * norm

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        weight = self.modulated_weight(condition).reshape(batch * self.out_channels, channels,
                                                          self.kernel, self.kernel)
        pad = self.kernel // 2
        padded = F.pad(x.reshape(1, batch * channels, height, width), (pad, pad, pad, pad), mode="reflect")
        out = F.conv2d(padded, weight, groups=batch).reshape(batch, self.out_channels, height, width)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, "
                f"style_dim={self.affine.in_features}, bias={self.bias is not None}")
