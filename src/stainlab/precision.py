"""Float formats of training: ``fp32``, ``bf16`` or ``fp16`` mixed precision (autocast, with a gradient
scaler for fp16), and :func:`full_precision` for the few computations that lower precision would spoil.

Under autocast the convolutions and matrix products run in bf16/fp16 while the parameters, optimiser
state and gradients stay fp32 (Micikevicius et al., "Mixed precision training", ICLR 2018). fp16 has
too few exponent bits for small gradients, so its losses are multiplied up before the backward pass and
the gradients divided back before the step, skipping steps that overflowed (``torch.amp.GradScaler``);
bf16 has fp32's range and needs no scaler.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import nullcontext

from stainlab.errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")


def full_precision(fn):
    """``fn`` with autocast off and its float tensor arguments in fp32: for variances taken as
    ``E[x^2] - E[x]^2`` (SSIM), logarithms of light (stain separation) and sums of many products (Gram
    matrices), where bf16's 8 bits of mantissa would lose the result."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        import torch  # here, so that importing a wrapped module does not import torch

        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if not tensors or not torch.is_autocast_enabled(tensors[0].device.type):
            return fn(*args, **kwargs)
        widen = lambda a: a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a  # noqa: E731
        with torch.autocast(tensors[0].device.type, enabled=False):
            return fn(*map(widen, args), **{k: widen(v) for k, v in kwargs.items()})

    return wrapped


def check_precision(name: str, device) -> None:
    """:class:`InputError` unless ``device`` can train in ``name``: fp32 anywhere; bf16 on the CPU and on
    CUDA GPUs that have it (compute capability 8.0 and later); fp16 on CUDA GPUs."""
    if name not in PRECISIONS:
        raise InputError(f"precision {name!r}: use {', '.join(PRECISIONS)}")
    if name == "fp32":
        return
    if device.type == "cuda":
        import torch

        if name == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise InputError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16 arithmetic; "
                             "use --precision fp16 or fp32")
        return
    if device.type == "cpu" and name == "bf16":
        import torch

        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            warnings.warn("precision bf16: this CPU has no bf16 instructions (AVX-512 BF16 or AMX), so bf16 is "
                          "emulated here and much slower than fp32 (benchmarks/results/train_throughput.json)",
                          stacklevel=3)
        return
    hint = "bf16 or fp32" if device.type == "cpu" else "fp32"
    raise InputError(f"precision {name}: mixed precision in {name} needs a CUDA GPU, not {device.type}; "
                     f"use --precision {hint}")


class Precision:
    """How one run computes: :meth:`autocast` around forward passes, :meth:`backward` and :meth:`step`
    for each optimiser (scaled in fp16)."""

    def __init__(self, name: str, device) -> None:
        import torch

        check_precision(name, device)
        self.name, self.device = name, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")

    def autocast(self):
        if self.name == "fp32":
            return nullcontext()
        import torch

        return torch.autocast(self.device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[self.name])

    def backward(self, loss) -> None:
        import torch

        with torch.autocast(self.device.type, enabled=False):  # the backward pass outside autocast
            self.scaler.scale(loss).backward()

    def step(self, optimizer) -> None:
        """The optimiser step (skipped in fp16 when a gradient overflowed), then the scale's update."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {"name": self.name, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["name"] != self.name:
            raise InputError(f"the checkpoint was trained in {state['name']}, not {self.name}; resume it with "
                             f"--precision {state['name']} or start a new run folder")
        self.scaler.load_state_dict(state["scaler"])
