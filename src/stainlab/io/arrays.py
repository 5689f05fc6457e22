"""The one place where arrays cross conventions.

At the edges stainlab speaks uint8 ``HxWx3`` RGB NumPy arrays. Torch users may hand in batches shaped
``(N, 3, H, W)`` or single images ``(3, H, W)`` and get the same shape, dtype, device and value range
back: float tensors are read in [0, 1] unless ``value_range`` declares another, e.g. ``(-1, 1)`` (the
networks' convention) or ``(0, 255)``; uint8 tensors are 0-255. Two paths take them:

- the torch engine (:func:`map_torch`, :mod:`stainlab.transforms.torch_engine`): the batch is mapped to
  float [0, 1] on its own device **without detaching** (float32, or float64 for float64 input; half and
  bfloat16 are computed in float32 and cast back), so gradients flow to the input; uint8 tensors are
  divided by 255 and the result rounded back to uint8;
- the uint8 NumPy path (:func:`map_rgb8`): each image goes through NumPy on the CPU, so there is no
  gradient there, and a tensor that requires one is refused (detach it, or call inside
  ``torch.no_grad()``) rather than silently cut from the graph.

On both, channels-last ``(N, H, W, 3)`` tensors, NaN or infinite values, values outside the declared
range (beyond a rounding slack of ``RANGE_SLACK`` of its span; refused, never clamped) and meta tensors
are refused with an :class:`InputError`; an empty batch (N = 0) maps to an empty batch of the same shape.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from numba import njit, prange

from stainlab.errors import InputError
from stainlab.threads import serial_kernel_pool

RANGE_SLACK = 1e-6  # float rounding allowed beyond a declared range, as a fraction of its span


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


def torch_layout(tensor, what: str = "torch input"):
    """A ``(N,3,H,W)`` view of a ``(N,3,H,W)`` or ``(3,H,W)`` tensor, and whether it was one image;
    :class:`InputError` for any other shape, naming the permute that fixes a channels-last one."""
    shape = tuple(tensor.shape)
    if tensor.ndim in (3, 4) and shape[-1] == 3 and shape[-3] != 3:
        order = "(0, 3, 1, 2)" if tensor.ndim == 4 else "(2, 0, 1)"
        raise InputError(f"{what}: got channels-last shape {shape}; expected (N, 3, H, W) or (3, H, W) "
                         f"(use tensor.permute{order})")
    single = tensor.ndim == 3
    x = tensor.unsqueeze(0) if single else tensor
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"{what}: expected a tensor shaped (N, 3, H, W) or (3, H, W), got {shape}")
    return x, single


def check_torch_batch(tensor, what: str = "torch input"):
    """A float ``(N,3,H,W)`` view of a float ``(N,3,H,W)`` or ``(3,H,W)`` tensor, and whether it was one
    image; :class:`InputError` for anything else."""
    if not tensor.is_floating_point():
        raise InputError(f"{what}: expected a float tensor in [0, 1], got dtype {tensor.dtype}")
    return torch_layout(tensor, what)


def _value_range(tensor, value_range, what: str) -> tuple[float, float]:
    """The declared ``(low, high)`` of a tensor's values: [0, 1] for floats unless declared, 0-255 for uint8."""
    import torch

    if tensor.dtype == torch.uint8:
        if value_range is not None and tuple(value_range) != (0, 255):
            raise InputError(f"{what}: uint8 tensors are 0-255, got value_range={value_range!r}")
        return 0.0, 255.0
    if not tensor.is_floating_point():
        raise InputError(f"{what}: expected a float or uint8 tensor, got dtype {tensor.dtype}")
    if value_range is None:
        return 0.0, 1.0
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(f"{what}: value_range must be two numbers (low, high), got {value_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InputError(f"{what}: value_range must be finite with low < high, got {value_range!r}")
    return low, high


def _checked_layout(batch, value_range, what: str):
    """The ``(N,3,H,W)`` view of a tensor, its declared range and the token that restores its form."""
    low, high = _value_range(batch, value_range, what)
    x, single = torch_layout(batch, what)
    if batch.device.type == "meta":
        raise InputError(f"{what}: a meta tensor has no values; move it to a real device first")
    if x.shape[0] and (x.shape[2] == 0 or x.shape[3] == 0):
        raise InputError(f"{what}: empty images of shape {tuple(batch.shape)}")
    return x, (single, tuple(batch.shape), batch.dtype, batch.device, low, high)


def _check_values(x, low: float, high: float, what: str) -> None:
    """Refuse non-finite values and values outside ``[low, high]`` (beyond ``RANGE_SLACK``)."""
    import torch

    x = x.detach()
    lo, hi = (float(v) for v in torch.aminmax(x))     # NaN propagates into them, and so does inf
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"{what}: {bad} NaN or infinite values")
    slack = RANGE_SLACK * (high - low)
    if lo < low - slack or hi > high + slack:
        raise InputError(f"{what}: values in [{lo:.6g}, {hi:.6g}] fall outside the declared range "
                         f"[{low:g}, {high:g}] (declare another with value_range=, e.g. (-1, 1) or (0, 255))")


