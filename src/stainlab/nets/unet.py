"""The small U-Net student of paper 000 (Lee, Kuo & Peng, "H&E Stain Normalization using U-Net", Sec. III-C, Fig. 2).

Paper 000's text: two contraction blocks, each two 3x3 convolutions followed by a 2x2 max-pool, the
number of channels doubling (64 -> 128) while the maps halve; two expansion blocks joined to the
contraction blocks by 2x2 up-convolutions (halving the channels) and concatenations with the
high-resolution features of the matching contraction block; a final 1x1 convolution mapping each
64-component feature vector to 3 channels. Read in Ronneberger's order this is::

    in -> [conv3 conv3](64) -> pool -> [conv3 conv3](128) -> pool -> [conv3 conv3](256)   (bottleneck)
       -> upconv2(128) ++ skip(128) -> [conv3 conv3](128) -> upconv2(64) ++ skip(64) -> [conv3 conv3](64)
       -> conv1x1(3)

Choices where the paper is silent: every 3x3 convolution is followed by ReLU (as in U-Net) and pads by
one pixel with *reflection* (so the output has the input's size and borders show no zero-padding
seams when a slide is cut into tiles); the 1x1 head is linear (the paper ends on it: no tanh), its
output lives in the [-1, 1] range of the training targets. Inputs whose sides are not multiples of 4
(and above 4) are reflect-padded up to one inside :func:`run_padded` and the output is cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stainlab.errors import InputError


def check_batch(x: torch.Tensor, channels: int, what: str) -> None:
    """Raise :class:`InputError` unless ``x`` is a float ``(N, channels, H, W)`` tensor."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{what} expects a float tensor of shape (N, {channels}, H, W), got {shape}")
    if not x.is_floating_point():
        raise InputError(f"{what} expects a float tensor in [-1, 1], got dtype {x.dtype}")


def run_padded(body, x: torch.Tensor, multiple: int, what: str) -> torch.Tensor:
    """``body(x)`` for any side longer than ``multiple``: reflect-pad bottom/right up to a multiple of
    ``multiple`` (what ``body``'s down- and up-sampling needs to return the input size), then crop back.
    Sides of at least ``2 * multiple`` leave the deepest maps 2 pixels wide, enough for their
    reflection padding."""
    height, width = x.shape[-2:]
    if min(height, width) <= multiple:
        raise InputError(f"{what}: a {height}x{width} input is too small; each side must be more than "
                         f"{multiple} pixels")
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return body(x)
    out = body(F.pad(x, (0, pad_w, 0, pad_h), mode="reflect"))
    return out[..., :height, :width]


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU, reflect-padded to keep the size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect"), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, padding_mode="reflect"), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """U-Net of paper 000: 2 contraction + 2 expansion blocks, ``base_channels`` (64) doubling, 1x1 head."""

    DEPTH = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_channels: int = 64) -> None:
        super().__init__()
        c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
        self.in_channels = in_channels
        self.down1 = _double_conv(in_channels, c1)
        self.down2 = _double_conv(c1, c2)
        self.bottleneck = _double_conv(c2, c3)
        self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.expand2 = _double_conv(2 * c2, c2)
        self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.expand1 = _double_conv(2 * c1, c1)
        self.head = nn.Conv2d(c1, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [-1, 1] -> ``(N, 3, H, W)``; any ``H, W`` above 4."""
        check_batch(x, self.in_channels, "UNet")
        return run_padded(self._forward_even, x, 2 ** self.DEPTH, "UNet")

    def _forward_even(self, x: torch.Tensor) -> torch.Tensor:
        skip1 = self.down1(x)
        skip2 = self.down2(F.max_pool2d(skip1, 2))
        deep = self.bottleneck(F.max_pool2d(skip2, 2))
        up2 = self.expand2(torch.cat([self.up2(deep), skip2], dim=1))
        up1 = self.expand1(torch.cat([self.up1(up2), skip1], dim=1))
        return self.head(up1)
