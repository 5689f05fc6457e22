"""Training tiles read straight from whole slides: random windows over their tissue.

A :class:`SlideDomain` is a training domain (the interface of :class:`stainlab.training.data.Domain`)
whose items are whole slides, read at one pyramid level (chosen by number or by microns per pixel)
through :func:`stainlab.wsi.readers.open_slide`. Where the tissue lies is found once per slide and tile
size from a small level (a thumbnail), by the house rule of :mod:`stainlab.color.tissue`: the windows of
a grid over the level whose thumbnail pixels are at least ``min_tissue`` tissue are the candidates, and
a draw picks one and shifts it by less than a grid step. Slides open on first use, a few at a time, and
the domain pickles without them (it goes to DataLoader worker processes).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np

from stainlab.color.pixels import tissue_limit
from stainlab.color.tissue import TISSUE_BETA
from stainlab.errors import InputError, NoTissueError
from stainlab.wsi.readers import Slide, open_slide
from stainlab.wsi.references import read_whole, list_slides

OPEN_SLIDES = 4             # slides a domain keeps open, per process
THUMBNAIL_SIDE = 2048       # tissue is found on a level read at most this large a side (strided if larger)
THUMBNAIL_WINDOW = 8        # ... and fine enough to show a window with at least this many pixels a side
GRID_STEP = 8               # candidate windows every size // GRID_STEP pixels (or coarser, see MAX_POSITIONS)
MAX_POSITIONS = 1 << 20     # grid positions per slide at most: the candidate list stays a few MB
_DENSE_BELOW = tissue_limit(TISSUE_BETA)  # a pixel is tissue when its darkest channel is below this
_BLOCK_PIXELS = 1 << 24     # pixels decoded at once while reading a large thumbnail level


def slide_files(folder) -> list[Path]:
    """The whole slides in ``folder``: files the slide readers take that are not read whole as images
    (vendor formats, and TIFFs larger than a reference image; see :func:`stainlab.wsi.references.list_slides`)."""
    return [path for path in list_slides(folder) if not read_whole(path)]


class _Tissue:
    """Candidate windows of one slide for one tile size: grid positions ``tops`` x ``lefts`` at the
    level, the flat indices of those with enough tissue, and the grid step."""

    def __init__(self, tops: np.ndarray, lefts: np.ndarray, candidates: np.ndarray, step: int) -> None:
        self.tops, self.lefts, self.candidates, self.step = tops, lefts, candidates, step


class SlideDomain:
    """Whole slides as a training domain: item ``i`` is slide ``paths[i]`` at ``level`` or at the level
    nearest ``mpp`` (level 0 when neither); windows lie on tissue (``min_tissue`` of their pixels)."""

    def __init__(self, paths, name: str, level: int | None = None, mpp: float | None = None,
                 min_tissue: float = 0.5, open_slides: int = OPEN_SLIDES) -> None:
        self.paths, self.name = [Path(p) for p in paths], name
        if not self.paths:
            raise InputError(f"domain {name}: no slides")
        if level is not None and mpp is not None:
            raise InputError("give a level or a target mpp, not both")
        if not 0.0 <= min_tissue <= 1.0:
            raise InputError(f"min_tissue must be a fraction from 0 to 1, got {min_tissue}")
        self.level, self.mpp, self.min_tissue, self.open_slides = level, mpp, min_tissue, max(1, open_slides)
        self._levels: dict[int, tuple[int, int, int]] = {}        # slide -> (level, height, width)
        self._tissue: dict[tuple[int, int], _Tissue] = {}          # (slide, size) -> its candidates
        self._open: OrderedDict[int, Slide] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # open files do not pickle; they reopen on use
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def close(self) -> None:
        """Close the open slides (they reopen when used again)."""
        while self._open:
            self._open.popitem(last=False)[1].close()

    def slide(self, index: int) -> Slide:
        """Slide ``index``, opened if needed (the least recently used is closed beyond ``open_slides``)."""
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        slide = open_slide(self.paths[index])
        try:
            if index not in self._levels:
                level = slide.level_for(self.level, self.mpp)
                self._levels[index] = (level, slide.levels[level].height, slide.levels[level].width)
        except BaseException:
            slide.close()
            raise
        self._open[index] = slide
        while len(self._open) > self.open_slides:
            self._open.popitem(last=False)[1].close()
        return slide

    def label(self, index: int) -> str:
        return self.paths[index].name

    def level_of(self, index: int) -> int:
        """The pyramid level read from slide ``index``."""
        if index not in self._levels:
            self.slide(index)
        return self._levels[index][0]

    def shape(self, index: int) -> tuple[int, int]:
        """Height and width of the level read from slide ``index``."""
        if index not in self._levels:
            self.slide(index)
        return self._levels[index][1:]

    def window(self, rng: np.random.Generator, index: int, size: int) -> tuple[int, int]:
        """A random ``size`` window of slide ``index`` on tissue: ``(top, left)`` at its level."""
        tissue = self._tissue.get((index, size))
        if tissue is None:
            tissue = self._tissue[(index, size)] = self._find_tissue(index, size)
        row, col = divmod(int(tissue.candidates[rng.integers(len(tissue.candidates))]), len(tissue.lefts))
        height, width = self.shape(index)
        top = min(int(tissue.tops[row]) + int(rng.integers(tissue.step)), height - size)
        left = min(int(tissue.lefts[col]) + int(rng.integers(tissue.step)), width - size)
        return top, left

    def crop(self, index: int, window: tuple[int, int], size: int) -> np.ndarray:
        top, left = window
        return self.slide(index).read(self.level_of(index), top, left, size, size)

    def _find_tissue(self, index: int, size: int) -> _Tissue:
        """The grid windows of slide ``index`` whose thumbnail pixels are ``min_tissue`` tissue."""
        level, (height, width) = self.level_of(index), self.shape(index)
        path = self.paths[index]
        if min(height, width) < size:
            raise InputError(f"{path}: level {level} ({width}x{height}) is smaller than the training tile size "
                             f"{size}; use smaller tiles (--set size=N) or a finer level")
        thumb = self._thumbnail(index, size)
        sy, sx = thumb.shape[0] / height, thumb.shape[1] / width
        step = max(1, size // GRID_STEP, math.ceil(1 / max(sy, sx) - 1e-9),
                   math.ceil(math.sqrt((height - size + 1) * (width - size + 1) / MAX_POSITIONS)))
        tops, lefts = np.arange(0, height - size + 1, step), np.arange(0, width - size + 1, step)
        dense = np.zeros((thumb.shape[0] + 1, thumb.shape[1] + 1), np.int32)  # tissue pixels above-left
        dense[1:, 1:] = (thumb.min(axis=2) < _DENSE_BELOW).cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
        y0, y1 = self._span(tops, size, sy, thumb.shape[0])
        x0, x1 = self._span(lefts, size, sx, thumb.shape[1])
        count = (dense[np.ix_(y1, x1)] - dense[np.ix_(y0, x1)] - dense[np.ix_(y1, x0)] + dense[np.ix_(y0, x0)])
        area = np.outer(y1 - y0, x1 - x0)
        candidates = np.flatnonzero(count >= self.min_tissue * area)
        if not len(candidates):
            raise NoTissueError(f"{path}: no tissue at level {level}: no {size}x{size} window is "
                                f"{100 * self.min_tissue:g}% tissue; remove the slide or lower min_tissue")
        return _Tissue(tops, lefts, candidates.astype(np.int32), step)

    @staticmethod
    def _span(starts: np.ndarray, size: int, scale: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Thumbnail rows (or columns) ``[first, stop)`` under windows at ``starts`` of ``size``."""
        first = np.minimum(np.floor(starts * scale).astype(np.int64), limit - 1)
        stop = np.clip(np.ceil((starts + size) * scale).astype(np.int64), first + 1, limit)
        return first, stop

    def _thumbnail(self, index: int, size: int) -> np.ndarray:
        """The smallest level at or below the chosen one that shows a window with
        :data:`THUMBNAIL_WINDOW` pixels a side, read every k-th pixel to at most :data:`THUMBNAIL_SIDE`."""
        slide, level = self.slide(index), self.level_of(index)
        base = slide.levels[level]
        fine = [i for i in range(level, len(slide.levels))
                if size * slide.levels[i].width >= THUMBNAIL_WINDOW * base.width]
        thumb_level = fine[-1] if fine else level
        lv = slide.levels[thumb_level]
        stride = max(1, math.ceil(max(lv.height, lv.width) / THUMBNAIL_SIDE))
        rows = stride * max(1, _BLOCK_PIXELS // (lv.width * stride))
        return np.concatenate([slide.read(thumb_level, y, 0, min(rows, lv.height - y), lv.width)[::stride, ::stride]
                               for y in range(0, lv.height, rows)], axis=0)
