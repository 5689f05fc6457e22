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
from stainlab.nets.weights import WeightsNotFoundError, check_fit, load_into

METADATA_KEY = "stainlab"
SUFFIX = ".safetensors"
# Bounds on an architecture header, checked before anything is built: a file from a stranger cannot ask
# for a network of absurd size, nor nest or repeat its settings without end.
MAX_SETTING = 65_536      # channels, blocks, sizes: far above any network here
MAX_SETTINGS = 200        # settings in all, nested ones included
MAX_SETTING_DEPTH = 4
MAX_TEXT = 200            # characters of a text setting


def build_network(arch: str, kwargs: dict) -> nn.Module:
    """A fresh network of architecture ``arch`` (a key of :data:`stainlab.networks.ARCHITECTURES`)."""
    build = networks.resolve(networks.architecture(arch).network)
    try:
        return build(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(f"architecture {arch}: {err}") from None


def check_header(info, what: str) -> dict:
    """``info`` if it is a sane architecture header: ``{"arch": name, "kwargs": {...}, ...}`` with
    settings that are numbers up to :data:`MAX_SETTING`, short texts, booleans or short lists and
    objects of them; :class:`InputError` otherwise."""
    if not isinstance(info, dict) or not isinstance(info.get("arch"), str) or not isinstance(info.get("kwargs", {}), dict):
        raise InputError(f"{what}: corrupt architecture header (expected {{\"arch\": NAME, \"kwargs\": {{...}}}})")
    networks.architecture(info["arch"])
    count = 0
    pending = [(key, value, 1) for key, value in info.get("kwargs", {}).items()]
    while pending:
        key, value, depth = pending.pop()
        count += 1
        if count > MAX_SETTINGS or depth > MAX_SETTING_DEPTH:
            raise InputError(f"{what}: architecture header has more than {MAX_SETTINGS} settings or nests deeper "
                             f"than {MAX_SETTING_DEPTH}")
        if isinstance(value, dict):
            pending += [(f"{key}.{k}", v, depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            pending += [(f"{key}[{i}]", v, depth + 1) for i, v in enumerate(value[:MAX_SETTINGS + 1])]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not abs(value) <= MAX_SETTING:
                raise InputError(f"{what}: architecture setting {key}={value} is out of bounds "
                                 f"(at most {MAX_SETTING:,}); the header asks for a network of absurd size")
        elif isinstance(value, str) and len(value) > MAX_TEXT:
            raise InputError(f"{what}: architecture setting {key} is a text of {len(value):,} characters")
        elif not isinstance(value, (str, bool, type(None))):
            raise InputError(f"{what}: architecture setting {key} has an unusable value")
    return info


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
    try:
        info = json.loads(metadata[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError):
        raise InputError(f"model file {path}: corrupt architecture header (not JSON)") from None
    return check_header(info, f"model file {path}")


def load_model(path) -> tuple[nn.Module, dict]:
    """``(network in eval mode, header info)`` rebuilt from a model file written by :func:`save_model`.

    Untrusted files are checked before memory is spent on them: the header against sane bounds
    (:func:`check_header`), then the network is built on the ``meta`` device (no memory) and its
    parameter names and shapes compared with the tensors the file holds; only then is it built and
    loaded, and NaN weights are refused (:func:`stainlab.nets.weights.load_into`)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    info = read_model_info(path)
    what = f"model file {path}"
    with safe_open(str(path), framework="pt") as handle:
        found = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    with torch.device("meta"):
        skeleton = build_network(info["arch"], info.get("kwargs", {}))
    check_fit({key: tuple(value.shape) for key, value in skeleton.state_dict().items()}, found, what)
    module = build_network(info["arch"], info.get("kwargs", {}))
    load_into(module, load_file(str(path)), what)
    return module.eval(), info


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