def _checked_numpy_input(batch, value_range, what: str):
    """:func:`_checked_layout`, refusing a tensor that needs a gradient (the NumPy path has none)."""
    import torch

    x, token = _checked_layout(batch, value_range, what)
    if batch.requires_grad and torch.is_grad_enabled():
        raise InputError(f"{what}: requires grad, but this path goes through NumPy and has no gradient "
                         "(pass tensor.detach(), or call inside torch.no_grad())")
    return x, token


def torch_batch_to_rgb8(batch, value_range=None, what: str = "torch input") -> tuple[list[np.ndarray], tuple]:
    """Split a ``(N,3,H,W)`` or ``(3,H,W)`` tensor into uint8 HxWx3 arrays, checked as the module says.

    Returns the arrays (none for an empty batch) and a token that :func:`rgb8_to_torch_batch` uses to
    restore shape, dtype, device and value range.
    """
    import torch

    x, token = _checked_numpy_input(batch, value_range, what)
    if x.shape[0] == 0:
        return [], token
    if batch.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous():
        u8 = _cpu_float32_to_rgb8(x, *token[4:])
        if u8 is not None:
            return list(u8), token
    if batch.dtype != torch.uint8:
        x = _float_to_uint8(x, *token[4:], what)
    u8 = x.permute(0, 2, 3, 1).to("cpu").contiguous()
    return [img.numpy() for img in u8], token


@njit(cache=True, nogil=True, parallel=True)
def _float32_to_rgb8(x, scale, offset, low, high, out):  # pragma: no cover - compiled
    """:func:`_image_to_rgb8` of every image of ``x`` (N, 3, H, W) into ``out`` (N, H, W, 3), in
    parallel; False (``out`` unfinished) when one found a value not finite or outside [low, high]."""
    ok = np.ones(x.shape[0], np.bool_)
    for n in prange(x.shape[0]):
        ok[n] = _image_to_rgb8(x[n], scale, offset, low, high, out[n])
    return ok.all()


@njit(cache=True, nogil=True)
def _image_to_rgb8(x, scale, offset, low, high, out):  # pragma: no cover - compiled
    """``out[y, x, c] = clamp(rint(x[c, y, x] * scale - offset))`` in float32 (the bytes the torch path
    gives) for C-contiguous ``x`` and ``out``; False at a value not finite or outside [low, high] (NaN
    fails too). Each channel plane is read in order and the values out of range are counted, not
    branched on (0.25 -> 0.11 ms a 256 x 256 image)."""
    flat, bad = out.reshape(-1), 0
    for c in range(3):
        plane = x[c].reshape(-1)
        for k in range(plane.shape[0]):
            v = plane[k]
            bad += not (low <= v <= high)
            flat[3 * k + c] = np.uint8(min(max(np.rint(v * scale - offset), np.float32(0)), np.float32(255)))
    return bad == 0


