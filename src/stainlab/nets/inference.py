"""Running an image-to-image network on uint8 images: the one conversion between the edge convention
(uint8 HxWx3 RGB) and the nets' (float NCHW in [-1, 1]), and tiled inference with feathered overlap.

Context-aware networks (U-Net, CycleGAN generators) see a neighbourhood of each pixel, so an image cut
into tiles and run tile by tile shows seams at the tile borders (paper 000, Sec. IV-D, Fig. 3; pytorch-
CycleGAN #918). :func:`apply_network` runs images up to ``tile`` pixels a side in one piece and larger
ones as overlapping tiles whose outputs are blended with weights that fall linearly to the tile edge,
so no output pixel comes from a tile edge alone. :func:`apply_network_stack` does the same for a stack
of equal-shaped images, one batch per tile position, and :func:`batch_size_for` says how many images
of a size fit in one batch on the network's device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from stainlab.nets.devices import free_memory

PROBE = 128          # side of the crop on which a network's memory per pixel is measured
MEMORY_SHARE = 0.5   # of the free device memory a batch may take (the rest: inputs, blending, other work)
MAX_BATCH = 32       # images per call on an accelerator (a guess: no GPU has been lent to measure it)
# On the CPU one 512 px window already keeps the cores busy: batches were no faster than one window at a
# time (benchmarks/results/slide_networks.json), so the CPU gets one unless asked for more.
MAX_CPU_BATCH = 1


def to_net(images, device=None, memory_format=None) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)``, a NumPy array or a torch tensor (as a DataLoader hands batches over, 4x
    smaller than floats) -> float32 ``(N, 3, H, W)`` in [-1, 1], converted on ``device`` (default: where
    the images are) and laid out in ``memory_format`` when one is given."""
    if not isinstance(images, torch.Tensor):  # torch cannot borrow read-only memory
        images = torch.from_numpy(np.require(images, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"]))
    batch = images.to(device or images.device, non_blocking=True).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return batch if memory_format is None else batch.contiguous(memory_format=memory_format)


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
    return apply_network_stack(net, image[None], tile, overlap)[0]


def apply_network_stack(net: nn.Module, images: np.ndarray, tile: int = 512, overlap: int = 64) -> np.ndarray:
    """:func:`apply_network` on a stack of equal-shaped uint8 images ``(N, H, W, 3)`` at once: each tile
    position goes through ``net`` as one batch of ``N`` tiles, so image ``i`` of the output is
    ``apply_network(net, images[i])`` up to float rounding in the network's batched arithmetic."""
    parameter = next(net.parameters())
    height, width = images.shape[1:3]

    def run(block: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(to_net(block).to(device=parameter.device, dtype=parameter.dtype))
        return out.float().cpu().permute(0, 2, 3, 1).numpy()

    if height <= tile and width <= tile:
        return from_net(torch.from_numpy(run(images)).permute(0, 3, 1, 2))
    total = np.zeros((len(images), height, width, 3))
    weight = np.zeros((height, width, 1))
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            block = images[:, top:top + tile, left:left + tile]
            h, w = block.shape[1:3]
            ramp = np.outer(feather(h, overlap if h < height else 0), feather(w, overlap if w < width else 0))
            total[:, top:top + h, left:left + w] += run(block) * ramp[..., None]
            weight[top:top + h, left:left + w] += ramp[..., None]
    return from_net(torch.from_numpy(total / weight).permute(0, 3, 1, 2))


class _Allocations(TorchFunctionMode):
    """Counts the bytes of every new tensor that torch functions return (in-place results and views of
    an input are not new)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        self.bytes += sum(t.untyped_storage().nbytes() for t in _tensors(out)
                          if t.untyped_storage().data_ptr() not in inputs)
        return out


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in ``value``, a tensor or nested tuples, lists and dicts of them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def forward_bytes(net: nn.Module, height: int, width: int) -> int:
    """Bytes that ``net`` allocates to map one ``height x width`` image, measured on a crop of at most
    ``PROBE`` pixels a side and scaled by area (the activations of a convolutional network grow with it).
    Every intermediate is counted as if all were alive at once, so this bounds the peak from above."""
    parameter = next(net.parameters())
    h, w = min(height, PROBE), min(width, PROBE)
    probe, counter = torch.zeros(1, 3, h, w, device=parameter.device, dtype=parameter.dtype), _Allocations()
    with torch.no_grad(), counter:
        net(probe)
    return -(-counter.bytes * height * width // (h * w))


def batch_size_for(net: nn.Module, height: int, width: int) -> int:
    """Images of ``height x width`` to map in one call of ``net``: as many as fit in ``MEMORY_SHARE`` of
    the free memory of its device (:func:`stainlab.nets.devices.free_memory`) by :func:`forward_bytes`,
    at most ``MAX_BATCH`` (``MAX_CPU_BATCH`` on the CPU), at least 1."""
    device = next(net.parameters()).device
    cap = MAX_CPU_BATCH if device.type == "cpu" else MAX_BATCH
    if cap == 1:
        return 1
    fits = int(MEMORY_SHARE * free_memory(device)) // max(forward_bytes(net, height, width), 1)
    return max(1, min(cap, fits))
