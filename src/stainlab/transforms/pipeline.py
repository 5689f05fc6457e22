"""Transforms inside a training pipeline: a stream of tiles, or a map-style dataset, normalized or
augmented with a fixed fitted transform, also inside ``torch.utils.data.DataLoader`` workers.

>>> t = stainlab.load("macenko").fit(reference)                          # doctest: +SKIP
>>> data = stainlab.NormalizedDataset(tiles, t, key=0)  # items (image, label)   # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(data, batch_size=32, num_workers=4)     # doctest: +SKIP
>>> tiles_out = stainlab.normalize_stream(tiles, t)  # a lazy iterator            # doctest: +SKIP

What an item may be: an image (uint8 ``HxWx3`` NumPy, or a ``(3,H,W)`` / ``(N,3,H,W)`` torch tensor read
with ``value_range`` as ``t(tensor, value_range=...)`` reads it), or a tuple, list or dict holding one,
named by ``key`` (an index or a dict key). The item comes back of the same type with that element
replaced by the transformed image, in its own type, shape, dtype and range. ``transform`` may be one
transform, a list of them applied in order (e.g. normalize then augment), or anything
``stainlab.load`` reads (a method name needs no fit; a saved ``.json`` is fitted).

Threads: numba's parallel loops and torch's operators start one thread per core in every process, so
``num_workers`` workers would run ``num_workers`` x cores threads. The first item a wrapper handles in
each DataLoader worker process sets both to ``threads`` (default 1; ``None`` leaves them alone) with
:func:`stainlab.threads.limit_threads`, before the wrapped dataset is read. The main process
(``num_workers=0``) is never changed.

Worker start method: numba's default threads on Linux are GNU OpenMP, which cannot be used in a process
forked after they started (the worker dies). Once the main process has run any stainlab method (a fit
does), give the DataLoader ``multiprocessing_context="forkserver"`` (or ``"spawn"``); a forked worker in
that state raises a :class:`~stainlab.StainlabError` saying so on its first item instead of dying.
Forking is fine before any method has run, or with ``NUMBA_THREADING_LAYER=workqueue`` or ``tbb``.

Randomness (transforms with ``deterministic = False``, e.g. :class:`~stainlab.StainAugmenter`): each
item gets its own generator, so workers never repeat each other's draws. With ``seed`` it is derived
from ``(seed, epoch, index)``: the same item gets the same jitter whatever the worker or the number of
workers, and a new one after :meth:`NormalizedDataset.set_epoch` (call it each epoch, as with
``DistributedSampler``; workers made with ``persistent_workers=True`` keep the epoch they started with).
Without ``seed``, inside a worker it is derived from torch's per-worker seed and the index (new each
epoch, reproducible under ``torch.manual_seed``); in the main process the transform's own generator is
used, as ``t(image)`` would.

Tiles without tissue pass through unchanged with a :class:`~stainlab.NoTissueWarning`, as ``t(image)``
does; a training loop is not stopped. ``no_tissue`` decides what is shown: ``"once"`` (default) shows
the first warning in each process, noting that later ones are counted, not shown; ``"always"`` shows
each; ``"ignore"`` shows none; ``"error"`` raises :class:`~stainlab.NoTissueError` instead. Every
process counts its own passed-through tiles in ``no_tissue_count`` (a worker's count stays in the
worker).
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from stainlab.errors import InputError, NoTissueError, NoTissueWarning, NotFittedError, StainlabError
from stainlab.io.arrays import is_torch_tensor

NO_TISSUE_POLICIES = ("once", "always", "ignore", "error")


def _worker_info():
    """torch's DataLoader worker info in a worker process, else None (torch is not imported for it)."""
    data = sys.modules.get("torch.utils.data")
    return None if data is None else data.get_worker_info()


_checked_pid: int | None = None  # the process whose inherited threads were checked (by its first wrapper)


def _first_in_process() -> bool:
    """True once per process: for the first wrapper to run in it, before it sets any threads (setting
    numba's threads starts them, so a later wrapper would see this process's own)."""
    global _checked_pid
    first, _checked_pid = _checked_pid != os.getpid(), os.getpid()
    return first