def _to_bytes_args(low: float, high: float) -> tuple:
    """The arguments after the values of :func:`_image_to_rgb8` for values declared in ``[low, high]``:
    ``scale`` and ``offset`` in float32 (as :func:`_float_to_uint8` computes) and the bounds the values
    may reach (the range widened by ``RANGE_SLACK``)."""
    slack, scale = RANGE_SLACK * (high - low), 255 / (high - low)
    return np.float32(scale), np.float32(low * scale), low - slack, high + slack


def _to_floats_args(low: float, high: float) -> tuple:
    """The arguments after the bytes of :func:`_image_to_float32`: step and origin, in float32."""
    return np.float32((high - low) / 255), np.float32(low)


def _cpu_float32_to_rgb8(x, low: float, high: float) -> np.ndarray | None:
    """A contiguous float32 CPU batch as uint8 (N, H, W, 3) in one compiled pass: the values, checks and
    layout of :func:`_float_to_uint8` and the permute after it (a 32 x 256 x 256 batch took about
    30 ms there in five passes); None when a value is out of range or not finite, for the torch path to
    say which."""
    out = np.empty((x.shape[0], x.shape[2], x.shape[3], 3), np.uint8)
    return out if _float32_to_rgb8(x.detach().numpy(), *_to_bytes_args(low, high), out) else None


def _float_to_uint8(x, low: float, high: float, what: str):
    """Float values in ``[low, high]`` -> uint8 0-255 on the same device; refuses non-finite or out of range."""
    import torch

    _check_values(x, low, high, what)
    x = x.detach()
    scale = 255 / (high - low)
    y = x.float() * scale if x.dtype != torch.float64 else x * scale   # a new tensor: the rest works in place
    if low:
        y.sub_(low * scale)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def torch_unit_batch(batch, value_range=None, what: str = "torch input"):
    """A float ``(N,3,H,W)`` tensor in [0, 1] on the batch's device, still in its graph (the torch
    engine's input), and the token that :func:`from_unit_batch` uses; checked as the module says.

    float64 stays float64; every other dtype (uint8, float16, bfloat16, float32) becomes float32.
    """
    import torch

    x, token = _checked_layout(batch, value_range, what)
    low, high = token[4:]
    dtype = torch.float64 if batch.dtype == torch.float64 else torch.float32
    if batch.dtype == torch.uint8:
        return x.to(dtype) / 255.0, token
    if x.shape[0]:
        _check_values(x, low, high, what)
    x = x.to(dtype)
    return x if (low, high) == (0.0, 1.0) else (x - low) / (high - low), token


def from_unit_batch(x, token):
    """Inverse of :func:`torch_unit_batch`: back to the input's shape, dtype and value range (uint8:
    rounded), without leaving the graph."""
    import torch

    single, _shape, dtype, _device, low, high = token
    if dtype == torch.uint8:
        x = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
    else:
        x = (x if (low, high) == (0.0, 1.0) else x * (high - low) + low).to(dtype)
    return x[0] if single else x


def map_torch(fn, batch, value_range=None, what: str = "torch input"):
    """``fn`` (float ``(N,3,H,W)`` in [0, 1] -> the same) on a tensor converted and restored as the module
    says; an empty batch is returned empty without calling ``fn``."""
    x, token = torch_unit_batch(batch, value_range, what)
    if x.shape[0] == 0:
        return rgb8_to_torch_batch([], token)
    return from_unit_batch(fn(x), token)


def rgb8_to_torch_batch(images: list[np.ndarray], token: tuple):
    """Inverse of :func:`torch_batch_to_rgb8`."""
    import torch

    single, shape, dtype, device, low, high = token
    if not images:
        return torch.empty(shape, dtype=dtype, device=device)
    if dtype == torch.float32 and device.type == "cpu":
        x = torch.from_numpy(_rgb8_to_float32(np.stack(images), *_to_floats_args(low, high)))
        return x[0] if single else x
    u8 = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    if dtype == torch.uint8:
        x = u8
    else:   # float64 keeps its precision; the others are made in float32 (exact for k / 255)
        x = u8.to(torch.float64 if dtype == torch.float64 else torch.float32).mul_((high - low) / 255)
        x = x.add_(low) if low else x
    x = x.to(device=device, dtype=dtype)
    return x[0] if single else x


