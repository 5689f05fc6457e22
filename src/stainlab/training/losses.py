"""Loss terms shared by the recipes, on float NCHW batches in [-1, 1].

- :func:`adversarial_loss`: the least-squares GAN loss the public CycleGAN uses (Mao et al. 2017),
  ``mean((D(x) - 1)^2)`` for real and ``mean(D(x)^2)`` for fake; paper 004's sigmoid + mean output is the
  cross-entropy variant, ``kind="bce"``.
- :func:`structural_cycle_loss`: paper 003 Eq. (4), ``1 - SSIM(x, x_rec)`` per direction (the two
  directions add up to ``2 - SSIM - SSIM``), computed on [0, 1] values.
- :func:`gram_matrix` / :func:`gram_loss`: paper 004 Eq. (8), the style reconstruction loss of Johnson
  et al. 2016: squared Frobenius distance between Gram matrices ``G = F F^T / (C H W)`` of VGG features.
- :class:`ImagePool`: CycleGAN's history of generated images (Shrivastava et al. 2017): the
  discriminator sees, half the time, an older fake instead of the newest one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stainlab.metrics.structural import ssim_torch
from stainlab.precision import full_precision


def adversarial_loss(scores: torch.Tensor, real: bool, kind: str = "lsgan") -> torch.Tensor:
    target = torch.ones_like(scores) if real else torch.zeros_like(scores)
    if kind == "lsgan":
        return F.mse_loss(scores, target)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(scores, target)
    raise ValueError(f"unknown GAN loss {kind!r} (lsgan or bce)")


def structural_cycle_loss(x: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM(x, x_rec)`` of [-1, 1] batches, SSIM taken on [0, 1] (paper 003, Eq. 4)."""
    return 1.0 - ssim_torch((x + 1) / 2, (reconstructed + 1) / 2, data_range=1.0)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, C)``: ``F F^T / (C H W)`` (Johnson et al. 2016, Eq. 3)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


@full_precision  # sums of H x W products: fp32 under autocast
def gram_loss(features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of the Gram matrices, averaged over the batch (paper 004, Eq. 8)."""
    difference = gram_matrix(features) - gram_matrix(target_features)
    return difference.pow(2).sum(dim=(1, 2)).mean()


class ImagePool:
    """The last ``size`` generated batches' images; :meth:`query` returns, per image, the new one or
    (with probability 1/2, once the pool is full) a stored one that the new image then replaces."""

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif rng.random() < 0.5:
                slot = int(rng.integers(self.size))
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"images": [image.cpu() for image in self.images]}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"])
