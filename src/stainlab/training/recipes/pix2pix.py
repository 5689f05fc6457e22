"""pix2pix (Isola et al., "Image-to-image translation with conditional adversarial networks", CVPR 2017).

The paired baseline of paper 002 (Sec. 1, Table 1a through Pix2PixHD / Pyramid Pix2Pix). A U-Net
generator ``G`` and a conditional 70x70 PatchGAN ``D`` that sees the input and the output image
concatenated (6 channels). With ``a`` the source (H&E) and ``b`` its aligned target (IHC)::

    G:  BCE(D(a, G(a)), 1) + lambda_l1 |G(a) - b|_1            (Isola et al., Eq. 4, lambda = 100)
    D:  (BCE(D(a, b), 1) + BCE(D(a, G(a)), 0)) / 2             (Sec. 3.3: D's objective halved)

Adam at 2e-4 with beta1 = 0.5, batch 1 (Sec. 3.3 and 4). The generator is
:class:`stainlab.nets.UNetGenerator` with pix2pix's widths (64 doubling to at most 512 over 7 stride-2
blocks for 256 px), BatchNorm PatchGAN as in pix2pix. Dropout in the generator (pix2pix's noise) is
not used: :class:`~stainlab.nets.UNetGenerator` has none. pix2pix runs its generator with batch
statistics at test time; the exported generator runs in eval mode with BatchNorm statistics averaged
over training batches (:func:`~stainlab.training.recipes.steps.with_precise_batchnorm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stainlab.nets.files import build_network
from stainlab.nets.patchgan import PatchDiscriminator
from stainlab.training.losses import adversarial_loss
from stainlab.training.recipe import Option, Recipe, TrainConfig
from stainlab.training.recipes.steps import PreciseBatchNormExports

ARCH = "unet-generator"


@dataclass
class Pix2PixConfig(TrainConfig):
    ngf: int = 64  # Isola et al., appendix 6.1.1: encoder C64-C128-C256-C512-C512-C512-C512-C512
    # pix2pix's 8 stride-2 blocks take 256 px to 1 px with 4x4 zero-padded convolutions; this generator's
    # 5x5 reflect-padded ones need 2 px at the bottom (run_padded), so 7 blocks for 256 px images
    depth: int = 7
    max_channels: int = 512  # ... widths capped at 512
    ndf: int = 64  # appendix 6.1.2: the 70x70 discriminator C64-C128-C256-C512
    n_layers: int = 3  # ... 3 stride-2 layers
    lambda_l1: float = 100.0  # Sec. 4: lambda = 100
    batch_size: int = 1  # Sec. 4 (batch 1 for most experiments)
    size: int = 256  # Sec. 4: 256x256 images
    lr: float = 2e-4  # Sec. 3.3: Adam, lr 0.0002, beta1 0.5
    steps: int = 200_000  # not given per data set; about 200 epochs of 1000 images (Sec. 4)


TINY = {"steps": 300, "batch_size": 2, "size": 128, "ngf": 8, "depth": 5, "max_channels": 64, "ndf": 8,
        "n_layers": 2, "checkpoint_every": 100, "log_every": 10, "lr": 5e-4, "epoch_steps": 50}


class Pix2Pix(PreciseBatchNormExports, Recipe):
    """Conditional GAN with an L1 term on paired, aligned images (A -> B)."""

    name = "pix2pix"
    config_class = Pix2PixConfig
    needs_pairs = True
    tiny = TINY
    options = (Option("lambda_l1", "weight of the L1 term |G(a) - b| (Sec. 4: lambda = 100)"),
               Option("ngf", "generator base width (appendix 6.1.1)"),
               Option("depth", "stride-2 blocks of the U-Net generator (7 for 256 px images: 2 px at the bottom)"))

    def __init__(self, config: Pix2PixConfig, rng) -> None:
        super().__init__(config, rng)
        self.kwargs = {"ngf": config.ngf, "depth": config.depth, "max_channels": config.max_channels}
        self.generator = build_network(ARCH, self.kwargs).to(self.device).train()
        self.discriminator = PatchDiscriminator(6, config.ndf, config.n_layers, "batch").to(self.device).train()
        self.networks = {"G": self.generator, "D": self.discriminator}
        self.optimizers = {"G": self._adam(self.generator), "D": self._adam(self.discriminator)}

    def step(self, batch):
        source, target = batch["A"], batch["B"]
        fake = self.generator(source)
        self.discriminator.requires_grad_(False)
        terms = {"gan": adversarial_loss(self.discriminator(torch.cat([source, fake], 1)), True, "bce"),
                 "l1": F.l1_loss(fake, target)}
        self.descend(self.optimizers["G"], terms["gan"] + self.config.lambda_l1 * terms["l1"])
        self.discriminator.requires_grad_(True)
        real_score = self.discriminator(torch.cat([source, target], 1))
        fake_score = self.discriminator(torch.cat([source, fake.detach()], 1))
        terms["D"] = 0.5 * (adversarial_loss(real_score, True, "bce") + adversarial_loss(fake_score, False, "bce"))
        self.descend(self.optimizers["D"], terms["D"])
        return {k: float(v.detach()) for k, v in terms.items()}

    def samples(self, batch):
        generator = self.exported(self.generator, "A")  # what the model file will hold
        return [("A", batch["A"]), ("G(A)", generator(batch["A"])), ("B", batch["B"])]

    def exports(self):
        return {"G.safetensors": (self.exported(self.generator, "A"), ARCH, self.kwargs, {"direction": "A->B"})}
