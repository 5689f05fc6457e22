"""DeReStainer: H&E -> IHC translation through the shared haematoxylin channel (paper 002).

Wei, Hua, Zhang & Zhang, "DeReStainer: H&E to IHC pathological image translation via decoupled
staining channels", Sec. 2.1-2.3 and 3.1, Fig. 2:

- **Staining separation** (Sec. 2.1): Ruifrok deconvolution and the projection of one stain back to
  RGB, ``I^H = T^-1([v_H, 0, 0])`` (:class:`stainlab.color.torch_stains.StainSeparator`).
- **DeStainer** encoder (Sec. 2.1, 3.1): 3 down-sampling blocks (conv, BatchNorm, LeakyReLU, stride 2)
  applied to the H channel images of the H&E and of the real IHC; ``f_H`` (2 more down-sampling
  blocks) embeds both for the alignment loss ``L_H = 1 - cos``.
- **HER2-level head** ``f_level`` (2 down-sampling blocks + a linear classifier on the pooled map) reads
  the H&E features; its softmax prediction ``S_HER2`` conditions the fusion (trained with focal loss).
- **Feature fusion** (Sec. 2.2): 9 ResNet blocks whose two 3x3 convolutions are StyleGAN2 modulated,
  demodulated convolutions driven by ``S_HER2`` (:class:`~stainlab.nets.modconv.ModConv2d`); each
  block's residual branch ends in SimAM (:class:`~stainlab.nets.simam.SimAM`), where the SimAM paper
  itself places it in ResNet blocks.
- **ReStainer** (Sec. 2.3): a decoder symmetric to the encoder, tanh out, giving the IHC image.
- **Discriminator**: multi-scale PatchGAN (Sec. 2.4, after pix2pixHD), one
  :class:`~stainlab.nets.patchgan.PatchDiscriminator` at the crop's size (512) and one at half (256),
  conditioned on the H&E as in pix2pix.
- **Comparator** (Sec. 2.3, 3.1): a ResNet50 classifier of the IHC HER2 level; the cosine distance of
  its pooled features is ``L_cmp``.

Where the paper is silent: widths ``c, 2c, 4c`` in the encoder (``c = base_channels = 64``, so the
fusion runs at 256 channels like the CycleGAN ResNet generator); ``f_H`` and ``f_level`` keep ``4c``;
3x3 kernels; LeakyReLU slope 0.2; the decoder up-samples by nearest x2 + 3x3 convolution
(resize-convolution, against the checkerboard artefacts of transposed convolutions) with BatchNorm +
LeakyReLU, the last one to RGB with a bias and tanh; weights from N(0, 0.02) as pix2pix.

Images are float ``(N, 3, H, W)`` in [-1, 1] with sides a multiple of 8 (at least 16); the losses are
in :mod:`stainlab.training.derestainer_losses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from stainlab.color.torch_stains import StainSeparator
from stainlab.errors import InputError
from stainlab.nets.generators import LEAKY_SLOPE, gaussian_init
from stainlab.nets.modconv import ModConv2d
from stainlab.nets.patchgan import PatchDiscriminator
from stainlab.nets.resnet import ResNet, resnet18, resnet50
from stainlab.nets.simam import SimAM
from stainlab.nets.unet import check_batch, run_padded

HER2_LEVEL_COUNT = 4   # paper 002 Sec. 1: HER2 levels 0, 1+, 2+, 3+
ENCODER_BLOCKS = 3     # paper 002 Sec. 3.1: "the encoder in DeStainer contained 3 down-sampling blocks"
HEAD_BLOCKS = 2        # paper 002 Sec. 3.1: "f_H, f_level contained 2 down-sampling blocks"
MULTIPLE = 2 ** ENCODER_BLOCKS
MIN_SIDE = 2 * MULTIPLE  # the fusion's reflect padding needs maps at least 2 pixels wide


@dataclass(frozen=True)
class DeReStainerSize:
    """Widths and depths of one configuration (the paper gives only the block counts)."""

    base_channels: int   # encoder widths c, 2c, 4c
    n_blocks: int        # feature fusion ResNet blocks (paper 002 Sec. 3.1: 9)
    ndf: int             # PatchGAN base width (pix2pix: 64)
    disc_layers: int     # PatchGAN stride-2 layers (pix2pix's 70x70 PatchGAN: 3)
    comparator: str      # comparator backbone (paper 002 Sec. 3.1: ResNet50)


SIZES = {
    "paper": DeReStainerSize(base_channels=64, n_blocks=9, ndf=64, disc_layers=3, comparator="resnet50"),
    # CPU tests and the benchmark's tiny preset: one training step at 128 px well under a second
    "tiny": DeReStainerSize(base_channels=8, n_blocks=2, ndf=8, disc_layers=2, comparator="resnet18"),
}


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


def down_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Paper 002's down-sampling block: 3x3 stride-2 conv, BatchNorm, LeakyReLU (halves the sides)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), _leaky())


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """The mirror of :func:`down_block`: nearest x2, reflect-padded 3x3 conv, BatchNorm, LeakyReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect", bias=False),
                         nn.BatchNorm2d(out_channels), _leaky())


