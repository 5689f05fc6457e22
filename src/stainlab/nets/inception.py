"""The InceptionV3 of FID, in plain PyTorch, loading the pytorch-fid weight file.

Heusel et al., "GANs trained by a two time-scale update rule converge to a local Nash equilibrium",
NeurIPS 2017, define FID on the 2048-d final average-pool features of the TensorFlow Inception graph
of 2015-12-05 (Szegedy et al., "Rethinking the Inception architecture", CVPR 2016). pytorch-fid ported
that graph to PyTorch as TorchVision's Inception3 layout (1008 classes, no auxiliary head) with three
changes, kept here because they change the features:

- the pooling branch of the A, C and first E blocks averages without counting zero padding
  (TensorFlow's ``avg_pool``), ``count_include_pad=False``;
- the pooling branch of the last E block (``Mixed_7c``) max-pools instead of averaging.

Input: float ``(N, 3, H, W)`` in [0, 1]; it is resized bilinearly to 299x299 and mapped to [-1, 1], as
pytorch-fid does, and the output is the ``(N, 2048)`` pool features. Module names follow TorchVision,
so the state dict loads ``pt_inception-2015-12-05-6726825d.pth`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stainlab.nets.weights import build

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_FILE)
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's ImageNet head (1000 classes + 8 unused)


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, TensorFlow's), ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x):
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _max_pool_down(x):
    return F.max_pool2d(x, kernel_size=3, stride=2)


class BlockA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled 1x1 branches (``Mixed_5b``-``Mixed_5d``)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class ReductionB(nn.Module):
    """35x35 -> 17x17 reduction (``Mixed_6a``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            _max_pool_down(x),
        ], 1)


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (``Mixed_6b``-``Mixed_6e``)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = ConvBN(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = ConvBN(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = ConvBN(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = ConvBN(c7, 192, row[0], padding=row[1])
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = conv(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(_tf_avg_pool(x))], 1)


class ReductionD(nn.Module):
    """17x17 -> 8x8 reduction (``Mixed_7a``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        seven = x
        for conv in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = conv(seven)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, _max_pool_down(x)], 1)


class BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs (``Mixed_7b``, ``Mixed_7c``); ``pool`` is the FID patch:
    TF-style average for ``Mixed_7b``, max for ``Mixed_7c``."""

    def __init__(self, in_channels: int, pool) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(self.pool(x)),
        ], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as the FID reference computes it: float (N,3,H,W) in [0,1] -> (N, 2048) pool features.

    ``fc`` (the 1008-class head) is part of the published file; :meth:`classify` uses it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = ReductionB(288)
        self.Mixed_6b = BlockC(768, channels_7x7=128)
        self.Mixed_6c = BlockC(768, channels_7x7=160)
        self.Mixed_6d = BlockC(768, channels_7x7=160)
        self.Mixed_6e = BlockC(768, channels_7x7=192)
        self.Mixed_7a = ReductionD(768)
        self.Mixed_7b = BlockE(1280, pool=_tf_avg_pool)
        self.Mixed_7c = BlockE(2048, pool=_max_pool_same)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self._init_weights()

    def _init_weights(self) -> None:
        """He et al. 2015 normal init (fan-in), so a randomly initialised network keeps its activations'
        scale through 47 layers instead of fading to constant features."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def forward(self, x):
        """Pool-3 features ``(N, 2048)`` of images ``x``: float ``(N, 3, H, W)`` in [0, 1]."""
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_max_pool_down(x)))
        x = _max_pool_down(x)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, "Mixed_" + name)(x)
        return x.mean(dim=(2, 3))

    def classify(self, x):
        """Logits ``(N, 1008)`` of the TF graph's ImageNet head."""
        return self.fc(self.forward(x))


def fid_inception_v3(weights=None, seed: int = 0) -> FIDInceptionV3:
    """The FID InceptionV3 in eval mode.

    ``weights``: ``None`` for ``pt_inception-2015-12-05-6726825d.pth`` in the torch cache, a path to
    that file (.pth or .safetensors), or ``"random"`` for a random initialisation seeded by ``seed``
    (tests, smoke runs: its FID values are not comparable with published ones).
    """
    return build(FIDInceptionV3, weights, FID_WEIGHTS_FILE, FID_WEIGHTS_URL, seed)
