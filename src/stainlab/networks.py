"""The network registry: one entry per architecture says how to build it, which learned kinds run it,
which transform runs them and which recipes train it.

An architecture is what a model file's header names (``"arch"``, see :mod:`stainlab.nets.files`).
Its :class:`Architecture` entry gives:

- ``network``: the ``"module:callable"`` that builds it from the header's ``kwargs``;
- ``kinds``: the learned kinds that run its model files, as users type them (``stainlab.load("KIND:PATH")``,
  ``-m KIND --model PATH``), each with a one-line :class:`Kind` description;
- ``transform``: the ``"module:Class"`` that runs those kinds behind the shared face;
- ``recipes``: the ``stainlab train`` recipes that write it, ``name -> "module:Class"``.

So adding a network is its module in :mod:`stainlab.nets` plus one entry here (and a recipe module
when a new recipe trains it); ``stainlab.load``, ``stainlab methods`` and ``stainlab train`` read
this table. Everything is named by string and imported on first use: this module imports nothing,
so ``import stainlab`` and the command line read it without torch, and the packages it names
(transforms and training sit above nets) are never imported from below. It lives beside
``errors.py`` rather than in ``nets/`` because importing ``stainlab.nets`` imports every network.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from stainlab.errors import InputError


@dataclass(frozen=True)
class Kind:
    """A learned kind (``KIND:PATH``): what its networks do, and files from elsewhere that load as it."""

    about: str
    also: str = ""


@dataclass(frozen=True)
class Architecture:
    """One architecture: what builds it, which kinds and transform run it, which recipes write it."""

    network: str  # "module:callable" building the network from a model file's kwargs
    transform: str = ""  # "module:Class" running its kinds (none: not an image-to-image network)
    kinds: dict[str, Kind] = field(default_factory=dict)  # the first is the one its files load as by default
    recipes: dict[str, str] = field(default_factory=dict)  # recipe name -> "module:Class"
    use: str = ""  # how a model file of an architecture without kinds is used ({path}: the file)


_RECIPES = "stainlab.training.recipes"
_TILES = "run in blended tiles"
NETWORK_TRANSFORM = "stainlab.transforms.learned:NetworkTransform"
DISTILL = {"distill": f"{_RECIPES}.distill:Distill"}
GENERATOR_KINDS = {
    "cyclegan": Kind(f"CycleGAN generator (Zhu et al. 2017; paper 003's skips), {_TILES}",
                     "a latest_net_G_A.pth of the public CycleGAN code"),
    "ccgan": Kind(f"ccGAN generator (paper 004): CycleGAN plus a paired L1 loss, {_TILES}"),
    "pcnet": Kind(f"pcNet generator (paper 004): cycle, paired L1 and VGG16 Gram losses, {_TILES}"),
    "pix2pix": Kind(f"pix2pix generator (Isola et al. 2017), e.g. H&E -> IHC, {_TILES}"),
}
GAN_RECIPES = {"cyclegan": f"{_RECIPES}.cyclegan:CycleGAN", "ccgan": f"{_RECIPES}.cyclegan:CCGAN",
               "pcnet": f"{_RECIPES}.pcnet:PCNet"}

ARCHITECTURES: dict[str, Architecture] = {
    "resnet-generator": Architecture("stainlab.nets.generators:ResnetGenerator", NETWORK_TRANSFORM,
                                     GENERATOR_KINDS, GAN_RECIPES),
    "skip-resnet-generator": Architecture("stainlab.nets.generators:SkipResnetGenerator", NETWORK_TRANSFORM,
                                          GENERATOR_KINDS, GAN_RECIPES),
    "unet-generator": Architecture("stainlab.nets.generators:UNetGenerator", NETWORK_TRANSFORM, GENERATOR_KINDS,
                                   {**GAN_RECIPES, "pix2pix": f"{_RECIPES}.pix2pix:Pix2Pix"}),
    "patchgan": Architecture("stainlab.nets.patchgan:PatchDiscriminator"),
    "unet": Architecture(
        "stainlab.nets.unet:UNet", NETWORK_TRANSFORM,
        {"unet": Kind(f"U-Net student (paper 000) distilled from a CycleGAN teacher, {_TILES}")}, DISTILL),
    "stainnet": Architecture(
        "stainlab.nets.stainnet:StainNet", "stainlab.transforms.learned:StainNetTransform",
        {"stainnet": Kind("StainNet 2021: 1x1 convolutions of each colour, run as a lookup "
                          "table (distill --student stainnet)", "a published StainNet checkpoint (.pth)")},
        DISTILL),
    "derestainer": Architecture(  # kwargs: the model's ``config`` (paper 002)
        "stainlab.nets.derestainer:DeReStainer", "stainlab.transforms.virtual_staining:DeReStainerTransform",
        {"derestainer": Kind(f"DeReStainer (paper 002): H&E -> HER2 IHC virtual staining, {_TILES}")},
        {"derestainer": f"{_RECIPES}.derestainer:DeReStainerRecipe"}),
    "her2-classifier": Architecture(  # a ResNet HER2-level classifier (paper 002's comparator/evaluator)
        "stainlab.nets.derestainer:her2_comparator", recipes={"comparator": f"{_RECIPES}.comparator:Comparator"},
        use="train derestainer --comparator {path}, or evaluate --classifier {path}"),
}


def resolve(target: str):
    """The object a ``"module:name"`` string names, imported now."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def architecture(arch: str) -> Architecture:
    """The registry entry of ``arch`` (an :class:`InputError` naming the known ones if there is none)."""
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def learned_kinds() -> list[str]:
    """Every learned kind, each loaded as ``KIND:PATH``."""
    return list(dict.fromkeys(kind for entry in ARCHITECTURES.values() for kind in entry.kinds))


