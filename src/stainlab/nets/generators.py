"""Image-to-image generators of the CycleGAN family, float ``(N, 3, H, W)`` in [-1, 1] -> same, tanh out.

- :class:`ResnetGenerator`: Zhu et al.'s CycleGAN ResNet generator (reflection pad + 7x7 conv,
  two stride-2 3x3 convs, ``n_blocks`` residual blocks, two stride-2 transposed convs, 7x7 conv, tanh;
  InstanceNorm without affine, ReLU) with the module layout of the public CycleGAN/pix2pix code
  (junyanz/pytorch-CycleGAN-and-pix2pix, ``models/networks.py``), so its ``latest_net_G_A.pth`` files
  load unchanged: ``model.1`` stem conv, ``model.4``/``model.7`` down convs, ``model.10 ...
  model.{9+n_blocks}`` blocks (``conv_block.1`` and ``conv_block.5``), then the transposed convs and
  the final conv at ``model.{17+n_blocks}``.
- :class:`SkipResnetGenerator`: paper 003's improved generator (Liu et al., "The generation of virtual
  immunohistochemical staining images based on an improved Cycle-GAN", Sec. 3.1, Fig. 2): 7x7 stride-1 stem, three stride-2 3x3 convs (288 ->
  36 px), ten residual blocks, three stride-2 3x3 deconvolutions, 7x7 conv + tanh; every conv is
  conv + instance norm + LeakyReLU; skip connections from encoder to decoder at equal resolution;
  Xavier initialisation (Sec. 4.2).
- :class:`UNetGenerator`: paper 004's U-Net-like generator (Sjostrand et al., "Color normalization of
  blood cell images", Sec. 5.4, Fig. 8): encoder blocks of 5x5 stride-2 conv + BatchNorm + LeakyReLU,
  decoder blocks of x2 upsampling + stride-1 transposed conv + BatchNorm + ReLU with skip
  concatenations, tanh out (the stride-2 transposed conv is split to avoid checkerboard artefacts).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from stainlab.nets.unet import check_batch, run_padded
from stainlab.nets.weights import load_into, load_weights

CYCLEGAN_FILE = "latest_net_G_A.pth"
CYCLEGAN_ORIGIN = ("a CycleGAN/pix2pix training run of https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix "
                   "(checkpoints/<name>/latest_net_G_A.pth)")
LEAKY_SLOPE = 0.2  # LeakyReLU slope: paper 003 and 004 do not give it; 0.2 as in pix2pix/DCGAN


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    """InstanceNorm as the public CycleGAN code builds it: no affine parameters, no running statistics."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """``x + conv_block(x)``; ``conv_block`` = [pad, conv3, IN, act, pad, conv3, IN] (keys ``conv_block.1/.5``)."""

    def __init__(self, channels: int, activation) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _instance_norm(channels), activation(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _instance_norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _stem(in_channels: int, out_channels: int, activation) -> list[nn.Module]:
    return [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, out_channels, 7), _instance_norm(out_channels),
            activation()]


def _down(in_channels: int, out_channels: int, activation) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), _instance_norm(out_channels),
            activation()]


def _up(in_channels: int, out_channels: int, activation) -> list[nn.Module]:
    """Stride-2 3x3 transposed conv (exactly doubles the size) + IN + activation."""
    return [nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
            _instance_norm(out_channels), activation()]


def _head(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, out_channels, 7), nn.Tanh()]


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def _leaky() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator (Zhu et al. 2017) in the public implementation's ``model.N`` key layout.

    Starts from that implementation's default initialisation (:func:`gaussian_init`)."""

    DOWNSAMPLINGS = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        self.in_channels = in_channels
        layers = _stem(in_channels, ngf, _relu)
        for i in range(self.DOWNSAMPLINGS):
            layers += _down(ngf * 2 ** i, ngf * 2 ** (i + 1), _relu)
        width = ngf * 2 ** self.DOWNSAMPLINGS
        layers += [ResnetBlock(width, _relu) for _ in range(n_blocks)]
        for i in range(self.DOWNSAMPLINGS, 0, -1):
            layers += _up(ngf * 2 ** i, ngf * 2 ** (i - 1), _relu)
        layers += _head(ngf, out_channels)
        self.model = nn.Sequential(*layers)
        self.apply(gaussian_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Any ``H, W`` above 4 (inside, sides are reflect-padded to multiples of 4)."""
        check_batch(x, self.in_channels, "ResnetGenerator")
        return run_padded(self.model, x, 2 ** self.DOWNSAMPLINGS, "ResnetGenerator")


def _without_instance_norm_stats(module: nn.Module, state: dict) -> dict:
    """Drop the InstanceNorm ``running_mean``/``running_var``/``num_batches_tracked`` entries that
    checkpoints saved by PyTorch < 0.4 hold and this (statistics-free) InstanceNorm does not use."""
    norms = {name for name, sub in module.named_modules() if isinstance(sub, nn.InstanceNorm2d)}
    return {key: value for key, value in state.items() if key.rpartition(".")[0] not in norms}


def load_cyclegan_generator(path, ngf: int = 64, n_blocks: int = 9) -> ResnetGenerator:
    """A :class:`ResnetGenerator` in eval mode with the weights of a public-implementation checkpoint
    (``latest_net_G_A.pth`` or ``*_net_G_B.pth``; ``.safetensors`` too), read from ``path`` only.
    A ``module.`` prefix (a state dict saved from ``DataParallel``) is removed."""
    state = load_weights(path, CYCLEGAN_FILE, CYCLEGAN_ORIGIN)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    generator = ResnetGenerator(ngf=ngf, n_blocks=n_blocks)
    load_into(generator, _without_instance_norm_stats(generator, state), f"CycleGAN generator {path}")
    return generator.eval()


class _ResizeUp(nn.Sequential):
    """Resize-convolution (Odena et al. 2016): nearest x2 upsampling + reflect-padded 3x3 conv + IN + act."""

    def __init__(self, in_channels: int, out_channels: int, activation) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect"),
                         _instance_norm(out_channels), activation())


def _skip_decoder_block(upsampling: str, in_channels: int, out_channels: int) -> nn.Module:
    if upsampling == "resize":
        return _ResizeUp(in_channels, out_channels, _leaky)
    return nn.Sequential(*_up(in_channels, out_channels, _leaky))


class SkipResnetGenerator(nn.Module):
    """Paper 003's improved CycleGAN generator: 3 stride-2 convs, 10 residual blocks, encoder->decoder skips.

    Paper 003 (Sec. 3.1) says the skips join encoder and decoder "at the same resolution" without
    saying how; here they are *added* (the decoder output at each resolution plus the encoder output
    of the same width), so ``skips=False`` is exactly the plain CycleGAN-style generator of the
    ablation (Fig. 3) with the same parameters. The paper gives no widths: ``ngf`` doubles at each
    stride-2 conv; the default 32 puts the residual blocks at 256 channels, the width (and about the
    cost) of the standard CycleGAN generator. ``upsampling="deconv"`` is the paper's stride-2 3x3
    deconvolution; ``"resize"`` swaps in resize-convolution against checkerboard artefacts.
    Convolutions start from Xavier-normal weights and zero biases (paper 003, Sec. 4.2).
    """

    DOWNSAMPLINGS = 3

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 32, n_blocks: int = 10,
                 skips: bool = True, upsampling: str = "deconv") -> None:
        super().__init__()
        if upsampling not in ("deconv", "resize"):
            raise ValueError(f"upsampling must be 'deconv' or 'resize', got {upsampling!r}")
        widths = [ngf * 2 ** i for i in range(self.DOWNSAMPLINGS + 1)]
        self.in_channels, self.skips = in_channels, skips
        self.stem = nn.Sequential(*_stem(in_channels, ngf, _leaky))
        self.downs = nn.ModuleList(nn.Sequential(*_down(a, b, _leaky)) for a, b in pairwise(widths))
        self.blocks = nn.Sequential(*(ResnetBlock(widths[-1], _leaky) for _ in range(n_blocks)))
        self.ups = nn.ModuleList(_skip_decoder_block(upsampling, a, b)
                                 for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.head = nn.Sequential(*_head(ngf, out_channels))
        self.apply(xavier_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Any ``H, W`` above 8 (inside, sides are reflect-padded to multiples of 8)."""
        check_batch(x, self.in_channels, "SkipResnetGenerator")
        return run_padded(self._forward_even, x, 2 ** self.DOWNSAMPLINGS, "SkipResnetGenerator")

    def _forward_even(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        y = self.blocks(features.pop())
        for up in self.ups:
            y = up(y)
            skip = features.pop()
            if self.skips:
                y = y + skip
        return self.head(y)


def _init_convs(module: nn.Module, fill_weight) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        fill_weight(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def xavier_init(module: nn.Module) -> None:
    """Xavier-normal weights (std = sqrt(2 / (fan_in + fan_out)), Glorot & Bengio 2010) and zero
    biases for every (transposed) convolution (paper 003, Sec. 4.2); for use with ``net.apply``."""
    _init_convs(module, nn.init.xavier_normal_)


def glorot_uniform_init(module: nn.Module) -> None:
    """Xavier-uniform weights (bound sqrt(6 / (fan_in + fan_out))) and zero biases: Keras' default
    initialisation (paper 004 trained in Keras, Sec. 5.5, and names no other)."""
    _init_convs(module, nn.init.xavier_uniform_)


def gaussian_init(module: nn.Module) -> None:
    """The public CycleGAN/pix2pix code's default ``init_type='normal'``: convolution weights from
    N(0, 0.02), BatchNorm scales from N(1, 0.02), biases zero."""
    _init_convs(module, lambda weight: nn.init.normal_(weight, 0.0, 0.02))
    if isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _encoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Paper 004: 5x5 stride-2 conv (reflect-padded) + BatchNorm + LeakyReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 5, stride=2, padding=2, padding_mode="reflect",
                                   bias=False),
                         nn.BatchNorm2d(out_channels), _leaky())


def _upsample_transposed(in_channels: int, out_channels: int, bias: bool) -> list[nn.Module]:
    """Paper 004's decoder convolution: nearest x2 upsampling, then a stride-1 5x5 transposed conv.
    Reflection padding by 2 with transposed-conv padding 4 keeps the size without zero borders."""
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(2),
            nn.ConvTranspose2d(in_channels, out_channels, 5, stride=1, padding=4, bias=bias)]


