"""Reading published weight files from disk: a path the user gives, or the usual local torch cache.

stainlab never downloads anything at run time. A backbone's weights come from a file the user names,
or from the file's standard name in torch's hub cache (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``), where ``torch.hub`` and TorchVision put them. When the file is in
neither place, :class:`WeightsNotFoundError` names the file and the public address it comes from.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from stainlab.errors import InputError

_TORCH_SUFFIXES = (".pth", ".pt")
_SAFETENSORS_SUFFIX = ".safetensors"


class WeightsNotFoundError(InputError):
    """A weight file that is neither at the given path nor in the local torch cache."""


def torch_cache_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (``TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``)."""
    default_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"
    return Path(os.environ.get("TORCH_HOME", default_home)).expanduser() / "hub" / "checkpoints"


def _candidates(path_or_name, expected_file: str) -> list[Path]:
    if path_or_name is None:
        return [torch_cache_dir() / expected_file]
    given = Path(path_or_name).expanduser()
    if given.parent == Path("."):
        return [given, torch_cache_dir() / given.name]
    return [given]


def _read_state_dict(path: Path) -> dict:
    if path.suffix == _SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in _TORCH_SUFFIXES:
        raise InputError(f"weight file {path}: unknown format {path.suffix!r} "
                         f"(expected one of {', '.join(_TORCH_SUFFIXES + (_SAFETENSORS_SUFFIX,))})")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text advises unpickling it anyway: not for untrusted files
        raise InputError(f"weight file {path}: holds pickled Python objects besides tensors; stainlab reads "
                         "plain state dicts only, so that no code from the file runs") from None
    except Exception as exc:  # a truncated or foreign file: say which one, in one line
        reason = str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"weight file {path} could not be read as a PyTorch state dict ({reason})") from None
    if not isinstance(state, dict):
        raise InputError(f"weight file {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_weights(path_or_name, expected_file: str, origin: str) -> dict:
    """The state dict of a published weight file, read from disk only.

    ``path_or_name``: ``None`` for ``expected_file`` in the torch cache; a bare file name, looked up in
    the working directory and then in the cache; or a path. ``.pth``/``.pt`` files are read with
    ``torch.load(weights_only=True)`` (no pickled code runs), ``.safetensors`` with safetensors.
    ``origin`` is the public address of ``expected_file``, quoted in the error when nothing is found.
    """
    places = _candidates(path_or_name, expected_file)
    for place in places:
        if place.is_file():
            return _read_state_dict(place)
    looked = ", ".join(str(p) for p in places)
    raise WeightsNotFoundError(
        f"weight file {expected_file} not found (looked in: {looked}). stainlab does not download; "
        f"get it from {origin} and put it in {torch_cache_dir()} or pass its path")


def check_fit(expected: dict, found: dict, what: str) -> None:
    """Raise :class:`InputError` unless ``found`` (key -> shape) has exactly the keys and shapes of
    ``expected``, except for BatchNorm's ``num_batches_tracked`` counters, which old published files
    (saved before PyTorch 0.4.1) lack and inference never reads."""
    missing = [key for key in expected if key not in found and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in found if key not in expected]
    wrong = [f"{key} {found[key]} != {shape}" for key, shape in expected.items()
             if key in found and found[key] != shape]
    if missing or unexpected or wrong:
        raise InputError(f"{what}: the weight file does not fit this network "
                         f"(missing keys: {_few(missing)}; unexpected keys: {_few(unexpected)}; "
                         f"wrong shapes: {_few(wrong)})")


def load_into(module, state: dict, what: str) -> None:
    """Load ``state`` into ``module`` strictly (:func:`check_fit`); a tensor with NaN or infinite values
    is refused, so a diverged or damaged network never runs."""
    check_fit({key: tuple(value.shape) for key, value in module.state_dict().items()},
              {key: tuple(value.shape) for key, value in state.items()}, what)
    import torch

    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise InputError(f"{what}: NaN or infinite weights in {_few(broken)}; the network diverged or the file "
                         "is damaged")
    module.load_state_dict(state, strict=False)


def _few(items: list, shown: int = 5) -> str:
    return ", ".join(items[:shown]) + (f" ... ({len(items)} in all)" if len(items) > shown else "") or "none"


def build(factory, weights, expected_file: str, origin: str, seed: int):
    """A network from ``factory()`` in eval mode with published or explicitly random weights.

    ``weights``: ``"random"`` for a seeded random initialisation (an explicit choice, never a fallback);
    otherwise what :func:`load_weights` accepts (``None``: the standard file in the torch cache).
    """
    import torch

    if isinstance(weights, str) and weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = factory()
    else:
        state = load_weights(weights, expected_file, origin)
        module = factory()
        load_into(module, state, expected_file)
    return module.eval()