def kind_architectures(kind: str) -> list[str]:
    """The architectures whose model files load as ``kind``."""
    return [arch for arch, entry in ARCHITECTURES.items() if kind in entry.kinds]


def kind_transform(kind: str) -> str:
    """The ``"module:Class"`` of the transform that runs ``kind`` (one per kind: tests/test_networks.py)."""
    return ARCHITECTURES[kind_architectures(kind)[0]].transform


def recipes() -> dict[str, str]:
    """Every training recipe, ``name -> "module:Class"``."""
    return {name: target for entry in ARCHITECTURES.values() for name, target in entry.recipes.items()}


def written_by(recipe: str) -> list[str]:
    """The architectures ``recipe`` can write."""
    return [arch for arch, entry in ARCHITECTURES.items() if recipe in entry.recipes]


def kind_of(arch: str, recipe: str) -> str | None:
    """The kind a model file of ``arch`` written by ``recipe`` loads as: the recipe's own name when it
    is one of the architecture's kinds (a cyclegan run's generator is a ``cyclegan``), else the
    architecture's first kind (a distilled U-Net is a ``unet``); None for networks no kind runs."""
    kinds = list(architecture(arch).kinds)
    return recipe if recipe in kinds else (kinds[0] if kinds else None)


def use_as(arch: str, recipe: str, path) -> str:
    """How to use a model file of ``arch`` written by ``recipe``, as ``stainlab train`` prints it."""
    kind = kind_of(arch, recipe)
    return f"-m {kind} --model {path}" if kind else architecture(arch).use.format(path=Path(path))


def describe(kind: str) -> str:
    """One line on ``kind``: what it is and the model file it needs."""
    entry = ARCHITECTURES[kind_architectures(kind)[0]].kinds[kind]
    makers = dict.fromkeys(recipe for arch in kind_architectures(kind) for recipe in ARCHITECTURES[arch].recipes
                           if kind_of(arch, recipe) == kind)
    sources = [f"`stainlab train {' / '.join(makers)}`"] if makers else []
    needs = " or ".join(sources + ([entry.also] if entry.also else []))
    return f"{entry.about}; needs a model file from {needs}"
