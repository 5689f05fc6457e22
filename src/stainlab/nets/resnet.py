"""ResNet18 and ResNet50 in plain PyTorch with TorchVision's state-dict keys.

He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016 (Table 1): a 7x7
stride-2 stem and max-pool, then four stages of basic blocks (ResNet18: 2-2-2-2) or bottleneck blocks
(ResNet50: 3-4-6-3, stride on the 3x3 convolution as TorchVision's "v1.5"), global average pool, fc.
Keys (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ...,
``fc.weight``) match TorchVision's, so ``resnet18-f37072fd.pth`` and ``resnet50-0676ba61.pth`` load
unchanged. Paper 003 (Liu et al., Sec. 5.2) takes its perceptual hash from ResNet18's second stage.

Input: float ``(N, 3, H, W)`` in [0, 1]; the ImageNet mean/std normalisation of the published weights
is applied inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stainlab.errors import InputError
from stainlab.nets.weights import build

WEIGHTS_URL = "https://download.pytorch.org/models/"
RESNET18_FILE = "resnet18-f37072fd.pth"
RESNET50_FILE = "resnet50-0676ba61.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGES = ("layer1", "layer2", "layer3", "layer4")


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


def _shortcut(in_channels: int, out_channels: int, stride: int):
    """Projection shortcut (1x1 conv + BN, keys ``downsample.0``/``downsample.1``) where shapes change."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), _bn(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = _bn(width)
        self.downsample = _shortcut(in_channels, width, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = _bn(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet with TorchVision's keys: float (N,3,H,W) in [0,1] -> ImageNet logits, or stage features."""

    def __init__(self, block, depths, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = _bn(64)
        in_channels = 64
        for index, (name, depth) in enumerate(zip(STAGES, depths)):
            width = 64 * 2 ** index
            stride = 1 if index == 0 else 2
            blocks = []
            for position in range(depth):
                blocks.append(block(in_channels, width, stride if position == 0 else 1))
                in_channels = width * block.expansion
            setattr(self, name, nn.Sequential(*blocks))
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _init_weights(self) -> None:
        """He et al. 2015 ("Delving deep into rectifiers") normal init, fan-out, as TorchVision."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x, upto: str = "layer4"):
        """The feature map after stage ``upto`` (``"layer1"`` ... ``"layer4"``) of images ``x`` in [0, 1]."""
        if upto not in STAGES:
            raise InputError(f"resnet features: upto must be one of {STAGES}, got {upto!r}")
        x = (x - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        for name in STAGES[:STAGES.index(upto) + 1]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x):
        """ImageNet logits of images ``x``: float ``(N, 3, H, W)`` in [0, 1]."""
        return self.fc(self.features(x).mean(dim=(2, 3)))


def resnet18(weights=None, seed: int = 0) -> ResNet:
    """ResNet18 in eval mode: ``weights`` ``None`` for ``resnet18-f37072fd.pth`` in the torch cache, a
    path (.pth/.safetensors), or ``"random"`` for a random initialisation seeded by ``seed``."""
    return build(lambda: ResNet(BasicBlock, (2, 2, 2, 2)), weights, RESNET18_FILE,
                 WEIGHTS_URL + RESNET18_FILE, seed)


def resnet50(weights=None, seed: int = 0) -> ResNet:
    """ResNet50 (v1.5) in eval mode; ``weights`` as :func:`resnet18`, file ``resnet50-0676ba61.pth``."""
    return build(lambda: ResNet(Bottleneck, (3, 4, 6, 3)), weights, RESNET50_FILE,
                 WEIGHTS_URL + RESNET50_FILE, seed)
