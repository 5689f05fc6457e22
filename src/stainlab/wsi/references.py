"""Reference images for fitting a method: image files read whole, large slides sampled over their tissue."""

from __future__ import annotations

import warnings

import numpy as np

from stainlab.errors import InputError
from stainlab.io.images import list_images
from stainlab.wsi.normalize import sample_tissue
from stainlab.wsi.readers import IMAGE_SUFFIXES, OPENSLIDE_SUFFIXES, ImageSlide, open_slide
from stainlab.wsi.tiling import DEFAULT_TILE, TileGrid

SLIDE_SUFFIXES = IMAGE_SUFFIXES | OPENSLIDE_SUFFIXES
REFERENCE_SAMPLE_SIDE = 4096  # a reference slide larger than this a side is sampled over its tissue
REFERENCE_SAMPLE_TILES = 64   # tissue tiles pooled from a large reference slide


def list_slides(sources, recursive: bool = False) -> list:
    """Files named, and slide or image files inside folders (sorted, no hidden files)."""
    return list_images(sources, recursive, suffixes=SLIDE_SUFFIXES)


def read_references(sources, mpp: float | None = None, tile: int = DEFAULT_TILE,
                    sample_tiles: int = REFERENCE_SAMPLE_TILES) -> list[np.ndarray]:
    """The pixels of the reference files and folders ``sources``: images whole, and up to
    ``sample_tiles`` tissue tiles of ``tile`` pixels sampled over a slide larger than
    :data:`REFERENCE_SAMPLE_SIDE` (at the level nearest ``mpp`` when the slide gives its resolution).
    Conversions made while reading (grey, 16-bit, alpha) are issued as warnings naming the file."""
    paths = list_slides(sources)
    if not paths:
        raise InputError(f"{', '.join(map(str, sources))}: no reference images found")
    images = []
    for path in paths:
        with open_slide(path) as slide:
            for note in slide.notes:
                warnings.warn(f"{path}: {note}", stacklevel=2)
            level = slide.level_for(mpp=mpp) if mpp and slide.mpp else 0
            lv = slide.levels[level]
            if isinstance(slide, ImageSlide) or max(lv.height, lv.width) <= REFERENCE_SAMPLE_SIDE:
                images.append(slide.read(level, 0, 0, lv.height, lv.width))
            else:
                images += sample_tissue(slide, level, TileGrid(lv.height, lv.width, tile, 0), sample_tiles)
    return images
