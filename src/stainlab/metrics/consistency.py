"""Consistency checks that need no ground truth: cycle reconstructions and seams between tiles.

* Cycle consistency (papers 000, Table III, and 003, Sec. 4): translate a source to the other stain and
  back, then compare the reconstruction with the source by SSIM, PSNR and MAE.
* Seam (patch) consistency (paper 000, Fig. 3 right): a large image is cut into tiles (there 512x512),
  each tile is normalised on its own and the tiles are put back; a method that treats tiles differently
  leaves visible jumps at the tile borders. We measure the mean absolute difference between horizontally
  or vertically neighbouring pixels that lie on opposite sides of a tile border, and the same inside tiles;
  their difference is the extra jump the tiling added, in grey levels (about 0 for a seamless result).
"""

from __future__ import annotations

import numpy as np

from stainlab.errors import InputError
from stainlab.metrics._inputs import as_batch, per_image
from stainlab.metrics.pixel import mae, psnr
from stainlab.metrics.structural import ssim


def cycle_consistency(source, reconstruction) -> dict:
    """``{"ssim", "psnr", "mae"}`` of a source and its cycle reconstruction (floats, or arrays for batches)."""
    return {"ssim": ssim(source, reconstruction), "psnr": psnr(source, reconstruction),
            "mae": mae(source, reconstruction)}


def _tile_shape(tile) -> tuple[int, int]:
    shape = (tile, tile) if np.isscalar(tile) else tuple(tile)
    if len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
        raise InputError(f"tile must be a positive integer or a (height, width) pair, got {tile!r}")
    return int(shape[0]), int(shape[1])


def _neighbour_differences(x: np.ndarray, axis: int, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image sums and counts of |neighbour differences| along ``axis``, as (across, inside) pairs."""
    diff = np.abs(np.diff(x, axis=axis)).mean(axis=3)          # (N, H', W'), mean over R, G, B
    crosses = (np.arange(1, x.shape[axis]) % period) == 0       # pair (i-1, i) straddles a border at i
    crosses = np.broadcast_to(np.expand_dims(crosses, 1 - (axis - 1)), diff.shape[1:])
    sums = np.stack([(diff * crosses).sum(axis=(1, 2)), (diff * ~crosses).sum(axis=(1, 2))])
    return sums, np.array([crosses.sum(), (~crosses).sum()])


def border_differences(image, tile) -> tuple:
    """Mean |difference| of neighbouring pixels across tile borders and inside tiles (grey levels).

    Tiles of ``tile`` pixels (an int or ``(height, width)``) start at the top-left corner. Returns
    ``(across, inside)``: floats for one image, arrays for a batch.
    """
    th, tw = _tile_shape(tile)
    x, single = as_batch(image, "image")
    if x.shape[1] <= th and x.shape[2] <= tw:
        raise InputError(f"seam score: a {x.shape[1]}x{x.shape[2]} image has no {th}x{tw} tile borders")
    sums, counts = np.zeros((2, x.shape[0])), np.zeros(2)
    for axis, period in ((1, th), (2, tw)):
        if x.shape[axis] > 1:
            s, c = _neighbour_differences(x, axis, period)
            sums, counts = sums + s, counts + c
    if counts[1] == 0:
        raise InputError(f"seam score: {th}x{tw} tiles of one pixel leave no neighbours inside a tile")
    across, inside = sums / counts[:, None]
    return per_image(across, single), per_image(inside, single)


def seam_score(image, tile):
    """Extra jump at tile borders: ``across - inside`` of :func:`border_differences`, in grey levels.

    About 0 for a result without seams; positive when tiles were normalised inconsistently.
    """
    across, inside = border_differences(image, tile)
    return across - inside
