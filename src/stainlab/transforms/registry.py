"""Method names, their classes, and ``stainlab.load``.

Classes are imported on first use, so ``import stainlab`` stays light and a method whose optional
dependency is missing fails only when asked for. The learned kinds (``"KIND:PATH"``) and the transforms
that run them come from the network registry, :mod:`stainlab.networks`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import stainlab.networks as networks
from stainlab.errors import InputError, StainlabError
from stainlab.transforms.base import FORMAT, FORMAT_VERSION, Transform
from stainlab.transforms.checks import MAX_ITEMS

MAX_SAVED_BYTES = 1 << 30  # a saved transform is numbers and at most one embedded reference image

# name -> ("module:Class", preset keyword arguments)
_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "reinhard": ("stainlab.transforms.reinhard:Reinhard", {}),
    "reinhard-masked": ("stainlab.transforms.reinhard:Reinhard", {"mask": True}),
    "reinhard-split": ("stainlab.transforms.reinhard_split:ReinhardSplit", {}),
    "macenko": ("stainlab.transforms.macenko:Macenko", {}),
    "vahadane": ("stainlab.transforms.vahadane:Vahadane", {}),
    "ruifrok": ("stainlab.transforms.ruifrok:Ruifrok", {}),
    "linear-ot": ("stainlab.transforms.optimal_transport:LinearOT", {}),
    "histogram": ("stainlab.transforms.histogram:HistogramMatching", {}),
    "colorbalance": ("stainlab.transforms.colorbalance:ColorBalance", {}),
    "background": ("stainlab.transforms.background:BackgroundAffine", {}),
    "grayscale": ("stainlab.transforms.grayscale:Grayscale", {}),
    "augment": ("stainlab.transforms.augment:StainAugmenter", {}),
    "nct": ("stainlab.transforms.nct:NeuralColorTransfer", {}),
}
# Learned kinds (stainlab.networks) need their weight file: loaded as "KIND:PATH" (or from a saved .json),
# never by bare name, so they stay out of names() and the default method lists of the harness and the demo.


def _class_of(name: str) -> tuple[type[Transform], dict[str, Any]]:
    """The class and preset of a method name or a learned kind (a transform that runs several kinds
    takes the kind as its ``kind`` parameter)."""
    if name in _METHODS:
        target, preset = _METHODS[name]
        return networks.resolve(target), dict(preset)
    if name in networks.learned_kinds():
        cls = networks.resolve(networks.kind_transform(name))
        return cls, ({"kind": name} if "kind" in inspect.signature(cls).parameters else {})
    raise InputError(f"unknown method {name!r}; known: {', '.join(sorted(_METHODS))}; learned (with a weight "
                     f"file): {', '.join(f'{k}:PATH' for k in sorted(networks.learned_kinds()))}")


def names() -> list[str]:
    """Every registered method name, without importing any method."""
    return list(_METHODS)


def learned_kinds() -> list[str]:
    """The kinds of learned model, each loaded as ``KIND:PATH``."""
    return networks.learned_kinds()


def normalizers() -> list[str]:
    """The method names that normalize out of the box: every deterministic method (augmentation is
    random) whose defaults need no weight file (a method that does is run by asking for it)."""
    return [name for name in names() if _class_of(name)[0].deterministic and not _class_of(name)[0].needs_weights]


def methods() -> dict[str, str]:
    """Every method name with a one-line description (the first line of its docstring), then every
    learned form ``"KIND:PATH"`` with what it is and the model file it needs."""
    out = {}
    for name in names():
        try:
            cls, preset = _class_of(name)
        except ImportError as err:  # an optional dependency is missing: list the method, say why
            out[name] = f"(unavailable: {err})"
            continue
        line = (cls.__doc__ or "").strip().splitlines()[0]
        out[name] = line + (f" [{', '.join(f'{k}={v}' for k, v in preset.items())}]" if preset else "")
    return out | {f"{kind}:PATH": networks.describe(kind) for kind in learned_kinds()}


def create(name: str, **params) -> Transform:
    """A new, unfitted transform by method name."""
    cls, preset = _class_of(name)
    preset.update(params)
    try:
        return cls(**preset)
    except TypeError as err:
        raise InputError(f"{name}: {err}") from None


def from_dict(data: dict[str, Any], source: str = "fitted transform") -> Transform:
    """Rebuild a transform from :meth:`Transform.to_dict` output."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{source}: not a stainlab fitted-transform file")
    Transform.check_saved(data, source)
    if data.get("version", 0) > FORMAT_VERSION:
        raise InputError(f"{source}: written by a newer stainlab (format {data['version']}); upgrade")
    try:
        t = create(data["method"], **data.get("params", {}))
        if data.get("state") is not None:
            t._set_state(data["state"])
            t._fitted = True
    except (KeyError, TypeError, ValueError) as err:
        # imported here, not at the top: stainlab.nets pulls in torch
        from stainlab.nets.weights import WeightsNotFoundError

        if isinstance(err, WeightsNotFoundError):  # the file is sound; the weight file it names is not
            raise WeightsNotFoundError(f"{source}: {err}") from None
        raise InputError(f"{source}: corrupt fitted-transform file ({err})") from None
    return t


def _read_saved(path: Path) -> dict:
    """The JSON of a saved transform, refused before parsing when it is larger than any saved transform
    can be or lists more items than :data:`~stainlab.transforms.checks.MAX_ITEMS` (counted by its commas,
    which base64 images do not contain), and refused cleanly when nested deeper than the parser goes."""
    size = path.stat().st_size
    if size > MAX_SAVED_BYTES:
        raise InputError(f"{path}: {size:,} bytes is larger than any fitted transform ({MAX_SAVED_BYTES:,} at most)")
    try:
        text = path.read_text(encoding="utf-8")
        if text.count(",") > MAX_ITEMS:
            raise InputError(f"{path}: corrupt fitted-transform file (over {MAX_ITEMS:,} items)")
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{path}: corrupt fitted-transform file (nested too deep)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read fitted transform ({err})") from None


def load(spec: str | Path, **params) -> Transform:
    """A transform from a method name (``"macenko"``), a learned method with its weight file
    (``"stainnet:model.pth"``) or a fitted ``.json`` written by ``save``.

    Keyword arguments set method parameters (``stainlab.load("reinhard", mask=True)``).
    """
    kind, colon, model = str(spec).partition(":")
    if kind in learned_kinds():
        if not colon or not model:
            raise InputError(f"{kind} needs its weight file: load it as '{kind}:PATH'")
        return create(kind, model=model, **params)
    path = Path(spec)
    if str(spec).endswith(".json") or (path.suffix and path.exists()):
        if not path.is_file():
            raise InputError(f"{path}: fitted-transform file not found")
        data = _read_saved(path)
        if params:
            raise InputError(f"{path}: parameters are stored in the file; pass none")
        return from_dict(data, str(path))
    if not isinstance(spec, str):
        raise StainlabError(f"cannot load a transform from {spec!r}")
    return create(spec, **params)
