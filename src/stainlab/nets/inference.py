"""Running an image-to-image network on uint8 images: the one conversion between the edge convention
(uint8 HxWx3 RGB) and the nets' (float NCHW in [-1, 1]), and tiled inference with feathered overlap.

Context-aware networks (U-Net, CycleGAN generators) see a neighbourhood of each pixel, so an image cut
into tiles and run tile by tile shows seams at the tile borders (paper 000, Sec. IV-D, Fig. 3; pytorch-
CycleGAN #918). :func:`apply_network` runs images up to ``tile`` pixels a side in one piece and larger
ones as overlapping tiles whose outputs are blended with weights that fall linearly to the tile edge,
so no output pixel comes from a tile edge alone.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def to_net(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` in [-1, 1]."""
    array = np.require(images, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])  # torch cannot borrow read-only memory
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def from_net(batch: torch.Tensor) -> np.ndarray:
    """Float ``(N, 3, H, W)`` in [-1, 1] -> uint8 ``(N, H, W, 3)``, clipped and rounded."""
    values = (batch.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5
    return values.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``[0, length)`` with at least ``overlap`` shared pixels."""
    if length <= tile:
        return [0]
    step = tile - overlap
    count = -(-(length - overlap) // step)
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def feather(tile: int, overlap: int) -> np.ndarray:
    """1-D blending weights of a tile: a linear ramp over ``overlap`` pixels at each end, 1 inside."""
    ramp = np.ones(tile)
    if overlap > 0:
        rise = (np.arange(overlap) + 0.5) / overlap
        ramp[:overlap] = rise
        ramp[tile - overlap:] = rise[::-1]
    return ramp


def apply_network(net: nn.Module, image: np.ndarray, tile: int = 512, overlap: int = 64) -> np.ndarray:
    """``net`` on one uint8 HxWx3 image -> uint8 HxWx3, in feather-blended tiles when a side exceeds ``tile``."""
    parameter = next(net.parameters())
    height, width = image.shape[:2]

    def run(block: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(to_net(block[None]).to(device=parameter.device, dtype=parameter.dtype))
        return out[0].float().cpu().permute(1, 2, 0).numpy()

    if height <= tile and width <= tile:
        return from_net(torch.from_numpy(run(image)).permute(2, 0, 1)[None])[0]
    total = np.zeros((height, width, 3))
    weight = np.zeros((height, width, 1))
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            block = image[top:top + tile, left:left + tile]
            h, w = block.shape[:2]
            ramp = np.outer(feather(h, overlap if h < height else 0), feather(w, overlap if w < width else 0))
            total[top:top + h, left:left + w] += run(block) * ramp[..., None]
            weight[top:top + h, left:left + w] += ramp[..., None]
    blended = torch.from_numpy(total / weight).permute(2, 0, 1)[None]
    return from_net(blended)[0]
