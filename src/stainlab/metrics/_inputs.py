"""Input handling shared by every metric: one float convention inside, Python floats or arrays out.

Metrics accept uint8 ``HxWx3`` / ``NxHxWx3`` NumPy arrays (RGB in [0, 255]) and float torch tensors in
[0, 1] shaped ``(3, H, W)`` or ``(N, 3, H, W)``; inside they work on float64 ``(N, H, W, 3)`` arrays on the
0-255 scale, so every formula sees one data range (255).
"""

from __future__ import annotations

import numpy as np

from stainlab.errors import InputError
from stainlab.io.arrays import check_torch_batch, is_torch_tensor


def _torch_to_batch(tensor, what: str) -> tuple[np.ndarray, bool]:
    import torch

    x, single = check_torch_batch(tensor, what)
    arr = x.detach().to("cpu", dtype=torch.float64).permute(0, 2, 3, 1).numpy()
    if not np.isfinite(arr).all() or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise InputError(f"{what}: tensor values must be finite and in [0, 1] "
                         f"(got range [{arr.min():.3g}, {arr.max():.3g}]; map [-1, 1] outputs with (x + 1) / 2)")
    return arr * 255.0, single


def _numpy_to_batch(image, what: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(f"{what}: expected uint8 RGB, got dtype {arr.dtype} "
                         "(float images: pass a torch tensor in [0, 1] or convert to uint8)")
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise InputError(f"{what}: expected an HxWx3 image or NxHxWx3 batch, got shape {arr.shape}")
    if min(arr.shape[:-1]) == 0:
        raise InputError(f"{what}: empty image of shape {arr.shape}")
    single = arr.ndim == 3
    return (arr[None] if single else arr).astype(np.float64), single


def as_batch(image, what: str = "image") -> tuple[np.ndarray, bool]:
    """``(N, H, W, 3)`` float64 on the 0-255 scale, and whether a single image was given."""
    if is_torch_tensor(image):
        return _torch_to_batch(image, what)
    return _numpy_to_batch(image, what)


def as_pair(a, b) -> tuple[np.ndarray, np.ndarray, bool]:
    """Both images of a paired metric as float batches; they must have the same shape."""
    x, single_a = as_batch(a, "a")
    y, single_b = as_batch(b, "b")
    if x.shape != y.shape or single_a != single_b:
        raise InputError(f"paired metric: a and b must have the same shape, got {x.shape[1:] if single_a else x.shape} "
                         f"and {y.shape[1:] if single_b else y.shape}")
    return x, y, single_a


def per_image(values: np.ndarray, single: bool):
    """A Python float for a single image, a float64 array of one value per image for a batch."""
    values = np.asarray(values, dtype=np.float64)
    return float(values[0]) if single else values


def pooled_pixels(images, what: str = "images") -> np.ndarray:
    """All pixels of an image, a batch or a list of images, as one ``(P, 3)`` float64 array (0-255)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError(f"{what}: empty list of images")
        return np.concatenate([pooled_pixels(img, f"{what}[{i}]") for i, img in enumerate(images)])
    batch, _ = as_batch(images, what)
    return batch.reshape(-1, 3)
