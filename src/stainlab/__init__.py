"""stainlab: stain normalization and virtual staining for digital pathology and hematology.

>>> import stainlab
>>> t = stainlab.load("macenko").fit(reference)     # doctest: +SKIP
>>> out = t(image)                                   # doctest: +SKIP

Every method's class is importable from here (``from stainlab import Macenko``); each is imported on
first use, so ``import stainlab`` does not import torch. Docstrings cite the papers stainlab implements
as "paper 000" to "paper 004"; docs/papers.md gives their full references.
"""

import importlib

import stainlab.networks as _networks
from stainlab.errors import InputError, NoTissueError, NoTissueWarning, NotFittedError, StainlabError
from stainlab.transforms import load, methods
from stainlab.transforms import registry as _registry
from stainlab.transforms.augment import StainAugmenter, augment
from stainlab.transforms.pipeline import NormalizedDataset, normalize_stream

__version__ = "0.1.0"

_TARGETS = [*(target for target, _ in _registry._METHODS.values()),
            *map(_networks.kind_transform, _networks.learned_kinds())]
_CLASSES = {cls: module for module, cls in (target.split(":") for target in _TARGETS)}  # class -> module

__all__ = ["load", "methods", "augment", "NormalizedDataset", "normalize_stream", "StainlabError", "InputError",
           "NoTissueError", "NoTissueWarning", "NotFittedError", "__version__", *_CLASSES]


def __getattr__(name: str):
    """A method's class, imported the first time it is asked for."""
    if name not in _CLASSES:
        raise AttributeError(f"module 'stainlab' has no attribute {name!r}")
    cls = getattr(importlib.import_module(_CLASSES[name]), name)
    globals()[name] = cls
    return cls


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLASSES})
