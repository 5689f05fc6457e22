"""Model files written by stainlab's training: safetensors weights that carry their own architecture.

A model file is a ``.safetensors`` file whose header metadata holds, under the key ``stainlab``, a JSON
object ``{"arch": NAME, "kwargs": {...}, ...}``: the architecture's name in the network registry
(:data:`stainlab.networks.ARCHITECTURES`), its constructor arguments and whatever the trainer adds
(recipe, direction, data range). So :func:`load_model` rebuilds the network from the file alone, with
no code or config beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

import stainlab.networks as networks
from stainlab.errors import InputError
from stainlab.io.atomic import atomic_path
from stainlab.nets.weights import WeightsNotFoundError, load_into

METADATA_KEY = "stainlab"
SUFFIX = ".safetensors"


def build_network(arch: str, kwargs: dict) -> nn.Module:
    """A fresh network of architecture ``arch`` (a key of :data:`stainlab.networks.ARCHITECTURES`)."""
    build = networks.resolve(networks.architecture(arch).network)
    try:
        return build(**kwargs)
    except TypeError as err:
        raise InputError(f"architecture {arch}: {err}") from None


def save_model(path, module: nn.Module, arch: str, kwargs: dict, **info) -> Path:
    """Write ``module``'s weights and ``{"arch", "kwargs", **info}`` to ``path`` (.safetensors), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != SUFFIX:
        raise InputError(f"{path}: a model file must end in {SUFFIX}")
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    header = json.dumps({"arch": arch, "kwargs": kwargs, **info})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: header})
    return path


def read_model_info(path) -> dict:
    """The JSON header of a stainlab model file (raises :class:`InputError` for foreign files)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"model file {path} not found (train one with `stainlab train`)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # a truncated file or not safetensors at all
        raise InputError(f"model file {path} could not be read as safetensors: {err}") from None
    if METADATA_KEY not in metadata:
        raise InputError(f"{path}: a safetensors file without stainlab's architecture header; "
                         f"it was not written by `stainlab train`")
    return json.loads(metadata[METADATA_KEY])


def load_model(path) -> tuple[nn.Module, dict]:
    """``(network in eval mode, header info)`` rebuilt from a model file written by :func:`save_model`."""
    from safetensors.torch import load_file

    info = read_model_info(path)
    module = build_network(info["arch"], info.get("kwargs", {}))
    load_into(module, load_file(str(path)), f"model file {path}")
    return module.eval(), info


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
