"""VGG16 and VGG19 feature extractors in plain PyTorch with TorchVision's state-dict keys.

Simonyan & Zisserman, "Very deep convolutional networks for large-scale image recognition", ICLR 2015
(Table 1, configurations D and E): five blocks of 3x3 convolutions (padding 1) with ReLU, each closed by
a 2x2 max-pool; 64, 128, 256, 512, 512 channels; VGG16 has 2-2-3-3-3 convolutions per block, VGG19
2-2-4-4-4. Layers are numbered as in TorchVision's ``features`` Sequential (conv, ReLU, ..., pool), so
the keys are ``features.N.weight``/``features.N.bias`` and ``vgg16-397923af.pth`` /
``vgg19-dcbb9e9d.pth`` load unchanged. Only the convolutional part is built: the three fully connected
layers (``classifier.*``, 90% of the parameters) serve ImageNet classification, which no stainlab loss
uses, so their keys are dropped when a published file is read.

Stages are named by block and position: ``relu{b}_{i}`` after the i-th convolution of block b,
``pool{b}`` after its max-pool. Paper 004 (pcNet) takes its Gram loss on VGG16 ``pool5``; paper 001
(neural colour transfer) uses VGG19 ``relu1_1`` ... ``relu5_1``.

Input: float ``(N, 3, H, W)`` in [0, 1]; the ImageNet mean/std normalisation of the published weights
is applied inside.
"""

from __future__ import annotations

import torch
from torch import nn

from stainlab.errors import InputError
from stainlab.nets.resnet import IMAGENET_MEAN, IMAGENET_STD, WEIGHTS_URL
from stainlab.nets.weights import build, load_into, load_weights

VGG16_FILE = "vgg16-397923af.pth"
VGG19_FILE = "vgg19-dcbb9e9d.pth"
BLOCK_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
VGG19_DEPTHS = (2, 2, 4, 4, 4)


def _stage_names(depths) -> list[str]:
    """Name of each entry of ``features`` in order: ``conv{b}_{i}``, ``relu{b}_{i}``, ..., ``pool{b}``."""
    names = []
    for block, depth in enumerate(depths, start=1):
        for position in range(1, depth + 1):
            names += [f"conv{block}_{position}", f"relu{block}_{position}"]
        names.append(f"pool{block}")
    return names


class VGG(nn.Module):
    """The convolutional part of VGG (TorchVision's ``features``): float (N,3,H,W) in [0,1] -> the
    activations at named stages."""

    def __init__(self, depths) -> None:
        super().__init__()
        layers, channels = [], 3
        for width, depth in zip(BLOCK_WIDTHS, depths):
            for _ in range(depth):
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.stages = _stage_names(depths)
        self._init_weights()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _init_weights(self) -> None:
        """He et al. 2015 normal init (fan-out) for convolutions, zero biases, as TorchVision."""
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def features_at(self, x, layers) -> dict[str, torch.Tensor]:
        """``{name: activation}`` for each stage in ``layers`` (e.g. ``["relu1_1", "pool5"]``) of images
        ``x`` in [0, 1]; the network runs only as deep as the deepest stage asked for."""
        unknown = [name for name in layers if name not in self.stages]
        if unknown or not layers:
            raise InputError(f"vgg features: unknown stages {unknown or '(none asked)'}; "
                             f"known: {', '.join(self.stages)}")
        wanted = set(layers)
        last = max(self.stages.index(name) for name in layers)
        out = {}
        x = (x - self.mean) / self.std
        for name, layer in zip(self.stages[:last + 1], self.features):
            x = layer(x)
            if name in wanted:
                out[name] = x
        return {name: out[name] for name in layers}

    def forward(self, x):
        """The activation after the last max-pool (``pool5``) of images ``x`` in [0, 1]."""
        return self.features_at(x, [self.stages[-1]])[self.stages[-1]]


def _features_only(state: dict) -> dict:
    """``state`` without the fully connected layers (``classifier.*``), which this module does not build."""
    return {key: value for key, value in state.items() if not key.startswith("classifier.")}


def _vgg(depths, weights, expected_file: str, seed: int) -> VGG:
    origin = WEIGHTS_URL + expected_file
    if isinstance(weights, str) and weights == "random":
        return build(lambda: VGG(depths), weights, expected_file, origin, seed)
    state = _features_only(load_weights(weights, expected_file, origin))
    net = VGG(depths)
    load_into(net, state, expected_file)
    return net.eval()


def vgg16(weights=None, seed: int = 0) -> VGG:
    """VGG16's convolutional part in eval mode: ``weights`` ``None`` for ``vgg16-397923af.pth`` in the
    torch cache, a path (.pth/.safetensors; ``classifier.*`` keys are ignored), or ``"random"`` for a
    random initialisation seeded by ``seed``."""
    return _vgg(VGG16_DEPTHS, weights, VGG16_FILE, seed)


def vgg19(weights=None, seed: int = 0) -> VGG:
    """VGG19's convolutional part in eval mode; ``weights`` as :func:`vgg16`, file ``vgg19-dcbb9e9d.pth``."""
    return _vgg(VGG19_DEPTHS, weights, VGG19_FILE, seed)
