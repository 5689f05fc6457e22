"""The one place where arrays cross conventions.

At the edges stainlab speaks uint8 ``HxWx3`` RGB NumPy arrays; torch users may hand in float batches
in [0, 1] shaped ``(N, 3, H, W)`` or ``(3, H, W)`` and get the same shape, dtype and device back.
"""

from __future__ import annotations

import numpy as np

from stainlab.errors import InputError


def check_rgb8(image, what: str = "image") -> np.ndarray:
    """Return ``image`` as a C-contiguous uint8 ``HxWx3`` array, or raise :class:`InputError`.

    Only the representation is checked here; reading files (16-bit, alpha, grey...) is ``stainlab.io``'s
    job, which converts with a note before an array ever reaches a transform.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(f"{what}: expected uint8 RGB, got dtype {arr.dtype} "
                         "(read files with stainlab.io.read_image, which scales 16-bit and float data)")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{what}: expected an HxWx3 RGB array, got shape {arr.shape} "
                         "(grey or RGBA files are converted by stainlab.io.read_image)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what}: empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


def is_torch_tensor(obj) -> bool:
    """True for a ``torch.Tensor`` without importing torch when the caller never did."""
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def check_torch_batch(tensor, what: str = "torch input"):
    """A float ``(N,3,H,W)`` view of a float ``(N,3,H,W)`` or ``(3,H,W)`` tensor, and whether it was one
    image; :class:`InputError` for anything else."""
    if not tensor.is_floating_point():
        raise InputError(f"{what}: expected a float tensor in [0, 1], got dtype {tensor.dtype}")
    single = tensor.ndim == 3
    x = tensor.unsqueeze(0) if single else tensor
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"{what}: expected a tensor shaped (N, 3, H, W) or (3, H, W), got {tuple(tensor.shape)}")
    return x, single


def torch_batch_to_rgb8(batch) -> tuple[list[np.ndarray], tuple]:
    """Split a float tensor in [0, 1], ``(N,3,H,W)`` or ``(3,H,W)``, into uint8 HxWx3 arrays.

    Returns the arrays and a token that :func:`rgb8_to_torch_batch` uses to restore shape, dtype and
    device.
    """
    x, single = check_torch_batch(batch)
    u8 = (x.detach().float().clamp(0, 1) * 255).round().to("cpu").byte().permute(0, 2, 3, 1).contiguous()
    return [img.numpy() for img in u8], (single, batch.dtype, batch.device)


def rgb8_to_torch_batch(images: list[np.ndarray], token: tuple):
    """Inverse of :func:`torch_batch_to_rgb8`."""
    import torch

    single, dtype, device = token
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device=device, dtype=dtype) / 255
    return x[0] if single else x
