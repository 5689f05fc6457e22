"""Trained networks behind the shared face.

Context-aware networks (paper 000's U-Net student, the CycleGAN / ccGAN / pcNet generators) see a
neighbourhood of each pixel: :class:`NetworkTransform` runs them on the whole image, or on feather-blended
overlapping tiles when it is larger than ``tile`` (see :func:`stainlab.nets.inference.apply_network`),
on the CPU or on a GPU (``device="cuda"``). The slide tiler hands it a row of windows at a time
(:meth:`NetworkTransform.transform_many`), which it runs in batches of equal-shaped windows: as many as
fit in a GPU's free memory (one on the CPU, where batches are no faster), or ``batch_size``; a window no
larger than a tile with its overlap goes through the network whole. Device and batch size change how
fast it runs, not its outputs, so they are neither saved nor part of its fingerprint (``Transform.run_options``).
They load as ``"unet:PATH"``, ``"cyclegan:PATH"``, ``"ccgan:PATH"`` or ``"pcnet:PATH"`` from a model file
written by ``stainlab train`` (its header names the architecture), and ``cyclegan`` also from a
``latest_net_G_A.pth`` of the public CycleGAN code.

StainNet (Kang et al., Frontiers in Medicine 2021; the 1x1-convolution student of paper 000) maps each
pixel's colour on its own (see :mod:`stainlab.nets.stainnet`), so it is a :class:`PixelTransform`: the
lookup-table engine runs the network once per occupied colour cell and gathers the result, instead of
running it on every pixel. It learned its target during training, so ``fit`` has nothing to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import stainlab.networks as networks
from stainlab.errors import InputError
from stainlab.io.arrays import check_rgb8
from stainlab.nets.devices import torch_device
from stainlab.nets.inference import apply_network, apply_network_stack, batch_size_for
from stainlab.nets.stainnet import stainnet
from stainlab.transforms.base import PixelTransform, Transform
from stainlab.transforms.checks import check_int
from stainlab.transforms.lut import DEFAULT_BITS


def _stored_path(model) -> str:
    """The path saved in the JSON: absolute when the file is here, so the JSON loads from any
    directory; as given otherwise (a bare name is also looked up in the torch cache)."""
    given = Path(model).expanduser()
    return str(given.resolve()) if given.is_file() else str(model)


class StainNetTransform(PixelTransform):
    """StainNet 2021: a trained 1x1-convolution network maps each colour (load as "stainnet:PATH")."""

    name = "stainnet"
    requires_fit = False
    uses_reference = False

    def __init__(self, model: str, lut_bits: int = DEFAULT_BITS) -> None:
        super().__init__(lut_bits)
        self.model = _stored_path(model)
        # float64 copy: per-colour outputs do not depend on how colours are batched (LUT or exact path)
        self._net = stainnet(model).to(torch.float64)

    def _map(self, colors: np.ndarray, source) -> np.ndarray:
        return self._net.map_colors(colors)


def load_network(model: str, kind: str):
    """The network of a model file for ``kind``: a stainlab ``.safetensors`` model file whose architecture
    the network registry (:mod:`stainlab.networks`) lets ``kind`` run or, for ``cyclegan``, a generator
    checkpoint of the public CycleGAN code (``latest_net_G_A.pth``)."""
    from stainlab.nets.files import load_model
    from stainlab.nets.generators import load_cyclegan_generator

    if kind == "cyclegan" and Path(model).suffix == ".pth":
        return load_cyclegan_generator(model)
    net, info = load_model(model)
    if info["arch"] not in networks.kind_architectures(kind):
        kinds = list(networks.architecture(info["arch"]).kinds)
        use = f"load it as '{kinds[0]}:{model}'" if kinds else "it is not an image-to-image network"
        raise InputError(f"{model} holds a {info['arch']} network, not a {kind} model; {use}")
    return net


MAX_BATCH_SIZE = 1024  # windows per network call that a user may ask for


class NetworkTransform(Transform):
    """A trained image-to-image network (U-Net student, CycleGAN/ccGAN/pcNet generator), run in blended tiles."""

    name = "unet"
    requires_fit = False
    uses_reference = False
    run_options = ("device", "batch_size")

    def __init__(self, model: str, kind: str = "unet", tile: int = 512, overlap: int = 64, device: str = "cpu",
                 batch_size: int | None = None) -> None:
        super().__init__()
        if kind not in networks.learned_kinds():
            raise InputError(f"unknown network kind {kind!r}; known: {', '.join(networks.learned_kinds())}")
        if not 0 <= overlap < tile // 2:
            raise InputError(f"overlap must be in [0, tile/2), got tile={tile} overlap={overlap}")
        self.name, self.kind, self.tile, self.overlap = kind, kind, tile, overlap
        self.model = _stored_path(model)
        self._net = load_network(model, kind)
        self.run_on(device, batch_size)

    def run_on(self, device: str = "cpu", batch_size: int | None = None) -> "NetworkTransform":
        """Run on ``device`` (checked by :func:`~stainlab.nets.devices.torch_device`; the network moves
        there now) in batches of ``batch_size`` windows, or as many as fit in its free memory (None)."""
        self._net.to(torch_device(device))
        self.device = str(device)
        self.batch_size = None if batch_size is None else check_int(f"{self.name}: batch_size", batch_size, 1,
                                                                    MAX_BATCH_SIZE)
        self._batch_sizes: dict[tuple[int, int], int] = {}  # network input size -> windows per call
        return self

    def _transform(self, image: np.ndarray) -> np.ndarray:
        return apply_network(self._net, image, self.tile, self.overlap)

    def transform_many(self, images: Sequence[np.ndarray], windows: bool = False) -> list[np.ndarray]:
        """``[t.transform(image) for image in images]`` (up to float rounding), with the images of each
        shape stacked into batches of :meth:`batch_size_of` images per network call.

        ``windows``: the images are a slide's windows, tiles with their context around them (the slide
        tiler's call). A window that exceeds ``tile`` by at most ``overlap`` a side then goes through the
        network in one piece: cutting it into overlapping tiles would only repeat the context the tiler
        already gave it (the default 512 px tile with 64 px of context a side was cut into four, 2.4x the
        work: 0.85 against 2.04 tiles/s, ``benchmarks/slide_networks.py``). Larger windows are cut."""
        self._require_fitted()
        images = [check_rgb8(image, f"image {i}") for i, image in enumerate(images)]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        out: list[np.ndarray] = [None] * len(images)
        for (height, width, _), indices in by_shape.items():
            tile = self.tile
            if windows and max(height, width) <= self.tile + 2 * self.overlap:
                tile = max(height, width, self.tile)
            size = self.batch_size_of(height, width, tile)
            for start in range(0, len(indices), size):
                part = indices[start:start + size]
                stack = np.stack([images[i] for i in part])
                for i, result in zip(part, apply_network_stack(self._net, stack, tile, self.overlap)):
                    out[i] = result
        return out

    def batch_size_of(self, height: int, width: int, tile: int | None = None) -> int:
        """Images of ``height x width`` per network call: ``batch_size``, or what fits in the device's
        free memory (:func:`~stainlab.nets.inference.batch_size_for`, measured once per size on the
        network's input: the image, or its tiles when it is larger than ``tile``, by default the
        transform's)."""
        if self.batch_size is not None:
            return self.batch_size
        tile = self.tile if tile is None else tile
        key = (min(height, tile), min(width, tile))
        if key not in self._batch_sizes:
            self._batch_sizes[key] = batch_size_for(self._net, *key)
        return self._batch_sizes[key]
