"""Virtual staining behind the shared face: H&E in, a generated IHC image out (paper 002, DeReStainer).

``stainlab.load("derestainer:RUN/derestainer.safetensors")`` (or ``stainlab normalize -m derestainer
--model PATH``) runs a trained :class:`stainlab.nets.derestainer.DeReStainer` on each image. The network
sees the context of each pixel (its encoder halves the image three times and the HER2-level head pools
the whole input), so large images go through :func:`stainlab.nets.inference.apply_network`'s
feather-blended tiles; the default tile is 1024, the size paper 002 evaluates at (Sec. 3.1), so a BCI
image is translated in one piece. Like every network it takes ``device`` and ``batch_size`` (the
windows of a slide go through it in batches). The pix2pix generator of ``stainlab train pix2pix`` loads as
``"pix2pix:PATH"`` through :class:`~stainlab.transforms.learned.NetworkTransform`.
"""

from __future__ import annotations

import torch
from torch import nn

from stainlab.errors import InputError
from stainlab.nets.derestainer import DeReStainer
from stainlab.nets.files import read_model_info
from stainlab.transforms.learned import NetworkTransform

ARCH = "derestainer"


class _Generate(nn.Module):
    """A DeReStainer as a plain image-to-image network (its :meth:`~DeReStainer.generate` path)."""

    def __init__(self, net: DeReStainer) -> None:
        super().__init__()
        self.net = net

    def forward(self, he: torch.Tensor) -> torch.Tensor:
        return self.net.generate(he)


class DeReStainerTransform(NetworkTransform):
    """A trained DeReStainer (load as "derestainer:PATH"): H&E -> HER2 IHC, in blended tiles."""

    name = "derestainer"

    def __init__(self, model: str, tile: int = 1024, overlap: int = 128, device: str = "cpu",
                 batch_size: int | None = None) -> None:
        arch = read_model_info(model)["arch"]
        if arch != ARCH:
            raise InputError(f"{model} holds a {arch} network, not a DeReStainer (`stainlab train derestainer` "
                             "writes derestainer.safetensors)")
        super().__init__(model, ARCH, tile, overlap, device, batch_size)
        self._net = _Generate(self._net)