class FusionBlock(nn.Module):
    """``x + SimAM(ModConv(LeakyReLU(ModConv(x, s)), s))``: paper 002 Sec. 2.2's modified ResNet block."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv1 = ModConv2d(channels, channels, style_dim)
        self.act = _leaky()
        self.conv2 = ModConv2d(channels, channels, style_dim)
        self.attention = SimAM()

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(self.act(self.conv1(x, condition)), condition))


class LevelHead(nn.Module):
    """``f_level``: 2 down-sampling blocks, global average pooling, a linear layer to the level logits."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(down_block(channels, channels) for _ in range(HEAD_BLOCKS)))
        self.classifier = nn.Linear(channels, levels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(features).mean(dim=(2, 3)))


@dataclass
class DeReStainerOutput:
    """What one forward pass gives: the generated IHC and what the losses need.

    Images are ``(N, 3, H, W)`` in [-1, 1]; embeddings ``(N, D)`` are ``f_H``'s maps flattened. The
    ``ihc_*``/``*_dab`` fields are ``None`` when no real IHC was passed (inference).
    """

    fake_ihc: torch.Tensor
    level_logits: torch.Tensor       # (N, levels): f_level on the H&E features (S_HER2 = their softmax)
    he_h: torch.Tensor               # I_HE^H, the H&E's haematoxylin alone
    he_embedding: torch.Tensor       # f_H(DeStainer(I_HE^H))
    ihc_embedding: torch.Tensor | None = None   # f_H(DeStainer(I_IHC^H))
    fake_dab: torch.Tensor | None = None        # DAB of the generated IHC
    real_dab: torch.Tensor | None = None        # DAB of the real IHC


