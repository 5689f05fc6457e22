"""Networks in plain PyTorch. Backbones with loaders for the standard published weight files:
:func:`fid_inception_v3` (pytorch-fid's InceptionV3), :func:`resnet18`, :func:`resnet50`, :func:`vgg16`,
:func:`vgg19`. Stain normalization networks: :func:`stainnet` (loads the published StainNet checkpoints), paper 000's
:class:`UNet`, the CycleGAN :class:`ResnetGenerator` (loads ``latest_net_G_A.pth``), paper 003's
:class:`SkipResnetGenerator`, paper 004's :class:`UNetGenerator`, and the 70x70 :class:`PatchDiscriminator`.
Virtual staining: paper 002's :class:`DeReStainer` and :class:`MultiScalePatchGAN`. Model files written by
training: :func:`load_model`, :func:`save_model`."""

from stainlab.nets.derestainer import DeReStainer, MultiScalePatchGAN
from stainlab.nets.files import load_model, save_model
from stainlab.nets.generators import ResnetGenerator, SkipResnetGenerator, UNetGenerator, load_cyclegan_generator
from stainlab.nets.inception import FIDInceptionV3, fid_inception_v3
from stainlab.nets.patchgan import PatchDiscriminator, receptive_field
from stainlab.nets.resnet import ResNet, resnet18, resnet50
from stainlab.nets.stainnet import StainNet, stainnet
from stainlab.nets.unet import UNet
from stainlab.nets.vgg import VGG, vgg16, vgg19
from stainlab.nets.weights import WeightsNotFoundError, load_weights, torch_cache_dir

__all__ = ["VGG", "FIDInceptionV3", "ResNet", "StainNet", "WeightsNotFoundError", "fid_inception_v3",
           "load_weights", "resnet18", "resnet50", "stainnet", "torch_cache_dir", "vgg16", "vgg19",
           "UNet", "ResnetGenerator", "SkipResnetGenerator", "UNetGenerator", "load_cyclegan_generator",
           "PatchDiscriminator", "receptive_field", "DeReStainer", "MultiScalePatchGAN", "load_model", "save_model"]
