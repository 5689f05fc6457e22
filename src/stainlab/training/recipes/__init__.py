"""The training recipes by name: ``cyclegan`` (with paper 003's ``--skips`` and ``--ssim-cycle``),
``ccgan`` and ``pcnet`` (paper 004), ``distill`` (paper 000)."""

from stainlab.training.recipes.cyclegan import CCGAN, CycleGAN
from stainlab.training.recipes.distill import Distill
from stainlab.training.recipes.pcnet import PCNet

RECIPES = {recipe.name: recipe for recipe in (CycleGAN, CCGAN, PCNet, Distill)}

__all__ = ["RECIPES"]
