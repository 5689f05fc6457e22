"""Semantic scores of virtual stainers: is the HER2 level of a generated IHC image right? (paper 002)

Paper 002, Sec. 3.2: "a pre-trained ResNet-50 classifier on IHC images different from what the
comparator is trained on" embeds the ground-truth IHC images of the test set into a feature library;
each generated image is embedded too and scored by

- ``top1``, ``top3``, ``top5``: its level is among the levels of its k nearest library images
  (k = 1, 3, 5; :func:`stainlab.metrics.topk_accuracy`);
- ``knn10``: the majority level of its 10 nearest library images is its level
  (:func:`stainlab.metrics.knn_accuracy`, k = 10 as the paper).

Each is 0 or 1 per image, so their means over the test set are the paper's accuracies. ``phash`` is
paper 003's perceptual-hash similarity (Sec. 5.2: bits of the ResNet ``layer2`` channel means above
their median) of each generated image and its ground truth, computed with the same classifier's
network instead of an ImageNet ResNet18, so the evaluation needs no download.

The classifier is a model file of ``stainlab train comparator`` (trained with another seed than the
comparator). :class:`SemanticScorer` plugs into :class:`stainlab.evaluate.Harness` (``semantic=``) and
``stainlab evaluate --classifier PATH``; the levels come from BCI file names (``00001_test_2+.png``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from stainlab.data.folders import BCIDataset, PairedFolders, level_from_name
from stainlab.errors import InputError
from stainlab.io.images import read_image
from stainlab.metrics import knn_accuracy, topk_accuracy
from stainlab.metrics.features import hash_similarity, perceptual_hash
from stainlab.nets.inference import to_net

TOP_K = (1, 3, 5)  # paper 002, Sec. 3.2: "top-k HER2 level accuracy with k in {1, 3, 5}"
KNN_K = 10  # paper 002, Sec. 3.2: "we employ k = 10"
NAMES = tuple(f"top{k}" for k in TOP_K) + (f"knn{KNN_K}", "phash")


def bci_pairs(root, split: str = "test") -> PairedFolders:
    """One split of a BCI-layout folder as H&E (source) / IHC (ground truth) pairs."""
    return PairedFolders(Path(root), BCIDataset.open(root, split).pairs)


class SemanticScorer:
    """Scores generated images by the HER2 level of their neighbours in a library of ground-truth IHC.

    ``truths``: key -> ground-truth IHC (uint8 HxWx3); ``levels``: key -> HER2 level; ``embed``:
    uint8 image -> 1-D feature vector; ``hasher``: uint8 image -> perceptual-hash bits.
    """

    names = NAMES

    def __init__(self, truths: dict, levels: dict, embed: Callable, hasher: Callable) -> None:
        if set(truths) != set(levels):
            raise InputError("semantic scores: every ground-truth image needs its level")
        if len(truths) < KNN_K:
            raise InputError(f"semantic scores need at least {KNN_K} ground-truth test images (kNN with "
                             f"k = {KNN_K}, paper 002 Sec. 3.2); got {len(truths)}")
        self.embed, self.hasher, self.levels = embed, hasher, dict(levels)
        self.keys = list(truths)
        self.library = np.stack([np.asarray(embed(truths[k]), dtype=np.float64) for k in self.keys])
        self.library_levels = np.array([self.levels[k] for k in self.keys])
        self.truth_hashes = {k: hasher(truths[k]) for k in self.keys}

    @classmethod
    def from_classifier(cls, path, data: PairedFolders, device: str | None = None) -> SemanticScorer:
        """The scorer of a HER2 classifier file over the pairs of ``data`` (levels from the file names),
        its network run on ``device`` (None: the CPU)."""
        from stainlab.nets.devices import torch_device
        from stainlab.training.recipes.comparator import load_classifier

        network = load_classifier(path)
        if device is not None:
            network.to(torch_device(device))
        truths = {a.stem: read_image(b)[0] for a, b in data.pairs}
        levels = {a.stem: level_from_name(a) for a, _ in data.pairs}
        return cls(truths, levels, lambda image: classifier_features(network, image),
                   lambda image: perceptual_hash(image, model=network))

    def score(self, key: str, output: np.ndarray) -> dict[str, float]:
        """The semantic scores of ``output``, the generated image for the pair ``key``."""
        if key not in self.levels:
            raise InputError(f"semantic scores: no ground truth named {key!r}")
        query, level = np.asarray(self.embed(output), dtype=np.float64)[None], [self.levels[key]]
        scores = {f"top{k}": topk_accuracy(query, level, self.library, self.library_levels, k)
                  for k in TOP_K}
        scores[f"knn{KNN_K}"] = knn_accuracy(query, level, self.library, self.library_levels, KNN_K)
        scores["phash"] = hash_similarity(self.hasher(output), self.truth_hashes[key])
        return scores


def classifier_features(network, image: np.ndarray) -> np.ndarray:
    """Pooled last-stage features of one uint8 image (what the comparator loss compares, too)."""
    from stainlab.nets.derestainer import comparator_features

    parameter = next(network.parameters())
    with torch.inference_mode():
        batch = to_net(np.array(image)[None]).to(parameter.device)
        return comparator_features(network, batch)[0].double().cpu().numpy()
