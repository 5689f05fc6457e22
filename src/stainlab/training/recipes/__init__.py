"""The training recipes by name: ``cyclegan`` (with paper 003's ``--skips`` and ``--ssim-cycle``),
``ccgan`` and ``pcnet`` (paper 004), ``distill`` (paper 000), ``pix2pix`` (Isola et al.), ``derestainer``
and its HER2 ``comparator`` (paper 002)."""

from stainlab.training.recipes.comparator import Comparator
from stainlab.training.recipes.cyclegan import CCGAN, CycleGAN
from stainlab.training.recipes.derestainer import DeReStainerRecipe
from stainlab.training.recipes.distill import Distill
from stainlab.training.recipes.pcnet import PCNet
from stainlab.training.recipes.pix2pix import Pix2Pix

RECIPES = {recipe.name: recipe for recipe in (CycleGAN, CCGAN, PCNet, Distill, Pix2Pix, Comparator,
                                              DeReStainerRecipe)}

__all__ = ["RECIPES"]
