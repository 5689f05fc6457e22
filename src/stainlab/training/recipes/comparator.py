"""``stainlab train comparator``: a ResNet classifier of the HER2 level of IHC images (paper 002).

Paper 002, Sec. 3.1: "The comparator was a pre-trained ResNet 50 on IHC images, which was trained using a
classification task on IHC levels" (0, 1+, 2+, 3+); its features give DeReStainer's ``L_cmp``. Sec. 3.2
scores generated images with "a pre-trained ResNet-50 classifier on IHC images different from" the
comparator: the same recipe, trained again with another seed (and, if wished, backbone), is that
separate evaluation classifier (``stainlab evaluate --classifier``).

The recipe reads the IHC images (domain ``B`` of paired BCI-layout data) with their level labels and
minimises the cross-entropy of the 4-way classifier. The paper gives neither optimiser nor crop for
it; Adam at 1e-4 (the usual fine-tuning rate) and 512 crops (the size DeReStainer's ``L_cmp`` judges)
are our choices. The model file holds the whole classifier (architecture ``her2-classifier``), its
BatchNorm statistics averaged over batches of training crops (:func:`~stainlab.training.recipes.steps.
with_precise_batchnorm`: short runs otherwise export lagging running averages and classify worse).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stainlab.errors import InputError
from stainlab.nets.derestainer import HER2_LEVEL_COUNT, her2_comparator
from stainlab.nets.files import load_model
from stainlab.training.recipe import Option, Recipe, TrainConfig
from stainlab.training.recipes.steps import (
    LEVELS_HINT,
    PreciseBatchNormExports,
    check_labelled,
)

FILE = "classifier.safetensors"
ARCH = "her2-classifier"


def load_classifier(path):
    """The HER2 classifier network of a comparator run's model file, in eval mode."""
    network, info = load_model(path)
    if info["arch"] != ARCH:
        raise InputError(f"{path} holds a {info['arch']} network, not a HER2 classifier (`stainlab train "
                         "comparator` writes one)")
    return network


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Network images in [-1, 1] -> the [0, 1] the ResNet takes."""
    return (images + 1) / 2


@dataclass
class ComparatorConfig(TrainConfig):
    arch: str = "resnet50"  # paper 002, Sec. 3.1: ResNet 50 ("resnet18" for small runs)
    backbone_weights: str = "random"  # "random" or an ImageNet file of the backbone (paper 002: "pre-trained")
    levels: int = HER2_LEVEL_COUNT  # HER2 levels 0, 1+, 2+, 3+ (paper 002, Sec. 1)
    size: int = 512  # crops of the IHC images (not given; DeReStainer's L_cmp judges 512 crops)
    lr: float = 1e-4  # not given; Adam's usual fine-tuning rate
    batch_size: int = 8  # not given


TINY = {"arch": "resnet18", "steps": 150, "batch_size": 8, "size": 64, "lr": 1e-3, "checkpoint_every": 50,
        "log_every": 10, "epoch_steps": 25}


class Comparator(PreciseBatchNormExports, Recipe):
    """Cross-entropy training of a ResNet HER2-level classifier on labelled IHC images."""

    name = "comparator"
    config_class = ComparatorConfig
    tiny = TINY
    options = (
        Option("arch", "the ResNet backbone: resnet50 (Sec. 3.1) or resnet18 (small runs)",
               metavar="resnet50|resnet18"),
        Option("backbone_weights", "random, or an ImageNet weight file of the backbone (the paper's is "
                                   "pre-trained)", metavar="random|PATH"),
    )

    def __init__(self, config: ComparatorConfig, rng) -> None:
        super().__init__(config, rng)
        seed = int(rng.integers(2**31))
        self.classifier = her2_comparator(config.arch, config.levels, config.backbone_weights, seed)
        self.classifier.to(self.device).train()
        self.networks = {"classifier": self.classifier}
        self.optimizers = {"classifier": torch.optim.Adam(self.classifier.parameters(), lr=config.lr)}

    def sampler(self, data, run_dir):
        check_labelled(data, "comparator", f"it learns the HER2 level of IHC images: {LEVELS_HINT}")
        return super().sampler(data, run_dir)

    def step(self, batch):
        logits = self.classifier(to_unit(batch["B"]))
        loss = F.cross_entropy(logits, batch["level"])
        self.descend(self.optimizers["classifier"], loss)
        accuracy = (logits.detach().argmax(1) == batch["level"]).float().mean()
        return {"ce": float(loss.detach()), "accuracy": float(accuracy)}

    def samples(self, batch):
        return [("IHC", batch["B"])]

    def exports(self):
        kwargs = {"arch": self.config.arch, "levels": self.config.levels}
        classifier = self.exported(self.classifier, "B", to_unit)
        return {FILE: (classifier, ARCH, kwargs, {"task": "HER2 level of IHC images"})}
