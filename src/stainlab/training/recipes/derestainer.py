"""``stainlab train derestainer``: H&E -> IHC with DeReStainer (paper 002, Sec. 2.4 and 3.1).

Each step draws paired H&E (``A``) / IHC (``B``) crops with their HER2 levels and takes one AdamW step
of the generator on ``L = 2 L_stain + 13 L_content + 5 L_level + 1 L_GAN`` (the terms in
:mod:`stainlab.training.derestainer_losses`), then one of the multi-scale PatchGAN on its pix2pix loss.

- Settings default to paper 002's values: the loss weights of Sec. 3.1, AdamW with lr 1e-5, 512 crops
  of the 1024 BCI images (``size``), the generator and discriminator widths of
  :data:`stainlab.nets.derestainer.SIZES` ``"paper"``. ``ablation`` = ``full``, ``no_stain`` or
  ``no_dab`` gives the rows of Table 1b.
- ``comparator``: the model file of a ``stainlab train comparator`` run (a ResNet HER2 classifier,
  frozen) whose features give ``L_cmp``. There is no default, as the paper's comparator is trained on
  the user's IHC images; ``"none"`` drops ``L_cmp`` (its weight becomes 0) with a warning.
- Every image needs its HER2 level while the level head is trained (``lambda_level > 0``): the BCI
  layout gives them (:meth:`stainlab.training.TrainingData.from_folder`).

The paper states neither the batch size nor the number of steps; batch 4 and 50,000 steps are ours.
The model file ``derestainer.safetensors`` is loaded by ``stainlab.load("derestainer:PATH")``; its
BatchNorm statistics are averaged over batches of training H&E crops
(:func:`~stainlab.training.recipes.steps.with_precise_batchnorm`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch

from stainlab.errors import InputError
from stainlab.nets.derestainer import SIZES, DeReStainer, MultiScalePatchGAN
from stainlab.training.derestainer_losses import (
    ABLATIONS,
    PAPER,
    DeReStainerHyperParams,
    derestainer_discriminator_loss,
    derestainer_losses,
)
from stainlab.training.recipe import Option, Recipe, TrainConfig
from stainlab.training.recipes.comparator import load_classifier
from stainlab.training.recipes.steps import (
    LEVELS_HINT,
    PreciseBatchNormExports,
    check_labelled,
)

FILE = "derestainer.safetensors"
NO_COMPARATOR = "none"
_PAPER_SIZE = SIZES["paper"]


@dataclass
class DeReStainerConfig(TrainConfig):
    # -- data and optimiser (paper 002, Sec. 3.1)
    size: int = PAPER.crop  # "trained on 512 x 512 patches" of the 1024 x 1024 images
    lr: float = PAPER.learning_rate  # AdamW, initial learning rate 1e-5
    # -- networks (Sec. 3.1 gives block counts; widths are ours, see stainlab.nets.derestainer)
    base_channels: int = _PAPER_SIZE.base_channels
    n_blocks: int = _PAPER_SIZE.n_blocks  # "9 modified ResNet blocks"
    ndf: int = _PAPER_SIZE.ndf
    disc_layers: int = _PAPER_SIZE.disc_layers
    scales: int = 2  # Sec. 2.4: multi-scale PatchGAN "in resolution of 512 and 256"
    # -- loss weights (Sec. 3.1)
    lambda_stain: float = PAPER.stain
    lambda_h: float = PAPER.h
    lambda_dab: float = PAPER.dab
    lambda_content: float = PAPER.content
    lambda_ssim: float = PAPER.ssim
    lambda_mae: float = PAPER.mae
    lambda_cmp: float = PAPER.cmp
    lambda_level: float = PAPER.level
    lambda_gan: float = PAPER.gan
    focal_gamma: float = PAPER.focal_gamma  # not given; Lin et al.'s gamma = 2
    ablation: str = "full"  # Table 1b: "full", "no_stain" (w/o L_stain) or "no_dab" (w/o L_DAB)
    comparator: str = ""  # model file of `stainlab train comparator` (Sec. 3.1), or "none" (no L_cmp)


# CPU-sized runs; lr 1e-3 as the paper's 1e-5 moves little in a few hundred steps
TINY = {"steps": 300, "batch_size": 2, "size": 128, "lr": 1e-3, "base_channels": 8, "n_blocks": 2, "ndf": 8,
        "disc_layers": 2, "checkpoint_every": 100, "log_every": 10, "epoch_steps": 50}


def hyper_params(config: DeReStainerConfig) -> DeReStainerHyperParams:
    """The loss weights of ``config`` after its ablation, with ``L_cmp`` off when there is no comparator."""
    params = DeReStainerHyperParams(
        stain=config.lambda_stain, h=config.lambda_h, dab=config.lambda_dab, content=config.lambda_content,
        ssim=config.lambda_ssim, mae=config.lambda_mae, cmp=config.lambda_cmp, level=config.lambda_level,
        gan=config.lambda_gan, focal_gamma=config.focal_gamma, learning_rate=config.lr, crop=config.size)
    params = params.ablation(config.ablation)
    if config.comparator == NO_COMPARATOR and params.cmp:
        warnings.warn("derestainer: no comparator (comparator=none), so L_cmp is left out (lambda_cmp = 0); "
                      "paper 002 trains with one (`stainlab train comparator`)", stacklevel=2)
        params = replace(params, cmp=0.0)
    return params


def load_comparator(path: str, device: torch.device):
    """The frozen HER2 classifier of a comparator run's model file."""
    if not path:
        raise InputError("derestainer needs a comparator for L_cmp (paper 002, Sec. 3.1): train one with "
                         "`stainlab train comparator` and pass --comparator RUN/classifier.safetensors, "
                         "or --comparator none to train without L_cmp")
    return load_classifier(path).to(device).requires_grad_(False)