def _forked_gnu_openmp() -> bool:
    """True when numba's parallel threads were started with GNU OpenMP before this process was forked
    from its parent: its first parallel kernel would kill the process ("fork() called from a process
    already using GNU OpenMP"). Called before this process runs any kernel of its own."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is None or not getattr(parallel, "_is_initialized", False):
        return False
    try:
        import numba
        from numba.np.ufunc import omppool
        return numba.threading_layer() == "omp" and omppool.openmp_vendor == "GNU"
    except (ImportError, ValueError, AttributeError):
        return False


def _transforms(transform) -> list:
    items = list(transform) if isinstance(transform, (list, tuple)) else [transform]
    if not items:
        raise InputError("pipeline: no transform given")
    out = []
    for t in items:
        if isinstance(t, (str, Path)):
            from stainlab.transforms.registry import load
            t = load(t)
        if not callable(t):
            raise InputError(f"pipeline: expected a stainlab transform, got {type(t).__name__}")
        if getattr(t, "fitted", True) is False:
            raise NotFittedError(f"{getattr(t, 'name', type(t).__name__)}: call fit(reference) before "
                                 "wrapping it in a pipeline, or load a fitted .json")
        out.append(t)
    return out


class _Applier:
    """What the dataset and the stream share: pick the image out of an item, transform it (with the
    item's randomness, the process's threads and the no-tissue policy), put it back."""

    def __init__(self, transform, key=None, value_range=None, seed: int | None = None,
                 threads: int | None = 1, no_tissue: str = "once") -> None:
        self.transforms = _transforms(transform)
        if key is not None and not isinstance(key, (int, str)):
            raise InputError(f"pipeline: key must be an index, a dict key or None, got {key!r}")
        if no_tissue not in NO_TISSUE_POLICIES:
            raise InputError(f"pipeline: no_tissue must be one of {', '.join(NO_TISSUE_POLICIES)}, got {no_tissue!r}")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise InputError(f"pipeline: seed must be a non-negative int or None, got {seed!r}")
        if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
            raise InputError(f"pipeline: threads must be a positive int or None, got {threads!r}")
        self.key, self.value_range, self.seed, self.threads = key, value_range, seed, threads
        self.no_tissue = no_tissue
        self.epoch = 0
        self.no_tissue_count = 0
        self._pid: int | None = None        # the process whose threads were set
        self._warned_pid: int | None = None  # the process that showed its first no-tissue warning

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pid"] = state["_warned_pid"] = None  # a new process sets its own threads and warns anew
        state["no_tissue_count"] = 0
        return state

    # -- per process ------------------------------------------------------------------------------
    def _enter_process(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        if self._pid is not None:       # forked with the parent's state: start this process's count
            self.no_tissue_count = 0
        self._pid = pid
        if _worker_info() is not None and _first_in_process() and _forked_gnu_openmp():
            raise StainlabError(
                "stainlab in a forked DataLoader worker: numba's GNU OpenMP threads were started before the "
                "fork and would kill this worker; pass multiprocessing_context='forkserver' (or 'spawn') to "
                "DataLoader, or set NUMBA_THREADING_LAYER=workqueue before stainlab runs anything")
        if self.threads is not None and _worker_info() is not None:
            from stainlab.threads import limit_threads
            limit_threads(self.threads)

    # -- per item ---------------------------------------------------------------------------------
    def _rng(self, index: int) -> np.random.Generator | None:
        if self.seed is not None:
            return np.random.default_rng([int(self.seed), int(self.epoch), int(index)])
        info = _worker_info()
        return None if info is None else np.random.default_rng([int(info.seed), int(index)])

    def _image(self, item):
        if self.key is None:
            return item
        try:
            return item[self.key]
        except (KeyError, IndexError, TypeError) as err:
            raise InputError(f"pipeline: item of type {type(item).__name__} has no element {self.key!r} "
                             "(key names the image in a tuple, list or dict item)") from err

    def _replace(self, item, image):
        if self.key is None:
            return image
        if isinstance(item, dict):
            out = dict(item)
            out[self.key] = image
            return type(item)(out) if type(item) is not dict else out
        if isinstance(item, tuple):
            parts = list(item)
            parts[self.key] = image
            return type(item)(*parts) if hasattr(item, "_fields") else tuple(parts)
        if isinstance(item, list):
            out = list(item)
            out[self.key] = image
            return out
        raise InputError(f"pipeline: cannot put the image back into an item of type {type(item).__name__}")

    def _apply_one(self, t, image, rng):
        if rng is not None and not getattr(t, "deterministic", True) and hasattr(t, "_rng"):
            t = copy.copy(t)
            t._rng = rng
        if is_torch_tensor(image):
            return t(image, value_range=self.value_range)
        return t(image)

    def _transform(self, image, index: int):
        rng = self._rng(index)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for t in self.transforms:
                image = self._apply_one(t, image, rng)
        for w in caught:
            if issubclass(w.category, NoTissueWarning):
                self._no_tissue(w, index)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return image

    def _no_tissue(self, w, index: int) -> None:
        self.no_tissue_count += 1
        if self.no_tissue == "error":
            raise NoTissueError(f"item {index}: {w.message}")
        if self.no_tissue == "always":
            warnings.warn(f"item {index}: {w.message}", NoTissueWarning, stacklevel=5)
        elif self.no_tissue == "once" and self._warned_pid != os.getpid():
            self._warned_pid = os.getpid()
            warnings.warn(f"item {index}: {w.message} (later tiles without tissue in this process pass "
                          "through silently and are counted in no_tissue_count)", NoTissueWarning, stacklevel=5)

    def apply(self, item, index: int):
        return self._replace(item, self._transform(self._image(item), index))


class NormalizedDataset(_Applier):
    """A map-style dataset (anything with ``__getitem__`` and ``__len__``, e.g. a torch ``Dataset``)
    whose items come back transformed; picklable, for ``DataLoader(num_workers=...)``.

    ``transform``: a fitted transform, a list applied in order, or what ``stainlab.load`` reads.
    ``key``: which element of a tuple/list/dict item is the image (None: the item is the image).
    ``value_range``: how float tensors are read (see :mod:`stainlab.io.arrays`; default [0, 1]).
    ``seed``: per-item randomness for augmenters, from ``(seed, epoch, index)``. ``threads``: numba and
    torch threads in each DataLoader worker (None: unchanged). ``no_tissue``: ``"once"``, ``"always"``,
    ``"ignore"`` or ``"error"``. The module docstring (:mod:`stainlab.transforms.pipeline`) says more.
    """

    def __init__(self, dataset, transform, *, key=None, value_range=None, seed: int | None = None,
                 threads: int | None = 1, no_tissue: str = "once") -> None:
        if not hasattr(dataset, "__getitem__"):
            raise InputError(f"NormalizedDataset: expected a map-style dataset (with __getitem__), got "
                             f"{type(dataset).__name__}; use normalize_stream for an iterable")
        super().__init__(transform, key, value_range, seed, threads, no_tissue)
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        self._enter_process()
        return self.apply(self.dataset[index], int(index))

    def set_epoch(self, epoch: int) -> None:
        """Draw new per-item randomness (with ``seed``) for this epoch; call it before each epoch."""
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        names = ", ".join(repr(t) for t in self.transforms)
        return f"NormalizedDataset({type(self.dataset).__name__} of {len(self)}, [{names}], key={self.key!r})"


def normalize_stream(items: Iterable, transform, *, key=None, value_range=None, seed: int | None = None,
                     threads: int | None = 1, no_tissue: str = "once", start: int = 0) -> Iterator:
    """Yield each item of ``items`` transformed, lazily; the arguments are :class:`NormalizedDataset`'s.
    The ``index`` of an item (for its randomness under ``seed``) is its position plus ``start``. Call it
    inside an ``IterableDataset``'s ``__iter__`` to use it in DataLoader workers (threads are set there
    on the first item, as for the dataset)."""
    applier = _Applier(transform, key, value_range, seed, threads, no_tissue)
    return _stream(applier, items, start)


def _stream(applier: _Applier, items: Iterable, start: int) -> Iterator:
    for index, item in enumerate(items, start):
        applier._enter_process()
        yield applier.apply(item, index)


__all__: Sequence[str] = ["NormalizedDataset", "normalize_stream", "NO_TISSUE_POLICIES"]
