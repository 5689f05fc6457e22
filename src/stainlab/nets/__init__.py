"""Networks in plain PyTorch. Backbones with loaders for the standard published weight files:
:func:`fid_inception_v3` (pytorch-fid's InceptionV3), :func:`resnet18`, :func:`resnet50`."""

from stainlab.nets.inception import FIDInceptionV3, fid_inception_v3
from stainlab.nets.resnet import ResNet, resnet18, resnet50
from stainlab.nets.weights import WeightsNotFoundError, load_weights, torch_cache_dir

__all__ = ["FIDInceptionV3", "ResNet", "WeightsNotFoundError", "fid_inception_v3", "load_weights",
           "resnet18", "resnet50", "torch_cache_dir"]
