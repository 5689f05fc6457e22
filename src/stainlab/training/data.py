"""Training tiles: random crops of two image domains, as float NCHW batches in [-1, 1].

Images come from folders (paths, read when first needed and kept) or from arrays in memory. Each draw
picks an image per slot, a random ``size`` x ``size`` window and one of the eight rotations/flips of the
square (paper 004, Sec. 6.1, trains on 90/180/270-degree rotations; flips are the CycleGAN default);
paired draws cut the same window with the same rotation from both images of a pair. All randomness comes
from the trainer's seeded generator, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stainlab.errors import InputError
from stainlab.io.images import read_image
from stainlab.nets.inference import to_net


class Domain:
    """The images of one domain: paths (read on first use, then kept) or uint8 HxWx3 arrays."""

    def __init__(self, items, name: str) -> None:
        self.items, self.name = list(items), name
        if not self.items:
            raise InputError(f"domain {name}: no images")
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._cache:
            item = self.items[index]
            image = read_image(Path(item))[0] if isinstance(item, (str, Path)) else np.asarray(item)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise InputError(f"domain {self.name} image {index}: expected uint8 HxWx3, got "
                                 f"{image.dtype} {image.shape}")
            self._cache[index] = image
        return self._cache[index]

    def label(self, index: int) -> str:
        item = self.items[index]
        return Path(item).name if isinstance(item, (str, Path)) else f"{self.name}[{index}]"


def _orient(image: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 symmetries of the square: ``code % 4`` quarter turns, then a flip if ``code >= 4``."""
    turned = np.rot90(image, code % 4)
    return turned[:, ::-1] if code >= 4 else turned


@dataclass
class TileSampler:
    """Random crops of ``size`` from domains ``a`` and ``b``; ``paired``: image i of a goes with image i of b."""

    a: Domain
    b: Domain
    size: int
    paired: bool = False
    augment: bool = True
    levels: list | None = None  # a class label per image of ``a`` (HER2 level 0-3; None: unknown)

    def __post_init__(self) -> None:
        if self.paired and len(self.a) != len(self.b):
            raise InputError(f"paired data: {len(self.a)} images in {self.a.name} but {len(self.b)} in "
                             f"{self.b.name}")
        if self.levels is not None and len(self.levels) != len(self.a):
            raise InputError(f"{len(self.levels)} level labels for {len(self.a)} images in {self.a.name}")

    def __len__(self) -> int:
        """Images per pass over the data (the larger domain)."""
        return max(len(self.a), len(self.b))

    def draw(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """``{"A": (N,3,S,S), "B": (N,3,S,S)}`` float in [-1, 1], and ``"level"`` (N,) long with the A
        images' labels (-1 for unknown) when there are labels."""
        crops_a, crops_b, drawn = [], [], []
        for _ in range(batch_size):
            i = int(rng.integers(len(self.a)))
            drawn.append(i)
            j = i if self.paired else int(rng.integers(len(self.b)))
            code = int(rng.integers(8)) if self.augment else 0
            if self.paired:
                window = self._window(rng, self.a, i, self.b, j)
                crops_a.append(_orient(self._crop(self.a, i, window), code))
                crops_b.append(_orient(self._crop(self.b, j, window), code))
            else:
                crops_a.append(_orient(self._crop(self.a, i, self._window(rng, self.a, i)), code))
                code_b = int(rng.integers(8)) if self.augment else 0
                crops_b.append(_orient(self._crop(self.b, j, self._window(rng, self.b, j)), code_b))
        batch = {"A": to_net(np.stack(crops_a)), "B": to_net(np.stack(crops_b))}
        if self.levels is not None:
            batch["level"] = torch.tensor([-1 if self.levels[i] is None else int(self.levels[i]) for i in drawn])
        return batch

    def _window(self, rng, domain: Domain, i: int, other: Domain | None = None, j: int = 0) -> tuple[int, int]:
        height, width = domain[i].shape[:2]
        if other is not None and other[j].shape[:2] != (height, width):
            raise InputError(f"paired images differ in size: {domain.label(i)} is {height}x{width}, "
                             f"{other.label(j)} is {other[j].shape[0]}x{other[j].shape[1]}")
        if min(height, width) < self.size:
            raise InputError(f"{domain.label(i)} ({height}x{width}) is smaller than the training tile "
                             f"size {self.size}; use smaller tiles (--set size=N) or larger images")
        return int(rng.integers(height - self.size + 1)), int(rng.integers(width - self.size + 1))

    def _crop(self, domain: Domain, i: int, window: tuple[int, int]) -> np.ndarray:
        top, left = window
        return domain[i][top:top + self.size, left:left + self.size]
