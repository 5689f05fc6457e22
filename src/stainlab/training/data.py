"""Training tiles: random crops of two image domains, drawn step by step, in loader worker processes.

A domain is images from folders (paths, read when first needed and kept within a memory budget), arrays
in memory, or tissue tiles of whole slides (:mod:`stainlab.training.slide_tiles`). Each draw picks an
image per slot, a random ``size`` x ``size`` window and one of the eight rotations/flips of the square
(paper 004, Sec. 6.1, trains on 90/180/270-degree rotations; flips are the CycleGAN default); paired
draws cut the same window with the same rotation from both images of a pair.

Sample ``k`` of step ``s`` comes from its own generator, seeded with ``(seed, s, k)``: a batch is a pure
function of the run's seed and the step. So a resumed run draws what an uninterrupted one would, the
batches can be made ahead in DataLoader worker processes in any order (:func:`step_batches`), and the
processes of a distributed run each draw their own share of the global batch, the same samples a single
process would draw, whatever their number.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stainlab.errors import InputError
from stainlab.io.images import read_image
from stainlab.nets.inference import to_net

IMAGE_CACHE_BYTES = 2 << 30  # decoded images a domain keeps, per process (each loader worker has its own)
REFUSED = "refused"  # the key of a batch that could not be made: the reason, raised again by step_batches


class Domain:
    """The images of one domain: paths (read on first use, then kept while they fit
    :data:`IMAGE_CACHE_BYTES`, least recently used first out) or uint8 HxWx3 arrays."""

    def __init__(self, items, name: str, cache_bytes: int = IMAGE_CACHE_BYTES) -> None:
        self.items, self.name, self.cache_bytes = list(items), name, cache_bytes
        if not self.items:
            raise InputError(f"domain {name}: no images")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        item = self.items[index]
        image = read_image(Path(item))[0] if isinstance(item, (str, Path)) else np.asarray(item)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"domain {self.name} image {index}: expected uint8 HxWx3, got {image.dtype} {image.shape}")
        self._cache[index] = image
        while sum(kept.nbytes for kept in self._cache.values()) > self.cache_bytes and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return image

    def label(self, index: int) -> str:
        item = self.items[index]
        return Path(item).name if isinstance(item, (str, Path)) else f"{self.name}[{index}]"

    def shape(self, index: int) -> tuple[int, int]:
        return self[index].shape[:2]

    def window(self, rng: np.random.Generator, index: int, size: int) -> tuple[int, int]:
        """A random ``size`` window of image ``index``: ``(top, left)``."""
        height, width = self.shape(index)
        if min(height, width) < size:
            raise InputError(f"{self.label(index)} ({height}x{width}) is smaller than the training tile size "
                             f"{size}; use smaller tiles (--set size=N) or larger images")
        return int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))

    def crop(self, index: int, window: tuple[int, int], size: int) -> np.ndarray:
        top, left = window
        return self[index][top:top + size, left:left + size]


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
            raise InputError(f"paired data: {len(self.a)} images in {self.a.name} but {len(self.b)} in {self.b.name}")
        if self.levels is not None and len(self.levels) != len(self.a):
            raise InputError(f"{len(self.levels)} level labels for {len(self.a)} images in {self.a.name}")

    def __len__(self) -> int:
        """Images per pass over the data (the larger domain)."""
        return max(len(self.a), len(self.b))

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """One draw: the crops of A and B and the index of the A image."""
        i = int(rng.integers(len(self.a)))
        j = i if self.paired else int(rng.integers(len(self.b)))
        code = int(rng.integers(8)) if self.augment else 0
        if self.paired:
            window = self.a.window(rng, i, self.size)
            if self.b.shape(j) != self.a.shape(i):
                raise InputError(f"paired images differ in size: {self.a.label(i)} is "
                                 f"{'x'.join(map(str, self.a.shape(i)))}, {self.b.label(j)} is "
                                 f"{'x'.join(map(str, self.b.shape(j)))}")
            return (_orient(self.a.crop(i, window, self.size), code),
                    _orient(self.b.crop(j, window, self.size), code), i)
        crop_a = _orient(self.a.crop(i, self.a.window(rng, i, self.size), self.size), code)
        code_b = int(rng.integers(8)) if self.augment else 0
        return crop_a, _orient(self.b.crop(j, self.b.window(rng, j, self.size), self.size), code_b), i

    def stack(self, drawn: list[tuple[np.ndarray, np.ndarray, int]]) -> dict[str, torch.Tensor]:
        """``{"A": (N,S,S,3), "B": (N,S,S,3)}`` uint8, and ``"level"`` (N,) long with the A images' labels
        (-1 for unknown) when there are labels."""
        batch = {key: torch.from_numpy(np.ascontiguousarray(np.stack([d[column] for d in drawn])))
                 for column, key in ((0, "A"), (1, "B"))}
        if self.levels is not None:
            batch["level"] = torch.tensor([-1 if self.levels[d[2]] is None else int(self.levels[d[2]]) for d in drawn])
        return batch

    def draw(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """``batch_size`` draws from ``rng`` as float NCHW in [-1, 1] (``"level"`` as in :meth:`stack`)."""
        batch = self.stack([self.sample(rng) for _ in range(batch_size)])
        return {key: to_net(value) if key in ("A", "B") else value for key, value in batch.items()}

    def step_batch(self, seed: int, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """Process ``rank``'s share (of ``world``) of step ``step``'s global batch of ``batch_size``, uint8
        as in :meth:`stack`: samples ``rank * n .. (rank + 1) * n - 1``, ``n = batch_size // world``, each
        from its own generator seeded with ``(seed, step, k)`` (see the module docstring)."""
        share = batch_size // world
        return self.stack([self.sample(np.random.default_rng([seed, step, k]))
                           for k in range(rank * share, (rank + 1) * share)])


class _StepBatches(torch.utils.data.Dataset):
    """Item ``s``: a process's share of step ``s``'s batch (what a loader worker makes)."""

    def __init__(self, sampler: TileSampler, seed: int, batch_size: int, rank: int, world: int) -> None:
        self.sampler, self.seed, self.batch_size, self.rank, self.world = sampler, seed, batch_size, rank, world

    def __len__(self) -> int:  # pragma: no cover - indexed by the loader's sampler only
        return 2**62

    def __getitem__(self, step: int) -> dict:
        try:
            return self.sampler.step_batch(self.seed, step, self.batch_size, self.rank, self.world)
        except InputError as refusal:  # handed over as a value: raised in a worker it would arrive wrapped
            return {REFUSED: str(refusal)}  # in the worker's traceback, not as the one line it is


def step_batches(sampler: TileSampler, seed: int, batch_size: int, first: int, last: int, *, workers: int = 0,
                 pin_memory: bool = False, rank: int = 0, world: int = 1):
    """The batches of steps ``first .. last - 1`` in order (uint8, see :meth:`TileSampler.step_batch`),
    made ahead by ``workers`` loader processes (0: in this one) into pinned memory when ``pin_memory``
    (for copies to a GPU that overlap the step)."""
    loader = torch.utils.data.DataLoader(
        _StepBatches(sampler, seed, batch_size, rank, world), batch_size=None, sampler=range(first, last),
        num_workers=workers, pin_memory=pin_memory, prefetch_factor=4 if workers else None,
        persistent_workers=False)
    for batch in loader:
        if REFUSED in batch:
            raise InputError(batch[REFUSED])
        yield batch
