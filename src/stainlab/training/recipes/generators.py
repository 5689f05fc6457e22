"""Which generator a recipe builds, from its config: name, constructor arguments, initialisation."""

from __future__ import annotations

import stainlab.networks as networks
from stainlab.errors import InputError
from stainlab.nets.files import build_network
from stainlab.training.recipe import Option

GENERATORS = tuple(networks.written_by("cyclegan"))  # the generators of the CycleGAN family of recipes
GENERATOR_OPTIONS = (
    Option("generator", "generator architecture: Zhu et al.'s ResNet, paper 003's with skips, paper 004's U-Net",
           GENERATORS),
    Option("upsampling", "paper 003's generator: stride-2 deconvolutions (the paper) or resize-convolutions "
                         "(no checkerboard artefacts)", ("deconv", "resize")),
)


def generator_spec(config) -> tuple[str, dict]:
    """``(architecture, kwargs)`` for ``config.generator`` with ``config.ngf`` and, as the
    architecture takes them, ``config.n_blocks`` (residual generators), ``config.upsampling`` (paper
    003's generator: "deconv" or "resize") or ``config.depth`` (U-Net)."""
    if config.generator not in GENERATORS:
        raise InputError(f"unknown generator {config.generator!r}; known: {', '.join(GENERATORS)}")
    if config.generator == "unet-generator":
        return config.generator, {"ngf": config.ngf, "depth": config.depth}
    if config.generator == "skip-resnet-generator":
        return config.generator, {"ngf": config.ngf, "n_blocks": config.n_blocks,
                                  "upsampling": config.upsampling}
    return config.generator, {"ngf": config.ngf, "n_blocks": config.n_blocks}


def build_generator(config, device):
    arch, kwargs = generator_spec(config)
    return build_network(arch, kwargs).to(device).train(), arch, kwargs
