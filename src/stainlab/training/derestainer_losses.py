"""DeReStainer's losses (paper 002, Sec. 2.1-2.4 and 3.1) and its paper hyper-parameters.

    L = 2 L_stain + 13 L_content + 5 L_level + 1 L_GAN
    L_stain   = 1 L_H + 1 L_DAB                     L_H = 1 - cos(f_H(DeStainer(I_HE^H)), f_H(DeStainer(I_IHC^H)))
    L_content = 1 L_ssim + 10 L_mae + 2 L_cmp       L_DAB = |DAB(fake) - DAB(real)|_1
    L_level   = focal loss (Lin et al. 2017) of f_level's prediction against the HER2 label y
    L_GAN     = mean over the PatchGANs at 512 and 256 of the pix2pix (cross-entropy) generator loss

``L_mae`` and ``L_DAB`` are mean absolute errors of [-1, 1] images; ``L_ssim = 1 - SSIM`` of the
images mapped to [0, 1] (:func:`stainlab.training.losses.structural_cycle_loss`, paper 003's SSIM term);
``L_cmp = 1 - cos`` of the comparator's pooled features (:func:`stainlab.nets.derestainer.comparator_features`).
A term whose overall weight is zero is not computed (its entry is 0), so the ablations of paper 002's
Table 1b ("w/o L_stain", "w/o L_DAB") need neither the IHC embedding nor the DAB separation, and
``level = 0`` needs no labels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from stainlab.errors import InputError
from stainlab.nets.derestainer import DeReStainerOutput, MultiScalePatchGAN, check_pair, comparator_features
from stainlab.training.losses import adversarial_loss, structural_cycle_loss

NO_LABEL = -1
ABLATIONS = ("full", "no_stain", "no_dab")  # paper 002, Table 1b


@dataclass(frozen=True)
class DeReStainerHyperParams:
    """Paper 002's hyper-parameters (Sec. 2.4 and 3.1)."""

    stain: float = 2.0          # Sec. 3.1: lambda_stain = 2
    h: float = 1.0              # Sec. 3.1: lambda_H = 1 (inside L_stain)
    dab: float = 1.0            # Sec. 3.1: lambda_DAB = 1 (inside L_stain)
    content: float = 13.0       # Sec. 3.1: lambda_content = 13
    ssim: float = 1.0           # Sec. 3.1: lambda_ssim = 1 (inside L_content)
    mae: float = 10.0           # Sec. 3.1: lambda_mae = 10 (inside L_content)
    cmp: float = 2.0            # Sec. 3.1: lambda_cmp = 2 (inside L_content)
    level: float = 5.0          # Sec. 3.1: lambda_level = 5
    gan: float = 1.0            # Sec. 3.1: lambda_GAN = 1
    focal_gamma: float = 2.0    # not given; Lin et al. 2017 (the focal loss paper 002 cites), Sec. 5.1
    learning_rate: float = 1e-5  # Sec. 3.1: AdamW, initial learning rate 1e-5
    crop: int = 512             # Sec. 3.1: trained on 512x512 patches ...
    image_size: int = 1024      # ... of the 1024x1024 BCI images, evaluated at 1024

    def ablation(self, name: str) -> DeReStainerHyperParams:
        """Paper 002 Table 1b: ``"full"``, ``"no_stain"`` (w/o L_stain) or ``"no_dab"`` (w/o L_DAB)."""
        changes = dict(zip(ABLATIONS, ({}, {"stain": 0.0}, {"dab": 0.0})))
        if name not in changes:
            raise InputError(f"unknown DeReStainer ablation {name!r}; known: {', '.join(ABLATIONS)}")
        return replace(self, **changes[name])


