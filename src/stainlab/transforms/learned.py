"""Trained networks behind the shared face.

StainNet (Kang et al., Frontiers in Medicine 2021; the 1x1-convolution student of paper 000) maps each
pixel's colour on its own (see :mod:`stainlab.nets.stainnet`), so it is a :class:`PixelTransform`: the
lookup-table engine runs the network once per occupied colour cell and gathers the result, instead of
running it on every pixel. It learned its target during training, so ``fit`` has nothing to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stainlab.nets.stainnet import stainnet
from stainlab.transforms.base import PixelTransform
from stainlab.transforms.lut import DEFAULT_BITS


def _stored_path(model) -> str:
    """The path saved in the JSON: absolute when the file is here, so the JSON loads from any
    directory; as given otherwise (a bare name is also looked up in the torch cache)."""
    given = Path(model).expanduser()
    return str(given.resolve()) if given.is_file() else str(model)


class StainNetTransform(PixelTransform):
    """StainNet 2021: a trained 1x1-convolution network maps each colour (load as "stainnet:PATH")."""

    name = "stainnet"
    requires_fit = False

    def __init__(self, model: str, lut_bits: int = DEFAULT_BITS) -> None:
        super().__init__(lut_bits)
        self.model = _stored_path(model)
        # float64 copy: per-colour outputs do not depend on how colours are batched (LUT or exact path)
        self._net = stainnet(model).to(torch.float64)

    def _map(self, colors: np.ndarray, source) -> np.ndarray:
        return self._net.map_colors(colors)
