"""CycleGAN (Zhu et al. 2017) and its variants: paper 003's skips + structural cycle loss, paper 004's ccGAN.

Two generators, ``G: A -> B`` and ``F: B -> A``, and two PatchGAN discriminators. The generators
minimise (paper 003 Eq. 1-4; paper 004 Eq. 2-6)::

    lambda_adv (L_gan(D_B(G(a))) + L_gan(D_A(F(b))))               adversarial
  + lambda_cycle (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)                cycle consistency
  + lambda_identity (|G(b) - b|_1 + |F(a) - a|_1)                   identity
  + lambda_ssim (2 - SSIM(F(G(a)), a) - SSIM(G(F(b)), b))           structural cycle (paper 003)
  + lambda_paired (|G(a) - b|_1 + |F(b) - a|_1)                     paired, aligned data only (ccGAN)

and each discriminator ``(L_gan(D(real), 1) + L_gan(D(pooled fake), 0)) / 2``.

Recipes:

- ``cyclegan``: Zhu et al.'s defaults (ResNet generator, 9 blocks; lambda_cycle 10, identity 5; least-squares
  GAN; image pool of 50; Adam 2e-4, beta1 0.5). ``--skips`` swaps in paper 003's generator (Sec. 3.1:
  3 stride-2 convs, 10 blocks, encoder->decoder skips); ``--ssim-cycle`` gives paper 003's loss
  L_adv + 5 L_cycle + 5 L_ssim (Sec. 4.2, no identity term) and its schedule (x0.9 every 2 epochs).
- ``ccgan``: paper 004 Sec. 4.1 (Eq. 5-6): paired data, lambda_1 = 1 for the GAN term and 10 for cycle,
  identity and paired; its U-Net-like generator, BatchNorm PatchGAN with sigmoid (cross-entropy) output;
  Adam 2e-4, batch 4, 50,000 iterations (Sec. 6.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from stainlab.nets.patchgan import PatchDiscriminator
from stainlab.training.losses import ImagePool, adversarial_loss, structural_cycle_loss
from stainlab.training.recipe import Option, Recipe, TrainConfig
from stainlab.training.recipes.generators import GENERATOR_OPTIONS, build_generator


@dataclass
class CycleGANConfig(TrainConfig):
    generator: str = "resnet-generator"  # Zhu et al.; "skip-resnet-generator" (paper 003), "unet-generator" (004)
    ngf: int = 64  # generator base width (Zhu et al.)
    n_blocks: int = 9  # residual blocks (Zhu et al., 256 px); paper 003: 10
    depth: int = 7  # stride-2 blocks of the U-Net-like generator (paper 004, Fig. 8)
    upsampling: str = "deconv"  # paper 003's stride-2 deconvolutions; "resize" against checkerboards
    ndf: int = 64  # PatchGAN base width (pix2pix)
    norm: str = "instance"  # PatchGAN normalisation: instance (CycleGAN) or batch (paper 004)
    gan_loss: str = "lsgan"  # least squares (CycleGAN) or "bce" (paper 004's sigmoid output)
    pool_size: int = 50  # image history for the discriminators (Zhu et al., Sec. 4)
    lambda_adv: float = 1.0
    lambda_cycle: float = 10.0  # Zhu et al., Sec. 7.1
    lambda_identity: float = 5.0  # 0.5 x lambda_cycle (Zhu et al., Sec. 5.2)
    lambda_ssim: float = 0.0  # paper 003: 5 (beta)
    lambda_paired: float = 0.0  # paper 004 ccGAN: 10
    skips: bool = False  # paper 003's generator with skip connections (see VARIANTS)
    ssim_cycle: bool = False  # paper 003's structural cycle loss and schedule (see VARIANTS)


TINY = {"steps": 300, "batch_size": 2, "size": 128, "ngf": 8, "n_blocks": 2, "depth": 4, "ndf": 8,
        "pool_size": 10, "checkpoint_every": 100, "log_every": 10, "lr": 5e-4, "epoch_steps": 50}


class CycleGAN(Recipe):
    """CycleGAN with paper 003's optional skips and structural cycle loss."""

    name = "cyclegan"
    config_class = CycleGANConfig
    tiny = TINY
    # flags that switch on a paper's variant: the settings they imply (explicit settings still win)
    variants = {
        "skips": {"generator": "skip-resnet-generator", "ngf": 32, "n_blocks": 10},  # paper 003, Sec. 3.1
        "ssim_cycle": {"lambda_cycle": 5.0, "lambda_ssim": 5.0, "lambda_identity": 0.0,  # paper 003, Sec. 4.2
                       "schedule": "step", "decay": 0.9, "decay_epochs": 2},
    }
    options = (
        Option("skips", "paper 003's generator: 3 stride-2 convolutions, 10 residual blocks and encoder-decoder "
                        "skips (Sec. 3.1)"),
        Option("ssim_cycle", "paper 003's loss L_adv + 5 L_cycle + 5 L_ssim without the identity term, and its "
                             "schedule: lr x0.9 every 2 epochs (Sec. 4.2)"),
        *GENERATOR_OPTIONS,
        Option("gan_loss", "adversarial loss: least squares (CycleGAN) or cross-entropy (paper 004)", ("lsgan", "bce")),
        Option("lambda_adv", "weight of the adversarial terms"),
        Option("lambda_cycle", "weight of the cycle-consistency L1 (Zhu et al., Sec. 7.1)"),
        Option("lambda_identity", "weight of the identity L1 (Zhu et al., Sec. 5.2)"),
        Option("lambda_ssim", "weight of paper 003's structural cycle loss 2 - SSIM - SSIM (Eq. 4)"),
        Option("lambda_paired", "weight of paper 004's paired L1 |G(a) - b| (aligned pairs only, Eq. 5)"),
    )

    def __init__(self, config: CycleGANConfig, rng) -> None:
        super().__init__(config, rng)
        self.g_ab, self.arch, self.kwargs = build_generator(config, self.device)
        self.g_ba = build_generator(config, self.device)[0]
        self.d_a, self.d_b = (PatchDiscriminator(ndf=config.ndf, norm=config.norm).to(self.device).train()
                              for _ in range(2))
        self.networks = {"G_AB": self.g_ab, "G_BA": self.g_ba, "D_A": self.d_a, "D_B": self.d_b}
        self.optimizers = {"G": self._adam(self.g_ab, self.g_ba), "D": self._adam(self.d_a, self.d_b)}
        self.pool_a, self.pool_b = ImagePool(config.pool_size), ImagePool(config.pool_size)

    def step(self, batch):
        c = self.config
        real_a, real_b = batch["A"], batch["B"]
        fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        rec_a, rec_b = self.g_ba(fake_b), self.g_ab(fake_a)
        for d in (self.d_a, self.d_b):
            d.requires_grad_(False)
        terms = {
            "adv": adversarial_loss(self.d_b(fake_b), True, c.gan_loss)
                   + adversarial_loss(self.d_a(fake_a), True, c.gan_loss),
            "cycle": F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b),
        }
        if c.lambda_identity:
            terms["identity"] = F.l1_loss(self.g_ab(real_b), real_b) + F.l1_loss(self.g_ba(real_a), real_a)
        if c.lambda_ssim:
            terms["ssim"] = structural_cycle_loss(real_a, rec_a) + structural_cycle_loss(real_b, rec_b)
        if c.lambda_paired:
            terms["paired"] = F.l1_loss(fake_b, real_b) + F.l1_loss(fake_a, real_a)
        weights = {"adv": c.lambda_adv, "cycle": c.lambda_cycle, "identity": c.lambda_identity,
                   "ssim": c.lambda_ssim, "paired": c.lambda_paired}
        self.descend(self.optimizers["G"], sum(weights[k] * v for k, v in terms.items()))
        for d in (self.d_a, self.d_b):
            d.requires_grad_(True)
        terms["D"] = (self._discriminator_loss(self.d_b, real_b, self.pool_b.query(fake_b, self.rng))
                      + self._discriminator_loss(self.d_a, real_a, self.pool_a.query(fake_a, self.rng)))
        self.descend(self.optimizers["D"], terms["D"])
        return {k: float(v.detach()) for k, v in terms.items()}

    def _discriminator_loss(self, d, real, fake):
        kind = self.config.gan_loss
        return 0.5 * (adversarial_loss(d(real), True, kind) + adversarial_loss(d(fake.detach()), False, kind))

    def samples(self, batch):
        generators = (self.g_ab, self.g_ba)
        for g in generators:
            g.eval()
        fake_b, fake_a = self.g_ab(batch["A"]), self.g_ba(batch["B"])
        columns = [("A", batch["A"]), ("G_AB(A)", fake_b), ("G_BA(G_AB(A))", self.g_ba(fake_b)),
                   ("B", batch["B"]), ("G_BA(B)", fake_a), ("G_AB(G_BA(B))", self.g_ab(fake_a))]
        for g in generators:
            g.train()
        return columns

    def exports(self):
        return {"G_AB.safetensors": (self.g_ab, self.arch, self.kwargs, {"direction": "A->B"}),
                "G_BA.safetensors": (self.g_ba, self.arch, self.kwargs, {"direction": "B->A"})}

    def extra_state(self):
        return {"pool_a": self.pool_a.state_dict(), "pool_b": self.pool_b.state_dict()}

    def load_extra_state(self, state):
        self.pool_a.load_state_dict(state["pool_a"])
        self.pool_b.load_state_dict(state["pool_b"])


@dataclass
class CCGANConfig(CycleGANConfig):
    generator: str = "unet-generator"  # paper 004, Sec. 5.4, Fig. 8
    norm: str = "batch"  # paper 004, Sec. 5.4, Fig. 9
    gan_loss: str = "bce"  # paper 004: sigmoid + mean output
    pool_size: int = 0  # paper 004 does not use an image history
    lambda_adv: float = 1.0  # paper 004, Sec. 4.1: lambda_1 = 1 ...
    lambda_cycle: float = 10.0  # ... lambda_i = 10 for i = 2, 3, 4
    lambda_identity: float = 10.0
    lambda_paired: float = 10.0


class CCGAN(CycleGAN):
    """Paper 004's conditional CycleGAN: CycleGAN plus an L1 loss on paired, aligned images."""

    name = "ccgan"
    config_class = CCGANConfig
    needs_pairs = True
