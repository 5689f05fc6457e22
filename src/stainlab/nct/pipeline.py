"""Neural colour transfer end to end: paper 001, Algorithm 2 (Arshad, Sajid & Khan), after He et al.
2019 ("Progressive color transfer with dense semantic correspondences", ACM TOG 38(2)).

For a source S and a reference R:

1. features of both at VGG19 layer L, standardised per channel (Eq. 1) and enhanced with cluster or
   segmentation features, standardised again (lines 3-7; :mod:`stainlab.nct.features`);
2. PatchMatch fields S -> R and R -> S (lines 8-9; :mod:`stainlab.nct.patchmatch`);
3. the guidance G: R's colours voted onto S's grid by bidirectional similarity (line 10;
   :mod:`stainlab.nct.voting`);
4. per-pixel linear maps a, b of S's colours towards G minimising E_D + lambda_L E_L + lambda_NL E_NL
   (line 12; :mod:`stainlab.nct.local_transfer`), upsampled to S's full resolution with the fast guided
   filter (line 13; :mod:`stainlab.nct.guided_filter`);
5. the output ``a * S + b`` (line 14), in CIELAB (scaled by 1/100), as He et al. transfer colour.

The correspondence and the maps are computed at the resolution of layer L of a working copy of the
images whose longer side is at most ``work_side`` (paper 001 runs layer 1 at the image's resolution;
``work_side=None`` does so at any size); the guided filter brings a and b back to the full image.
Luminance (the guide of the filter and of E_L's edge weights) uses paper 001's Eq. 3 weights
0.299/0.587/0.114 by default, with Rec. 709's 0.2126/0.7152/0.0722 (Eq. 2) as the alternative.

``progressive=True`` runs He et al.'s coarse-to-fine scheme (Sec. 3): layers 5, 4, ... down to L,
each level's output being the next level's source.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from stainlab.color.lab import lab_to_rgb, rgb_to_lab
from stainlab.errors import InputError
from stainlab.nct import features as feat
from stainlab.nct.guided_filter import fast_guided_upsample, resize
from stainlab.nct.local_transfer import local_affine_maps
from stainlab.nct.patchmatch import bidirectional_fields, patch_descriptors
from stainlab.nct.voting import vote

LUMINANCE = {"bt601": (0.299, 0.587, 0.114),    # paper 001, Eq. 3 (OpenCV's weights): its correction
             "bt709": (0.2126, 0.7152, 0.0722)}  # paper 001, Eq. 2: what Wanyu et al.'s code used
LAMBDAS = {"default": (0.125, 2.0),  # He et al. 2019 defaults, quoted in paper 001 Sec. 2.2.5
           "tuned": (0.001, 0.4)}    # paper 001 Sec. 2.2.5: tuned "by trial and error" for blood smears
LAB_SCALE = 100.0  # CIELAB divided by 100: lightness in [0, 1], chroma of tissue within about [-0.5, 0.5]


@dataclass(frozen=True)
class NCTConfig:
    """Hyper-parameters of neural colour transfer (the paper's values where it gives them)."""

    layer: int = 1                 # paper 001 Sec. 2.2.6: one layer, 1..5; layer 1 performs best
    lambda_l: float = 0.125        # paper 001 Eq. 4 / Sec. 2.2.5 (He et al. 2019 default)
    lambda_nl: float = 2.0         # paper 001 Eq. 4 / Sec. 2.2.5 (He et al. 2019 default)
    luminance: tuple[float, float, float] = LUMINANCE["bt601"]  # paper 001 Eq. 3
    clusters: int = 4              # paper 001 Sec. 2.2.3 clustering (k is ours: 4 beat 2 and 3, see note)
    label_weight: float = 4.0      # ours: scale of the cluster/segmentation channels after Eq. 1 (4 beat 2, 8)
    patch: int = 3                 # He et al. 2019 Sec. 4.1: 3x3 patches for the NNF and the voting
    pca_dims: int | None = 16      # ours: patch descriptors projected on 16 principal components
    pixel_dims: int | None = 12    # ours: pixel features first projected on 12 (cheaper patch projection)
    iterations: int = 5            # Barnes et al. 2009 Sec. 3.2: 4-5 iterations converge
    fine_iterations: int = 2       # ours: iterations at each finer level of the PatchMatch pyramid
    edge_sigma: float = 0.1        # ours: E_L edge weight exp(-dlum^2 / 2 sigma^2), luminance in [0, 1]
    colour_cell: float = 0.08      # ours: E_NL colour cells, 8 CIELAB units a side
    ridge: float = 1e-3            # ours: pull toward the global map where E_D leaves (a, b) free
    solver_iterations: int = 150   # conjugate-gradient cap
    filter_radius: int = 4         # He & Sun 2015 fast guided filter: window radius at working resolution
    filter_eps: float = 1e-4       # guided filter regulariser (luminance in [0, 1])
    work_side: int | None = 512    # ours: longest side the correspondence is computed at (None: full)
    progressive: bool = False      # He et al. 2019 Sec. 3: coarse-to-fine over layers 5..layer
    seed: int = 0

    def layers(self) -> list[int]:
        return list(range(5, self.layer - 1, -1)) if self.progressive else [self.layer]


@dataclass
class Prepared:
    """One image at one layer: colours, luminance, standardised features and labels at feature resolution."""

    lab: np.ndarray        # (h, w, 3) CIELAB / 100
    luminance: np.ndarray  # (h, w) in [0, 1]
    features: np.ndarray   # (h, w, C) Eq. 1 standardised VGG19 features
    labels: np.ndarray     # (h, w) int cluster or segmentation labels


@dataclass
class Timings:
    """Seconds spent per stage, summed over calls (for the benchmark)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def luminance_of(rgb: np.ndarray, weights) -> np.ndarray:
    """Weighted sum of RGB channels (float, [0, 1]), written out rather than a BLAS product."""
    return weights[0] * rgb[..., 0] + weights[1] * rgb[..., 1] + weights[2] * rgb[..., 2]


def working_size(shape, work_side: int | None) -> tuple[int, int]:
    h, w = shape[:2]
    if work_side is None or max(h, w) <= work_side:
        return h, w
    scale = work_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def check_size(shape, config: NCTConfig, what: str) -> None:
    """Refuse images too small for the deepest layer used."""
    need = feat.min_side(max(config.layers()))
    size = working_size(shape, config.work_side)
    if min(size) < need:
        raise InputError(f"{what}: {shape[0]}x{shape[1]} is too small for VGG19 layer "
                         f"{max(config.layers())} (needs at least {need} pixels a side)")


def prepare(image: np.ndarray, net, config: NCTConfig, layer: int, labels: np.ndarray | None = None) -> Prepared:
    """Features, colours and labels of a uint8 image at ``layer`` (labels: a user map, or k-means)."""
    rgb = image.astype(np.float64) / 255.0
    work = resize(rgb, working_size(rgb.shape, config.work_side), "area")
    features = feat.vgg_features(net, work, layer)
    small = resize(work, features.shape[:2], "area")
    lab = rgb_to_lab(small * 255.0) / LAB_SCALE
    if labels is None:
        labels = feat.cluster_labels(lab, config.clusters, config.seed)
    else:
        labels = feat.resize_labels(labels, features.shape[:2])
    return Prepared(lab, luminance_of(small, config.luminance), features, labels)


def _enhanced(source: Prepared, reference: Prepared, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Both feature maps enhanced with indicators over the union of their label values (Sec. 2.2.3)."""
    values = np.union1d(np.unique(source.labels), np.unique(reference.labels))
    return (feat.enhance(source.features, feat.one_hot(source.labels, values), weight),
            feat.enhance(reference.features, feat.one_hot(reference.labels, values), weight))


def transfer_level(image: np.ndarray, reference: Prepared, net, config: NCTConfig, layer: int,
                   labels: np.ndarray | None = None, timings: Timings | None = None) -> np.ndarray:
    """One level of Algorithm 2: uint8 ``image`` recoloured after the prepared reference."""
    timings = timings or Timings()
    with timings.stage("features"):
        source = prepare(image, net, config, layer, labels)
        fs, fr = _enhanced(source, reference, config.label_weight)
    with timings.stage("patchmatch"):
        ds, dr = patch_descriptors(fs, fr, config.patch, config.pca_dims, config.seed, config.pixel_dims)
        forward, backward = bidirectional_fields(ds, dr, config.iterations, config.seed, config.fine_iterations)
    with timings.stage("voting"):
        guide = vote(reference.lab, forward, backward, config.patch)
    with timings.stage("local_transfer"):
        a, b = local_affine_maps(source.lab, guide, source.luminance, config.lambda_l, config.lambda_nl,
                                 sigma=config.edge_sigma, cell=config.colour_cell, ridge=config.ridge,
                                 iterations=config.solver_iterations, groups=source.labels)
    with timings.stage("guided_filter"):
        rgb = image.astype(np.float64) / 255.0
        maps = fast_guided_upsample(source.luminance, np.concatenate([a, b], axis=-1),
                                    luminance_of(rgb, config.luminance), config.filter_radius, config.filter_eps)
    with timings.stage("colour"):
        lab = rgb_to_lab(image) / LAB_SCALE
        out = lab_to_rgb((maps[..., :3] * lab + maps[..., 3:]) * LAB_SCALE)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def check_labels(labels, shape, what: str) -> np.ndarray | None:
    """A user label map as an (H, W) int array matching ``shape``, or None; InputError otherwise."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != tuple(shape[:2]):
        raise InputError(f"{what}: segmentation of shape {labels.shape} does not match the image "
                         f"({shape[0]}x{shape[1]}); give one integer label per pixel")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InputError(f"{what}: segmentation labels must be integers, got dtype {labels.dtype}")
    return labels.astype(np.int64)


class ReferenceCache:
    """The reference prepared once per layer (its features do not depend on the source)."""

    def __init__(self, image: np.ndarray, labels: np.ndarray | None = None) -> None:
        self.image, self.labels, self._levels = image, labels, {}

    def at(self, net, config: NCTConfig, layer: int) -> Prepared:
        if layer not in self._levels:
            self._levels[layer] = prepare(self.image, net, config, layer, self.labels)
        return self._levels[layer]


def neural_color_transfer(source: np.ndarray, reference: np.ndarray | ReferenceCache, net,
                          config: NCTConfig = NCTConfig(), source_labels=None, reference_labels=None,
                          timings: Timings | None = None) -> np.ndarray:
    """Algorithm 2 on uint8 RGB arrays: ``source`` recoloured after ``reference``, same shape, uint8.

    ``net``: the VGG19 of :func:`stainlab.nct.features.feature_network`. Segmentations (integer label
    maps of each image's size) replace the k-means clusters; give both or neither.
    """
    if isinstance(reference, np.ndarray):
        reference = ReferenceCache(reference, check_labels(reference_labels, reference.shape, "nct reference"))
    source_labels = check_labels(source_labels, source.shape, "nct source")
    if (source_labels is None) != (reference.labels is None):
        raise InputError("nct: give a segmentation for both the source and the reference, or for neither")
    check_size(source.shape, config, "nct source")
    check_size(reference.image.shape, config, "nct reference")
    out = source
    for layer in config.layers():
        prepared = reference.at(net, config, layer)
        out = transfer_level(out, prepared, net, config, layer, source_labels, timings)
    return out
