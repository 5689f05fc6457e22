"""Image-quality and distribution metrics, NumPy first, batch-friendly.

Paired images (uint8 ``HxWx3`` or ``NxHxWx3``, or float torch tensors in [0, 1] shaped ``(N, 3, H, W)``):
:func:`psnr`, :func:`mae`, :func:`ciede2000`, :func:`ssim`, :func:`ms_ssim`, :func:`cycle_consistency`.
Unpaired colour distributions: :func:`channel_wasserstein`, :func:`sliced_wasserstein`,
:func:`histogram_intersection`, :func:`chi_square_distance`. Features: :func:`frechet_distance`. Tiling: :func:`seam_score`.
A differentiable :func:`ssim_torch` serves losses. With a feature extractor (the FID InceptionV3 or
ResNet18 of :mod:`stainlab.nets`, weights from a file the user supplies, or any callable): :func:`fid`,
paper 003's :func:`perceptual_hash` / :func:`hash_similarity`, and paper 002's :func:`topk_accuracy` /
:func:`knn_accuracy`; paper 004's :func:`classification_agreement` compares label lists.
"""

from stainlab.metrics.consistency import (
    border_differences,
    cycle_consistency,
    seam_score,
)
from stainlab.metrics.distribution import (
    channel_wasserstein,
    chi_square_distance,
    histogram_intersection,
    sliced_wasserstein,
)
from stainlab.metrics.frechet import frechet_distance, frechet_distance_from_stats
from stainlab.metrics.pixel import ciede2000, delta_e_2000, mae, psnr
from stainlab.metrics.semantic import classification_agreement, knn_accuracy, topk_accuracy
from stainlab.metrics.structural import ms_ssim, ssim, ssim_torch

__all__ = [
    "border_differences", "channel_wasserstein", "chi_square_distance", "ciede2000", "cycle_consistency",
    "delta_e_2000", "frechet_distance", "frechet_distance_from_stats", "histogram_intersection", "mae",
    "ms_ssim", "psnr", "seam_score", "ssim", "ssim_torch", "extract_features", "fid", "hash_similarity",
    "perceptual_hash", "classification_agreement", "knn_accuracy", "topk_accuracy", "sliced_wasserstein",
]
