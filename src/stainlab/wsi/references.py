"""Reference images for fitting a method: image files read whole, large slides sampled over their tissue."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from stainlab.errors import InputError
from stainlab.io.images import list_images, read_image
from stainlab.wsi.normalize import sample_tissue
from stainlab.wsi.readers import IMAGE_SUFFIXES, OPENSLIDE_SUFFIXES, open_slide
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
        if read_whole(path):
            image, notes = read_image(path)  # 16-bit, float, grey... converted as for any input image
            for note in notes:
                warnings.warn(f"{path}: {note}", stacklevel=2)
            images.append(image)
            continue
        with open_slide(path) as slide:
            level = slide.level_for(mpp=mpp) if mpp and slide.mpp else 0
            lv = slide.levels[level]
            images += sample_tissue(slide, level, TileGrid(lv.height, lv.width, tile, 0), sample_tiles)
    return images


def read_whole(path: Path) -> bool:
    """Whether a reference is read whole as an image: any image file, and a TIFF whose first page is at
    most :data:`REFERENCE_SAMPLE_SIDE` a side (larger TIFFs and vendor slides are sampled over tissue)."""
    suffix = path.suffix.lower()
    if suffix not in (".tif", ".tiff"):
        return suffix in IMAGE_SUFFIXES
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return max(page.imagewidth, page.imagelength) <= REFERENCE_SAMPLE_SIDE
    except Exception:  # not a readable TIFF: the image reader says why
        return True
