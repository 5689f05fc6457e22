"""StainNet: stain normalization by a stack of 1x1 convolutions (Kang, Luo, Feng, Zeng, Quan, Hu & Liu,
"StainNet: a fast and robust stain normalization network", Frontiers in Medicine 2021; the student
network compared in paper 000, Lee, Kuo & Peng, Sec. II and Table I).

Every layer is a 1x1 convolution, so the network is a function of one pixel's colour alone:
``h_1 = relu(W_1 x + b_1)``, ..., ``y = W_L h_{L-1} + b_L`` with ``x`` the RGB value scaled to [-1, 1]
(``x = (I / 255 - 0.5) / 0.5``) and the output mapped back by ``y * 0.5 + 0.5`` to [0, 1]. The default
is the authors' published size, 3 layers of 32 channels; the module keeps their state-dict keys
(``rgb_trans.0/2/4.weight/bias``, ReLUs at the odd indices), so their checkpoints
(``camelyon16_centerUni_layer3_ch32.pth``, ``aligned_histopathology_layer3_ch32.pth``) load unchanged.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stainlab.errors import InputError
from stainlab.nets.weights import build, load_into, load_weights

ORIGIN = "https://github.com/khtao/StainNet (checkpoints/)"
PREFIX = "rgb_trans."


class StainNet(nn.Module):
    """``layers`` 1x1 convolutions of ``channels`` channels with ReLU between: float NCHW in [-1, 1]
    in, float NCHW out in the same scale (not clipped)."""

    def __init__(self, layers: int = 3, channels: int = 32) -> None:
        super().__init__()
        if layers < 2 or channels < 1:
            raise InputError(f"StainNet needs at least 2 layers and 1 channel, got {layers} x {channels}")
        widths = [3] + [channels] * (layers - 1) + [3]
        stack = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            if index:
                stack.append(nn.ReLU())
            stack.append(nn.Conv2d(width_in, width_out, kernel_size=1))
        self.rgb_trans = nn.Sequential(*stack)

    def forward(self, x):
        return self.rgb_trans(x)

    def map_colors(self, colors: np.ndarray) -> np.ndarray:
        """The network on RGB colours: float (M, 3) in [0, 255] -> float (M, 3) in [0, 255] (unclipped),
        evaluated in the network's dtype with the authors' scaling in and out."""
        parameter = next(self.parameters())
        x = torch.as_tensor(np.asarray(colors), dtype=parameter.dtype, device=parameter.device)
        with torch.no_grad():
            scaled = (x / 255.0 - 0.5) / 0.5
            y = self(scaled.T.reshape(1, 3, -1, 1)).reshape(3, -1).T
        return ((y * 0.5 + 0.5) * 255.0).cpu().double().numpy()


def architecture_of(state: dict) -> dict:
    """``layers`` and ``channels`` of the StainNet whose state dict is ``state`` (read from its keys)."""
    weights = sorted((int(key[len(PREFIX):].split(".")[0]), value) for key, value in state.items()
                     if key.startswith(PREFIX) and key.endswith(".weight"))
    if len(weights) < 2:
        raise InputError(f"not a StainNet state dict (expected keys {PREFIX}N.weight, got "
                         f"{', '.join(list(state)[:5]) or 'none'})")
    return {"layers": len(weights), "channels": int(weights[0][1].shape[0])}


def stainnet(weights, layers: int = 3, channels: int = 32, seed: int = 0) -> StainNet:
    """A StainNet in eval mode: ``weights`` a checkpoint path (.pth as the authors publish it, or
    .safetensors), whose size is read from its keys; or ``"random"`` for a ``layers`` x ``channels``
    network initialised with seed ``seed``."""
    if isinstance(weights, str) and weights == "random":
        return build(lambda: StainNet(layers, channels), "random", "", ORIGIN, seed)
    if weights is None:
        raise InputError("StainNet has no standard weight file: pass a checkpoint path or 'random'")
    expected = Path(weights).name
    state = load_weights(weights, expected, ORIGIN)
    net = StainNet(**architecture_of(state))
    load_into(net, state, expected)
    return net.eval()
