"""Semantic features for the correspondence search of neural colour transfer.

Paper 001, Algorithm 2 lines 3-7:

- features of a VGG19 layer L (1-5; ``relu{L}_1`` as in He et al. 2019, Sec. 4; layer 1 by default, the
  best in paper 001 Sec. 2.2.6 because it keeps the image's resolution);
- per-channel standardisation ``z = (x - mu) / sigma`` of each image's feature map (Eq. 1, Sec. 2.2.2);
- feature enhancement (Sec. 2.2.3): concatenate one-hot cluster features (k-means on the image's own
  centred CIELAB colours) or a label map the user supplies (nuclei / cytoplasm / background...),
  then standardise the whole stack again.

Clusters are found per image, so a pale source and a dark reference each get their own nuclei cluster;
clusters are numbered by increasing mean lightness, which makes cluster j of the source correspond to
cluster j of the reference (the darkest, nuclei, to the darkest).

The network: ``"vgg19"`` reads the standard ImageNet file (``vgg19-dcbb9e9d.pth``) from the torch cache
and raises :class:`~stainlab.nets.weights.WeightsNotFoundError` naming it when absent; ``"random"`` is the
same architecture with seeded random weights (an explicit offline choice: random 3x3 filters still give
usable local colour-texture descriptors); any other string is a path to VGG19 weights (for instance a
network trained with stainlab).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from stainlab.errors import InputError
from stainlab.nets.vgg import VGG, vgg19
from stainlab.nets.weights import WeightsNotFoundError

LAYERS = (1, 2, 3, 4, 5)
_MIN_STD = 1e-6
_KMEANS_SAMPLES = 20000
_KMEANS_ITERATIONS = 20


def feature_network(features: str, seed: int = 0) -> VGG:
    """The VGG19 behind ``features``: "vgg19" (ImageNet weights, cached file), "random" or a weight path."""
    if features == "vgg19":
        try:
            return vgg19(None)
        except WeightsNotFoundError as err:
            raise WeightsNotFoundError(f"nct: {err}; or choose features='random' (seeded random VGG19, offline; "
                                       "--param features=random on the command line)") from None
    if features == "random":
        return vgg19("random", seed=seed)
    return vgg19(features)


def stage_of(layer: int) -> str:
    """The VGG19 stage paper 001's layer L reads: ``relu{L}_1``."""
    if layer not in LAYERS:
        raise InputError(f"nct: layer must be one of {', '.join(map(str, LAYERS))}, got {layer!r}")
    return f"relu{layer}_1"


def min_side(layer: int) -> int:
    """Smallest image side whose layer-L feature map has at least 2 pixels a side."""
    return 2 ** layer


def vgg_features(net: VGG, rgb: np.ndarray, layer: int) -> np.ndarray:
    """(h, w, C) float32 activations of ``rgb`` (H, W, 3, float in [0, 1]) at ``relu{layer}_1``,
    standardised per channel (Eq. 1)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None]
    stage = stage_of(layer)
    with torch.no_grad():
        out = _standardize_channels(net.features_at(x, [stage])[stage][0])
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def _standardize_channels(x: torch.Tensor) -> torch.Tensor:
    """Eq. 1 on a (C, h, w) tensor: each channel to zero mean, unit standard deviation; flat ones to 0."""
    std, mean = torch.std_mean(x.reshape(x.shape[0], -1), dim=1, correction=0)
    std = torch.where(std > _MIN_STD, std, torch.full_like(std, float("inf")))
    return (x - mean[:, None, None]) / std[:, None, None]


def standardize(features: np.ndarray) -> np.ndarray:
    """Eq. 1: every channel of (h, w, C) to zero mean and unit standard deviation (flat channels to 0)."""
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(features, -1, 0), dtype=np.float32))
    return np.ascontiguousarray(_standardize_channels(x).permute(1, 2, 0).numpy())


def cluster_labels(lab: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """(h, w) k-means labels of an image's own CIELAB colours (h, w, 3), centred and scaled by their
    overall spread (one factor for all channels, so a channel with no variation stays negligible),
    numbered by increasing mean lightness."""
    flat = lab.reshape(-1, 3).astype(np.float64)
    flat = flat - flat.mean(axis=0)
    flat /= max(float(np.sqrt((flat ** 2).sum(axis=1).mean())), 1e-6)
    rng = np.random.default_rng(seed)
    sample = flat[rng.choice(len(flat), size=min(len(flat), _KMEANS_SAMPLES), replace=False)]
    centres, _ = kmeans2(sample, min(clusters, len(sample)), iter=_KMEANS_ITERATIONS, minit="++", rng=rng)
    order = np.argsort(np.argsort(centres[:, 0]))
    distances = ((flat[:, None, :] - centres[None]) ** 2).sum(axis=2)
    return order[np.argmin(distances, axis=1)].reshape(lab.shape[:2])


def one_hot(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(h, w, len(values)) float32 indicator of each label value."""
    return (labels[..., None] == np.asarray(values)[None, None, :]).astype(np.float32)


def enhance(features: np.ndarray, indicators: np.ndarray, weight: float) -> np.ndarray:
    """Sec. 2.2.3: standardised features with label indicators appended, the stack standardised again
    (the features already are, so only the indicators change); the label channels are then scaled by
    ``weight`` (the share of the patch distance they carry)."""
    return np.concatenate([features, standardize(indicators) * np.float32(weight)], axis=-1)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label map to ``shape`` (sampled at pixel centres)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]
