"""pcNet, paper 004's perceptual cycle network (Sjostrand et al., Sec. 4.2, Eq. 7-8).

Two generators ``G: A -> B`` and ``F: B -> A`` and no discriminators. On paired data each generator
minimises, all weights 10 (Sec. 4.2)::

    lambda_cycle |F(G(a)) - a|_1 + lambda_identity |G(b) - b|_1 + lambda_paired |G(a) - b|_1
  + lambda_feat |Gram(phi(G(a))) - Gram(phi(b))|_F^2

(and the mirror terms for ``F``), where ``phi`` is a frozen VGG16 after its fifth max-pool. The paper
trains the two generators alternately; here both descend on the summed loss in one Adam step, the same
objective with half the forward passes. Batch 2, Adam 2e-4, 50,000 iterations (Sec. 6.2).

VGG16 needs the ImageNet weight file ``vgg16-397923af.pth`` (a path, or the torch cache); the setting
``features="random"`` is the explicit offline choice (seeded random VGG16: a weaker texture statistic).
The default, ``features="vgg16"``, reads the ImageNet file and names it when it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stainlab.nets.vgg import vgg16
from stainlab.training.losses import gram_loss
from stainlab.training.recipe import Option, Recipe, TrainConfig
from stainlab.training.recipes.generators import GENERATOR_OPTIONS, build_generator

PHI = "pool5"  # paper 004, Sec. 4.2: "after the fifth max-pooling layer"
IMAGENET = "vgg16"  # features: VGG16's ImageNet weights, vgg16-397923af.pth in the torch cache


@dataclass
class PCNetConfig(TrainConfig):
    batch_size: int = 2  # paper 004, Sec. 6.2
    generator: str = "unet-generator"  # paper 004, Sec. 5.4
    ngf: int = 64
    depth: int = 7
    n_blocks: int = 9
    upsampling: str = "deconv"  # with generator="skip-resnet-generator": "deconv" or "resize"
    features: str = IMAGENET  # VGG16 weights: "vgg16" (ImageNet, torch cache), a path, or "random"
    lambda_cycle: float = 10.0  # paper 004, Sec. 4.2: lambda_i = 10 for all four terms
    lambda_identity: float = 10.0
    lambda_paired: float = 10.0
    lambda_feat: float = 10.0


class PCNet(Recipe):
    """Paper 004's pcNet: two generators, cycle + identity + paired L1 and a VGG16 Gram loss, no GAN."""

    name = "pcnet"
    config_class = PCNetConfig
    needs_pairs = True
    tiny = {"steps": 200, "batch_size": 2, "size": 64, "ngf": 8, "depth": 4, "checkpoint_every": 100,
            "lr": 5e-4, "epoch_steps": 50}
    options = (
        Option("features", "VGG16 weights of the Gram loss: vgg16 (ImageNet, vgg16-397923af.pth in the torch "
                           "cache), random (a seeded random VGG16, offline) or a weight file",
               metavar="vgg16|random|PATH"),
        *GENERATOR_OPTIONS,
        Option("lambda_cycle", "weight of the cycle-consistency L1 (Sec. 4.2)"),
        Option("lambda_identity", "weight of the identity L1 (Sec. 4.2)"),
        Option("lambda_paired", "weight of the paired L1 (Sec. 4.2)"),
        Option("lambda_feat", "weight of the VGG16 Gram-matrix loss after pool5 (Sec. 4.2, Eq. 7)"),
    )

    def __init__(self, config: PCNetConfig, rng) -> None:
        super().__init__(config, rng)
        self.g_ab, self.arch, self.kwargs = build_generator(config, self.device)
        self.g_ba = build_generator(config, self.device)[0]
        weights = None if config.features == IMAGENET else config.features
        self.vgg = vgg16(weights).to(self.device).requires_grad_(False)
        self.networks = {"G_AB": self.g_ab, "G_BA": self.g_ba}
        self.optimizers = {"G": self._adam(self.g_ab, self.g_ba)}

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        return self.vgg.features_at((x + 1) / 2, [PHI])[PHI]

    def step(self, batch):
        c = self.config
        real_a, real_b = batch["A"], batch["B"]
        fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        terms = {
            "cycle": F.l1_loss(self.g_ba(fake_b), real_a) + F.l1_loss(self.g_ab(fake_a), real_b),
            "identity": F.l1_loss(self.g_ab(real_b), real_b) + F.l1_loss(self.g_ba(real_a), real_a),
            "paired": F.l1_loss(fake_b, real_b) + F.l1_loss(fake_a, real_a),
            "feat": gram_loss(self._phi(fake_b), self._phi(real_b)) + gram_loss(self._phi(fake_a), self._phi(real_a)),
        }
        weights = {"cycle": c.lambda_cycle, "identity": c.lambda_identity, "paired": c.lambda_paired,
                   "feat": c.lambda_feat}
        self.descend(self.optimizers["G"], sum(weights[k] * v for k, v in terms.items()))
        return {k: float(v.detach()) for k, v in terms.items()}

    def samples(self, batch):
        self.g_ab.eval(), self.g_ba.eval()
        columns = [("A", batch["A"]), ("G_AB(A)", self.g_ab(batch["A"])), ("B", batch["B"]),
                   ("G_BA(B)", self.g_ba(batch["B"]))]
        self.g_ab.train(), self.g_ba.train()
        return columns

    def exports(self):
        return {"G_AB.safetensors": (self.g_ab, self.arch, self.kwargs, {"direction": "A->B"}),
                "G_BA.safetensors": (self.g_ba, self.arch, self.kwargs, {"direction": "B->A"})}
