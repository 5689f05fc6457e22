"""Cutting large images into training or evaluation tiles.

Paper 003 cuts 288x288 tiles with 144 pixels of overlap; paper 004 augments by rotating 90, 180 and
270 degrees. Tiles with too little tissue (the package's tissue rule) are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from stainlab.color.tissue import tissue_mask
from stainlab.errors import InputError
from stainlab.io.arrays import check_rgb8


def grid_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels every ``stride`` along ``length``; the last tile is
    moved back to end at the border, so every pixel is covered and no tile is partial."""
    if tile > length:
        raise InputError(f"tile of {tile} pixels does not fit in an image side of {length}")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    rotation: int          # degrees counter-clockwise: 0, 90, 180 or 270
    image: np.ndarray


def extract_tiles(image: np.ndarray, tile: int = 288, overlap: int = 144, min_tissue: float = 0.5,
                  rotations=(0,), light=None) -> Iterator[Tile]:
    """Tiles of ``image`` whose tissue fraction is at least ``min_tissue``, each in every rotation.

    Defaults follow paper 003 (288 px, 144 overlap); ``rotations=(0, 90, 180, 270)`` is paper 004's
    augmentation. ``light``: the RGB of the image's glass, so that grey-beige glass is not counted as
    tissue (``None``: white).
    """
    image = check_rgb8(image)
    if not 0 <= overlap < tile:
        raise InputError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    if not 0.0 <= min_tissue <= 1.0:
        raise InputError(f"min_tissue must be a fraction in [0, 1], got {min_tissue}")
    bad = set(rotations) - {0, 90, 180, 270}
    if bad:
        raise InputError(f"rotations must be multiples of 90 degrees in [0, 270], got {sorted(bad)}")
    stride = tile - overlap
    tissue = tissue_mask(image, light=light)
    for y in grid_starts(image.shape[0], tile, stride):
        for x in grid_starts(image.shape[1], tile, stride):
            if tissue[y:y + tile, x:x + tile].mean() < min_tissue:
                continue
            patch = image[y:y + tile, x:x + tile]
            for r in rotations:
                yield Tile(y, x, r, np.ascontiguousarray(np.rot90(patch, r // 90)))