class DeReStainerRecipe(PreciseBatchNormExports, Recipe):
    """DeReStainer generator + multi-scale PatchGAN, AdamW, on paired H&E/IHC crops with HER2 levels."""

    name = "derestainer"
    config_class = DeReStainerConfig
    needs_pairs = True
    tiny = TINY
    options = (
        Option("comparator", "the HER2 classifier of `stainlab train comparator` whose features give L_cmp "
                             "(Sec. 3.1), or none to train without L_cmp", metavar="FILE|none"),
        Option("ablation", "Table 1b: the full model, without L_stain or without L_DAB", ABLATIONS),
        Option("lambda_stain", "weight of L_stain (Sec. 3.1)"),
        Option("lambda_content", "weight of L_content (Sec. 3.1)"),
        Option("lambda_level", "weight of the HER2-level focal loss (Sec. 3.1; 0 trains without levels)"),
        Option("lambda_gan", "weight of L_GAN (Sec. 3.1)"),
    )

    def __init__(self, config: DeReStainerConfig, rng) -> None:
        super().__init__(config, rng)
        self.params = hyper_params(config)
        self.comparator = load_comparator(config.comparator, self.device) if self.params.cmp else None
        self.generator = DeReStainer(config.base_channels, config.n_blocks).to(self.device).train()
        self.discriminator = MultiScalePatchGAN(ndf=config.ndf, n_layers=config.disc_layers,
                                                scales=config.scales).to(self.device).train()
        self.networks = {"G": self.generator, "D": self.discriminator}
        self.optimizers = {key: torch.optim.AdamW(net.parameters(), lr=config.lr)
                           for key, net in self.networks.items()}

    def sampler(self, data, run_dir):
        if self.params.level:
            check_labelled(data, "derestainer", "the HER2-level head (lambda_level > 0, paper 002 Sec. 2.2) "
                           f"needs a level per image: {LEVELS_HINT}, or set lambda_level=0")
        return super().sampler(data, run_dir)

    def step(self, batch):
        he, ihc = batch["A"], batch["B"]
        out = self.generator(he, ihc)
        self.discriminator.requires_grad_(False)
        terms = derestainer_losses(out, he, ihc, batch.get("level"), discriminator=self.discriminator,
                                   comparator=self.comparator, params=self.params)
        self.descend(self.optimizers["G"], terms["total"])
        self.discriminator.requires_grad_(True)
        terms["D"] = derestainer_discriminator_loss(self.discriminator, he, ihc, out.fake_ihc)
        self.descend(self.optimizers["D"], terms["D"])
        return {key: float(value.detach()) for key, value in terms.items()}

    def samples(self, batch):
        generator = self.exported(self.generator, "A")  # what the model file will hold
        return [("H&E", batch["A"]), ("DeReStainer", generator.generate(batch["A"])), ("IHC", batch["B"])]

    def exports(self):
        info = {"direction": "H&E->IHC", "ablation": self.config.ablation}
        return {FILE: (self.exported(self.generator, "A"), "derestainer", self.generator.config, info)}