def _decoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Paper 004: upsampling + stride-1 transposed conv + BatchNorm + ReLU."""
    return nn.Sequential(*_upsample_transposed(in_channels, out_channels, bias=False),
                         nn.BatchNorm2d(out_channels), _relu())


class UNetGenerator(nn.Module):
    """Paper 004's U-Net-like generator: 5x5 stride-2 conv encoder, upsample + transposed-conv decoder, skips.

    Paper 004 gives the widths only in its Fig. 8 and the size in the text ("approximately 20 million
    parameters"); the defaults here, widths ``ngf * 2**i`` capped at ``max_channels`` over ``depth``
    encoder blocks (64, 128, 256, 256, 256, 256, 256), come to 21.1 million (see the tests). With
    7 stride-2 blocks the sides are padded inside to multiples of 128 (a 256 tile needs none).
    Decoder block ``i`` takes the deeper output concatenated with the encoder output of the same
    resolution (pix2pix's U-Net, the design paper 004 follows); the last decoder step upsamples to the
    input size and maps to ``out_channels`` with tanh, without BatchNorm. Starts from Keras' default
    initialisation (:func:`glorot_uniform_init`), as paper 004 trained in Keras.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, depth: int = 7,
                 max_channels: int = 256) -> None:
        super().__init__()
        widths = [min(ngf * 2 ** i, max_channels) for i in range(depth)]
        self.in_channels, self.depth = in_channels, depth
        self.encoder = nn.ModuleList(_encoder_block(a, b) for a, b in zip([in_channels] + widths, widths))
        # decoder i maps the deepest-so-far features (concatenated with their skip, except the
        # bottleneck) up one level, to the width of the encoder output found there
        ins = [widths[-1]] + [2 * w for w in widths[-2:0:-1]]
        self.decoder = nn.ModuleList(_decoder_block(a, b) for a, b in zip(ins, widths[-2::-1]))
        self.head = nn.Sequential(*_upsample_transposed(2 * widths[0], out_channels, bias=True), nn.Tanh())
        self.apply(glorot_uniform_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Any ``H, W`` above ``2**depth`` (inside, sides are reflect-padded to such multiples)."""
        check_batch(x, self.in_channels, "UNetGenerator")
        return run_padded(self._forward_even, x, 2 ** self.depth, "UNetGenerator")

    def _forward_even(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        y = skips.pop()
        for block in self.decoder:
            y = torch.cat([block(y), skips.pop()], dim=1)
        return self.head(y)