@njit(cache=True, nogil=True, parallel=True)
def _rgb8_to_float32(images, scale, low):  # pragma: no cover - compiled
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W), :func:`_image_to_float32` of each image in parallel."""
    n, h, w = images.shape[0], images.shape[1], images.shape[2]
    out = np.empty((n, 3, h, w), np.float32)
    for k in prange(n):
        _image_to_float32(images[k], scale, low, out[k])
    return out


@njit(cache=True, nogil=True)
def _image_to_float32(image, scale, low, out):  # pragma: no cover - compiled
    """uint8 (H, W, 3) -> ``out`` float32 (3, H, W), both C-contiguous: ``v * scale + low`` in float32
    (as the torch path makes it)."""
    flat = image.reshape(-1)
    for c in range(3):
        plane = out[c].reshape(-1)
        for k in range(plane.shape[0]):
            plane[k] = np.float32(flat[3 * k + c]) * scale + low  # + 0.0 changes nothing


def _image_pool(threads: int, images: int) -> ThreadPoolExecutor:
    """Threads for the images of a batch (at most one an image), each running numba's kernels serially."""
    return serial_kernel_pool(min(threads, images))


def _map_float32_in_threads(fn, batch, value_range, what: str, threads: int):
    """:func:`map_rgb8` of a contiguous float32 CPU batch of several images in ``threads`` threads, each
    image converted to bytes, mapped and converted back into the output by the thread that maps it (its
    bytes are still in that core's cache: 5-10% more tiles a second than converting the whole batch each
    way around the mapping); None for any other batch, or when a value is out of range or not finite
    (the batch path then says which)."""
    import torch

    x, (_single, _shape, dtype, _device, low, high) = _checked_numpy_input(batch, value_range, what)
    if dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous() or x.shape[0] < 2:
        return None
    values, out = x.detach().numpy(), torch.empty(tuple(x.shape), dtype=torch.float32)
    mapped, to_bytes, to_floats = out.numpy(), _to_bytes_args(low, high), _to_floats_args(low, high)

    def one(k: int) -> bool:
        image = np.empty((x.shape[2], x.shape[3], 3), np.uint8)
        if not _image_to_rgb8(values[k], *to_bytes, image):
            return False
        _image_to_float32(np.ascontiguousarray(fn(image)), *to_floats, mapped[k])
        return True

    with _image_pool(threads, x.shape[0]) as pool:
        if not all(list(pool.map(one, range(x.shape[0])))):
            return None
    return out


def rgb8_images(obj, value_range=None, what: str = "image") -> list:
    """The images of a torch tensor as uint8 HxWx3 arrays (as the module says), or ``[obj]`` for
    anything else, which is left to :func:`check_rgb8`; ``value_range`` only applies to tensors."""
    if is_torch_tensor(obj):
        return torch_batch_to_rgb8(obj, value_range, what)[0]
    if value_range is not None:
        raise InputError(f"{what}: value_range applies to torch tensors; NumPy images are uint8 0-255")
    return [obj]


def map_rgb8(fn: Callable[[np.ndarray], np.ndarray], image, value_range=None, what: str = "image",
             threads: int = 1):
    """``fn`` (uint8 HxWx3 -> uint8 HxWx3) on a NumPy image, or on each image of a torch tensor,
    converted and restored as the module says. With ``threads`` above one, the images of a batch run in
    that many threads, each with numba's kernels on its own thread (for an ``fn`` of compiled kernels
    that release the GIL: a tile's kernels are too short to split over cores, the batch is not)."""
    if is_torch_tensor(image):
        mapped = _map_float32_in_threads(fn, image, value_range, what, threads) if threads > 1 else None
        if mapped is not None:
            return mapped
        images, token = torch_batch_to_rgb8(image, value_range, what)
        if threads > 1 and len(images) > 1:
            with _image_pool(threads, len(images)) as pool:
                return rgb8_to_torch_batch(list(pool.map(fn, images)), token)
        return rgb8_to_torch_batch([fn(im) for im in images], token)
    (array,) = rgb8_images(image, value_range, what)
    return fn(array)
