"""The transform a user asks for, in one place for the command line and for scripts.

A method is named in one of three ways, and every command spells them the same:

* ``method="macenko"`` (see ``stainlab methods``) with optional ``params``, fitted on ``references``
  when given (required when the method needs a target);
* a learned model: ``method="unet:run/student.safetensors"``, or ``method="unet", model="run/...``,
  or ``model="unet:run/..."``; it learned its target in training, so a reference is refused rather
  than silently ignored;
* ``fitted="macenko.json"``: a transform saved by ``stainlab fit``, which already holds the method,
  its parameters and its target.

Where a network runs (``device``, ``batch_size``) is asked for apart from the method, because it is not
part of a saved transform (``Transform.run_options``): the same ``-t unet.json`` runs on a GPU or the
CPU. A classical method runs on the CPU whatever the device; asking it for a GPU earns one warning.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from stainlab.errors import InputError, NotFittedError
from stainlab.transforms import registry
from stainlab.transforms.base import Transform

ReadReferences = Callable[[Sequence[str]], list[np.ndarray]]


def method_spec(method: str | None, model: str | None = None) -> str:
    """The ``KIND:PATH`` or method-name spec of :func:`stainlab.load` from ``-m`` and ``--model``."""
    if model:
        kind, colon, path = model.partition(":")
        if colon and kind in registry.learned_kinds():
            if method and method != kind:
                raise InputError(f"--model {model} is a {kind} model; -m {method} asks for another kind")
            return model
        if not method:
            raise InputError(f"--model {model}: add -m KIND or give it as KIND:PATH "
                             f"(KIND: {', '.join(registry.learned_kinds())})")
        if ":" in method:
            raise InputError(f"-m {method} already names its model file; drop --model")
        return f"{method}:{model}"
    if not method:
        raise InputError("choose the method: -m METHOD, -t FITTED.json or --model KIND:PATH")
    return method


def load_fitted(path) -> Transform:
    """A fitted transform from a file written by ``stainlab fit`` (or ``Transform.save``)."""
    transform = registry.load(str(path))
    if not transform.fitted:
        raise NotFittedError(f"{path}: holds an unfitted {transform.name} transform; create it with "
                             "`stainlab fit`")
    return transform


def build_transform(method: str | None = None, model: str | None = None, fitted=None, params: dict | None = None,
                    references: Sequence[str] = (), read: ReadReferences | None = None, device: str | None = None,
                    batch_size: int | None = None) -> Transform:
    """The transform asked for (see the module docstring), fitted on the reference files and folders
    ``references`` read by ``read`` (default: images whole, slides sampled over their tissue), set to
    run on ``device`` in batches of ``batch_size`` (:func:`run_on`; None keeps the defaults: the CPU,
    batches by free memory)."""
    return run_on(_build(method, model, fitted, params, references, read), device, batch_size)


def run_on(transform: Transform, device: str | None = None, batch_size: int | None = None) -> Transform:
    """``transform`` set to run on ``device`` in batches of ``batch_size`` when it is a network; a
    classical method runs on the CPU, with a warning when a GPU or a batch size was asked for."""
    if device is None and batch_size is None:
        return transform
    if hasattr(transform, "run_on"):
        return transform.run_on(device or transform.device, transform.batch_size if batch_size is None else batch_size)
    asked = [f"--{k} {v}" for k, v in (("device", device), ("batch-size", batch_size)) if v not in (None, "cpu")]
    if asked:
        warnings.warn(f"{transform.name} runs on the CPU ({' and '.join(asked)}: for networks only, ignored)")
    return transform


def _build(method, model, fitted, params, references, read) -> Transform:
    """The transform of :func:`build_transform` before it is set where to run."""
    params, references = dict(params or {}), list(references or [])
    if fitted is not None:
        if method or model or params or references:
            raise InputError(f"-t {fitted} already holds the method, its parameters and its reference; "
                             "drop -m/--model/--param/-r")
        return load_fitted(fitted)
    spec = method_spec(method, model)
    transform = registry.load(spec, **params)
    if references:
        if not transform.uses_reference:
            raise InputError(f"{spec}: {transform.name} does not use a reference image (a learned model has "
                             "its target from training); drop -r")
        if read is None:
            from stainlab.wsi.references import read_references as read
        images = read(references)
        try:
            return transform.fit(images)
        except InputError as err:
            raise InputError(f"{', '.join(map(str, references))}: {err}") from None
    if transform.requires_fit:
        raise InputError(f"{transform.name}: needs a reference image; give one with -r REF")
    return transform