PAPER = DeReStainerHyperParams()


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = PAPER.focal_gamma) -> torch.Tensor:
    """Mean multi-class focal loss ``-(1 - p_y)^gamma log p_y`` (Lin et al. 2017, Eq. 5 without alpha);
    ``gamma = 0`` is the cross-entropy."""
    log_p = F.log_softmax(logits, dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
    return (-(1 - log_p.exp()) ** gamma * log_p).mean()


def cosine_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``1 - cos(a_i, b_i)`` for ``(N, D)`` embeddings (paper 002's L_H and L_cmp)."""
    return (1 - F.cosine_similarity(a, b, dim=1)).mean()


def gan_loss(logit_maps: list[torch.Tensor], real: bool) -> torch.Tensor:
    """pix2pix cross-entropy of every patch against ``real``, averaged over the discriminator scales."""
    return torch.stack([adversarial_loss(m, real, kind="bce") for m in logit_maps]).mean()


def check_levels(levels, batch: int, count: int) -> torch.Tensor:
    """HER2 labels as a long tensor ``(batch,)`` with values in ``0 .. count-1``, or :class:`InputError`
    naming what is wrong (no labels at all, images without a label (-1), values out of range)."""
    if levels is None:
        raise InputError("DeReStainer: the HER2-level head is trained (level weight > 0) but no level labels "
                         "were given; pass one level (0-3) per image, or set the level weight to 0")
    labels = torch.as_tensor(levels)
    if labels.shape != (batch,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"DeReStainer: expected {batch} integer HER2 levels, got {tuple(labels.shape)} "
                         f"of {labels.dtype}")
    values = labels.detach().cpu()
    unlabeled = (values == NO_LABEL).nonzero().flatten().tolist()
    if unlabeled:
        raise InputError(f"DeReStainer: images {unlabeled} of the batch have no HER2 level label ({NO_LABEL}) "
                         "but the level head is trained; label them, drop them, or set the level weight to 0")
    if values.min() < 0 or values.max() >= count:
        raise InputError(f"DeReStainer: HER2 levels must be in 0-{count - 1}, got {values.tolist()}")
    return labels.long()


def derestainer_losses(out: DeReStainerOutput, he: torch.Tensor, ihc: torch.Tensor, levels=None, *,
                       discriminator: MultiScalePatchGAN | None = None, comparator=None,
                       params: DeReStainerHyperParams = PAPER) -> dict[str, torch.Tensor]:
    """The generator's loss terms (unweighted) and their weighted sums, by name.

    ``out`` is ``DeReStainer(he, ihc)``; ``levels`` the HER2 labels (needed when ``params.level > 0``);
    ``discriminator`` a :class:`MultiScalePatchGAN` (needed when ``params.gan > 0``); ``comparator``
    a frozen ResNet from :func:`~stainlab.nets.derestainer.her2_comparator` (needed when
    ``params.cmp > 0``). Keys: ``h, dab, stain, ssim, mae, cmp, content, level, gan, total``;
    ``stain`` and ``content`` are the inner weighted sums, ``total`` is the overall loss to minimise.
    """
    check_pair(he, ihc)
    fake = out.fake_ihc
    zero = fake.new_zeros(())
    terms = {
        "h": _h_loss(out) if params.stain * params.h else zero,
        "dab": _dab_loss(out) if params.stain * params.dab else zero,
        "ssim": structural_cycle_loss(fake, ihc) if params.content * params.ssim else zero,
        "mae": F.l1_loss(fake, ihc) if params.content * params.mae else zero,
        "cmp": _comparator_loss(comparator, fake, ihc) if params.content * params.cmp else zero,
        "level": _level_loss(out, levels, params.focal_gamma) if params.level else zero,
        "gan": _generator_gan_loss(discriminator, he, fake) if params.gan else zero,
    }
    terms["stain"] = params.h * terms["h"] + params.dab * terms["dab"]
    terms["content"] = params.ssim * terms["ssim"] + params.mae * terms["mae"] + params.cmp * terms["cmp"]
    terms["total"] = (params.stain * terms["stain"] + params.content * terms["content"]
                      + params.level * terms["level"] + params.gan * terms["gan"])
    return terms


def derestainer_discriminator_loss(discriminator: MultiScalePatchGAN, he: torch.Tensor, ihc: torch.Tensor,
                                   fake_ihc: torch.Tensor) -> torch.Tensor:
    """The multi-scale PatchGAN's loss: real pairs toward 1, generated (detached) toward 0, halved as pix2pix."""
    real = gan_loss(discriminator.judge(he, ihc), real=True)
    fake = gan_loss(discriminator.judge(he, fake_ihc.detach()), real=False)
    return 0.5 * (real + fake)


def _h_loss(out: DeReStainerOutput) -> torch.Tensor:
    """L_H: cosine distance of f_H's embeddings of the H&E's and the real IHC's haematoxylin."""
    return cosine_loss(out.he_embedding, _from_target(out.ihc_embedding))


def _dab_loss(out: DeReStainerOutput) -> torch.Tensor:
    """L_DAB: mean absolute difference of the generated and real IHC's DAB channels."""
    return F.l1_loss(_from_target(out.fake_dab), _from_target(out.real_dab))


def _level_loss(out: DeReStainerOutput, levels, gamma: float) -> torch.Tensor:
    logits = out.level_logits
    labels = check_levels(levels, logits.shape[0], logits.shape[1]).to(logits.device)
    return focal_loss(logits, labels, gamma)


def _generator_gan_loss(discriminator, he: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return gan_loss(_required(discriminator, "discriminator", "gan").judge(he, fake), real=True)


def _from_target(tensor):
    if tensor is None:
        raise InputError("DeReStainer losses: L_H and L_DAB need the real IHC in the forward pass; call "
                         "model(he, ihc), or set the stain weight to 0")
    return tensor


def _required(module, what: str, weight: str):
    if module is None:
        raise InputError(f"DeReStainer losses: no {what} given but the {weight} weight is not 0")
    return module


def _comparator_loss(comparator, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L_cmp: cosine distance of the comparator's pooled features (the real image's without gradient)."""
    comparator = _required(comparator, "comparator", "cmp")
    with torch.no_grad():
        target = comparator_features(comparator, real)
    return cosine_loss(comparator_features(comparator, fake), target)