class DeReStainer(nn.Module):
    """The DeReStainer generator (paper 002, Fig. 2): H&E in [-1, 1] -> IHC in [-1, 1].

    ``forward(he, ihc=None)`` returns a :class:`DeReStainerOutput`; with the real ``ihc`` (training)
    it also embeds the IHC's haematoxylin and separates both DAB channels. :meth:`generate` is the
    inference path for any image size. ``DeReStainer.from_size("tiny")`` builds a named size;
    ``DeReStainer(**model.config)`` rebuilds a model for its saved state dict.
    """

    def __init__(self, base_channels: int = 64, n_blocks: int = 9, levels: int = HER2_LEVEL_COUNT,
                 stains="hed", convention: str = "skimage") -> None:
        super().__init__()
        if base_channels < 1 or n_blocks < 0 or levels < 2:
            raise InputError(f"DeReStainer needs base_channels >= 1, n_blocks >= 0 and levels >= 2; got "
                             f"{base_channels}, {n_blocks}, {levels}")
        widths = [3] + [base_channels * 2 ** i for i in range(ENCODER_BLOCKS)]
        deep = widths[-1]
        self.levels = levels
        self.config = {"base_channels": base_channels, "n_blocks": n_blocks, "levels": levels, "stains": stains,
                       "convention": convention}   # DeReStainer(**config) rebuilds it for a saved state dict
        self.stains = StainSeparator(stains, convention)
        self.encoder = nn.Sequential(*(down_block(a, b) for a, b in pairwise(widths)))
        self.f_h = nn.Sequential(*(down_block(deep, deep) for _ in range(HEAD_BLOCKS)))
        self.f_level = LevelHead(deep, levels)
        self.fusion = nn.ModuleList(FusionBlock(deep, levels) for _ in range(n_blocks))
        ups = widths[:0:-1]                              # 4c -> 2c -> c, then c -> RGB
        self.restainer = nn.Sequential(*(up_block(a, b) for a, b in pairwise(ups)),
                                       nn.Upsample(scale_factor=2, mode="nearest"),
                                       nn.Conv2d(base_channels, 3, 3, padding=1, padding_mode="reflect"),
                                       nn.Tanh())
        self.apply(gaussian_init)

    @classmethod
    def from_size(cls, name: str, **kwargs) -> DeReStainer:
        """A generator of one of :data:`SIZES` (``"paper"`` or ``"tiny"``)."""
        size = named_size(name)
        return cls(base_channels=size.base_channels, n_blocks=size.n_blocks, **kwargs)

    def forward(self, he: torch.Tensor, ihc: torch.Tensor | None = None) -> DeReStainerOutput:
        check_images(he, "DeReStainer H&E input")
        if ihc is not None:
            check_pair(he, ihc)
        he_h = self.stains.project_net(he, "H")
        features = self.encoder(he_h)
        level_logits = self.f_level(features)
        fake = self.restainer(self.fuse(features, torch.softmax(level_logits, dim=1)))
        out = DeReStainerOutput(fake, level_logits, he_h, self.f_h(features).flatten(1))
        if ihc is not None:
            out.ihc_embedding = self.f_h(self.encoder(self.stains.project_net(ihc, "H"))).flatten(1)
            out.fake_dab = self.stains.project_net(fake, "DAB")
            out.real_dab = self.stains.project_net(ihc, "DAB")
        return out

    def fuse(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The feature fusion module: the fusion blocks, each conditioned on ``S_HER2``."""
        for block in self.fusion:
            features = block(features, condition)
        return features

    def generate(self, he: torch.Tensor) -> torch.Tensor:
        """Generated IHC in [-1, 1] for H&E of any size above 8 (sides reflect-padded to multiples of 8)."""
        check_batch(he, 3, "DeReStainer")
        return run_padded(lambda x: self.forward(x).fake_ihc, he, MULTIPLE, "DeReStainer")


def named_size(name: str) -> DeReStainerSize:
    if name not in SIZES:
        raise InputError(f"unknown DeReStainer size {name!r}; known: {', '.join(SIZES)}")
    return SIZES[name]


def check_images(x, what: str) -> None:
    """:class:`InputError` unless ``x`` is float ``(N, 3, H, W)`` with sides multiples of 8, at least 16."""
    check_batch(x, 3, what)
    height, width = x.shape[-2:]
    if height % MULTIPLE or width % MULTIPLE or min(height, width) < MIN_SIDE:
        raise InputError(f"{what}: sides must be multiples of {MULTIPLE} and at least {MIN_SIDE} pixels "
                         f"(the encoder halves them {ENCODER_BLOCKS} times), got {height}x{width}; "
                         "use DeReStainer.generate for other sizes")


def check_pair(he: torch.Tensor, ihc) -> None:
    """:class:`InputError` unless ``ihc`` is an image batch of exactly ``he``'s shape."""
    check_batch(ihc, 3, "DeReStainer IHC target")
    if ihc.shape != he.shape:
        raise InputError(f"DeReStainer: the IHC target {tuple(ihc.shape)} must have the H&E input's shape "
                         f"{tuple(he.shape)} (paired crops)")


class MultiScalePatchGAN(nn.Module):
    """pix2pixHD's multi-scale discriminator (Wang et al. 2018, Sec. 3.2) as paper 002 Sec. 2.4 uses it:
    PatchGANs at the input size and at each halving (512 and 256 for ``scales=2``), conditioned on the
    H&E (``in_channels = 6``: H&E and IHC concatenated). Returns one logit map per scale."""

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, scales: int = 2,
                 norm: str = "batch") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.discriminators = nn.ModuleList(PatchDiscriminator(in_channels, ndf, n_layers, norm)
                                            for _ in range(scales))

    @classmethod
    def from_size(cls, name: str, **kwargs) -> MultiScalePatchGAN:
        size = named_size(name)
        return cls(ndf=size.ndf, n_layers=size.disc_layers, **kwargs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_batch(x, self.in_channels, "MultiScalePatchGAN")
        maps = []
        for index, discriminator in enumerate(self.discriminators):
            if index:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)  # pix2pixHD's down-sampling
            maps.append(discriminator(x))
        return maps

    def judge(self, he: torch.Tensor, ihc: torch.Tensor) -> list[torch.Tensor]:
        """Logit maps for IHC images (real or generated) given their H&E."""
        return self(torch.cat([he, ihc], dim=1))


_BACKBONES = {"resnet50": resnet50, "resnet18": resnet18}


def her2_comparator(arch: str = "resnet50", levels: int = HER2_LEVEL_COUNT, backbone_weights="random",
                    seed: int = 0) -> ResNet:
    """A ResNet HER2-level classifier (paper 002 Sec. 3.1's comparator; ``levels`` outputs).

    ``backbone_weights``: ``"random"`` or what :func:`stainlab.nets.resnet50` accepts (the ImageNet
    file), the usual start for training it on IHC levels; the classifier layer is new (seeded).
    A trained comparator is this network with its saved state dict loaded.
    """
    if arch not in _BACKBONES:
        raise InputError(f"unknown comparator backbone {arch!r}; known: {', '.join(_BACKBONES)}")
    net = _BACKBONES[arch](weights=backbone_weights, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net.fc = nn.Linear(net.fc.in_features, levels)
    return net


def comparator_features(comparator: ResNet, images: torch.Tensor) -> torch.Tensor:
    """Globally average-pooled last-stage features ``(N, F)`` of IHC images in [-1, 1] (the ResNet's
    [0, 1] convention inside): what ``L_cmp`` compares."""
    check_batch(images, 3, "comparator")
    return comparator.features((images + 1) / 2).mean(dim=(2, 3))
