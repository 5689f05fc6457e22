"""Semantic metrics: is the content (a class label) kept through a stain transform?

Wei et al., "DeReStainer" (paper 002, Sec. 3.2), embed the ground-truth IHC images of the test set with
a classifier into a feature library; each generated image is embedded too, and scored by
- top-k accuracy: correct when any of its k nearest library items has its HER2 level (k = 1, 3, 5);
- kNN accuracy: correct when the majority label of its k nearest library items (k = 10) is its level.
Neighbours are ranked by cosine distance ``1 - cos(q, l)`` by default (the paper's comparator and
hematoxylin losses compare features by cosine; it does not name the retrieval distance), or Euclidean
distance on request. Ties in distance keep library order.

Sjostrand et al. (paper 004, Sec. 6) classify each real image and its transformed counterpart and report
the fraction of pairs given the same class: :func:`classification_agreement`.
"""

from __future__ import annotations

import numpy as np

from stainlab.errors import InputError

METRICS = ("cosine", "euclidean")


def _features(feats, what: str) -> np.ndarray:
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what}: expected an (n >= 1, d >= 1) feature array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{what}: features contain NaN or inf")
    return arr


def _labels(labels, n: int, what: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{what}: expected {n} labels (one per feature row), got shape {arr.shape}")
    return arr


def _unit_rows(feats: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError(f"{what}: a zero feature vector has no cosine distance; use metric='euclidean'")
    return feats / norms


def _distances(query: np.ndarray, library: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return 1.0 - _unit_rows(query, "query_feats") @ _unit_rows(library, "library_feats").T
    if metric == "euclidean":
        squared = (query ** 2).sum(1)[:, None] + (library ** 2).sum(1)[None, :] - 2 * query @ library.T
        return np.sqrt(np.maximum(squared, 0.0))
    raise InputError(f"unknown metric {metric!r}; use one of {METRICS}")


def nearest_labels(query_feats, library_feats, library_labels, k: int, metric: str = "cosine") -> np.ndarray:
    """``(n_query, k)`` labels of each query's k nearest library items, nearest first."""
    query = _features(query_feats, "query_feats")
    library = _features(library_feats, "library_feats")
    labels = _labels(library_labels, library.shape[0], "library_labels")
    if query.shape[1] != library.shape[1]:
        raise InputError(f"query and library features differ in dimension: {query.shape[1]} vs {library.shape[1]}")
    if not 1 <= k <= library.shape[0]:
        raise InputError(f"k must be between 1 and the library size {library.shape[0]}, got {k}")
    order = np.argsort(_distances(query, library, metric), axis=1, kind="stable")[:, :k]
    return labels[order]


def topk_accuracy(query_feats, query_labels, library_feats, library_labels, k: int = 1,
                  metric: str = "cosine") -> float:
    """Fraction of queries with their own label among their k nearest library items (paper 002, Sec. 3.2)."""
    neighbours = nearest_labels(query_feats, library_feats, library_labels, k, metric)
    truth = _labels(query_labels, neighbours.shape[0], "query_labels")
    return float((neighbours == truth[:, None]).any(axis=1).mean())


def _majority(row: np.ndarray):
    """Most frequent label of ``row``; a tie goes to the tied label met first (the nearer neighbour)."""
    values, first_seen, counts = np.unique(row, return_index=True, return_counts=True)
    tied = counts == counts.max()
    return values[tied][np.argmin(first_seen[tied])]


def knn_accuracy(query_feats, query_labels, library_feats, library_labels, k: int = 10,
                 metric: str = "cosine") -> float:
    """Fraction of queries whose k nearest library items vote, by majority, for their label (paper 002,
    Sec. 3.2, k = 10). A tied vote goes to the label of the nearer neighbour."""
    neighbours = nearest_labels(query_feats, library_feats, library_labels, k, metric)
    truth = _labels(query_labels, neighbours.shape[0], "query_labels")
    votes = np.array([_majority(row) for row in neighbours])
    return float((votes == truth).mean())


def classification_agreement(labels_a, labels_b) -> float:
    """Fraction of pairs classified the same, e.g. a real image and its transformed copy (paper 004, Sec. 6:
    88.6% for pcNet, 85.2% for ccGAN over 981 pairs)."""
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise InputError(f"classification_agreement: expected two non-empty label vectors of one length, "
                         f"got shapes {a.shape} and {b.shape}")
    return float((a == b).mean())
