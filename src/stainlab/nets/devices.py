"""Torch devices named by users (``--device cuda``), checked before any work with a plain reason, and the
memory a batch may take on them."""

from __future__ import annotations

import psutil
import torch

from stainlab.errors import InputError


def torch_device(name) -> torch.device:
    """``torch.device(name)`` once it is known to work here: a misspelt name, CUDA on a torch built
    without it or on a machine without a GPU, a GPU index that does not exist, or any backend that cannot
    hold a tensor is an :class:`InputError` that says which and what to use instead."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"device {name!r}: not a torch device name (use cpu, cuda, cuda:1, mps ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(f"device {name}: {why}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name}: there are {torch.cuda.device_count()} CUDA GPU(s) here, numbered from 0")
    try:
        torch.zeros(1, device=device)
    except (RuntimeError, NotImplementedError, AssertionError):
        raise InputError(f"device {name}: not available on this machine; use --device cpu") from None
    return device


def free_memory(device: torch.device) -> int:
    """Bytes a batch may still take on ``device``: the free memory of a CUDA GPU
    (``torch.cuda.mem_get_info``), the available RAM otherwise (CPU, and MPS, which shares it)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available
