"""The 70x70 PatchGAN discriminator (Isola et al., pix2pix, 2017) as paper 004 describes it.

Paper 004 (Sjostrand et al., "Color normalization of blood cell images", Sec. 5.4, Fig. 9): five blocks
of 4x4 convolution + BatchNorm + LeakyReLU, stride 2 in the first three and 1 in the last two, no
BatchNorm in the first and the last block; each output value judges one 70x70 patch of the input. The
paper's widths are in its Fig. 9 only and it quotes "about 11 million parameters"; the defaults here
(``ndf=64``: 64, 128, 256, 512, 1) are pix2pix's and give 2.77 million. The module layout is the public CycleGAN/pix2pix
``NLayerDiscriminator`` with ``n_layers=3`` (keys ``model.0`` ... ``model.11``; convolutions followed by
BatchNorm have no bias), so its ``latest_net_D_A.pth`` files load too.

The network returns the raw score map (logits, ``(N, 1, H/8 - 2, W/8 - 2)``: 30x30 for 256x256). Paper
004's final sigmoid and mean over the map belong to the loss (``BCEWithLogits`` and its mean, or the
least-squares GAN loss of CycleGAN), which is numerically safer than a sigmoid inside the net.
"""

from __future__ import annotations

import torch
from torch import nn

from stainlab.nets.generators import LEAKY_SLOPE, gaussian_init
from stainlab.nets.unet import check_batch

KERNEL = 4


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: 4x4 convs, stride 2 x ``n_layers`` then stride 1 x 2, widths ``ndf * 2**i`` up to 8 ndf.

    ``norm="batch"`` as paper 004 (and pix2pix); ``"instance"`` as the public CycleGAN default. Starts
    from the public implementation's initialisation (:func:`~stainlab.nets.generators.gaussian_init`)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "instance"):
            raise ValueError(f"norm must be 'batch' or 'instance', got {norm!r}")
        biased = norm == "instance"  # a bias right before BatchNorm is cancelled by its mean
        widths = [ndf * min(2 ** i, 8) for i in range(n_layers + 1)]
        strides = [2] * n_layers + [1]
        layers = [nn.Conv2d(in_channels, widths[0], KERNEL, stride=2, padding=1), _leaky()]
        for a, b, stride in zip(widths, widths[1:], strides[1:]):
            layers += [nn.Conv2d(a, b, KERNEL, stride=stride, padding=1, bias=biased), _norm(norm, b), _leaky()]
        layers += [nn.Conv2d(widths[-1], 1, KERNEL, stride=1, padding=1)]
        self.in_channels = in_channels
        self.model = nn.Sequential(*layers)
        self.apply(gaussian_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` in [-1, 1] -> patch logits ``(N, 1, H', W')``."""
        check_batch(x, self.in_channels, "PatchDiscriminator")
        return self.model(x)


def _leaky() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


def receptive_field(module: nn.Module) -> int:
    """Side in pixels of the input region one output value sees, from the chain of convolutions in
    ``module`` (in registration order): ``r <- (r - 1) * stride + kernel``, from the output back."""
    field = 1
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    for conv in reversed(convs):
        field = (field - 1) * conv.stride[0] + conv.kernel_size[0]
    return field
