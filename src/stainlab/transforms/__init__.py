"""Stain normalization methods, all with the shared face of :class:`~stainlab.transforms.base.Transform`."""

from stainlab.transforms.base import PixelTransform, Transform
from stainlab.transforms.registry import create, load, methods, names, normalizers

__all__ = ["Transform", "PixelTransform", "load", "create", "methods", "names", "normalizers"]
