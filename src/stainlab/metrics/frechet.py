"""The Frechet distance between two feature sets, each summarised as a Gaussian (the "FID" formula).

Dowson & Landau, "The Frechet distance between multivariate normal distributions", J. Multivariate
Anal. 12 (1982): ``d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))``. Heusel et al., "GANs
trained by a two time-scale update rule converge to a local Nash equilibrium", NeurIPS 2017, Eq. 6,
apply it to InceptionV3 pool features (FID). The features come from any extractor; this module only
takes them. The numerical guard follows the reference pytorch-fid code: when ``sqrtm`` of the product is
not finite, ``eps * I`` is added to both covariances; a negligible imaginary part is dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from stainlab.errors import InputError


def _mean_and_covariance(features, what: str) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise InputError(f"{what}: expected an (n_samples >= 2, n_features) array, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise InputError(f"{what}: features contain NaN or inf")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Squared Frechet distance ``d^2`` of N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise InputError(f"frechet distance: mismatched shapes mu {mu1.shape} / {mu2.shape}, "
                         f"sigma {sigma1.shape} / {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(sigma1.shape[0])
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise InputError(f"frechet distance: sqrtm has a large imaginary part "
                             f"({np.abs(covmean.imag).max():.3g}); the covariances are not positive semi-definite")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean), 0.0))


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Squared Frechet distance of two ``(n, d)`` feature sets: the FID for InceptionV3 pool-3 features.

    Like FID, the value reported is ``d^2`` (no square root). Means and unbiased covariances (``np.cov``, ddof 1, as pytorch-fid) of each set, then
    :func:`frechet_distance_from_stats`. Both sets need the same feature dimension ``d``.
    """
    mu1, sigma1 = _mean_and_covariance(feats_a, "feats_a")
    mu2, sigma2 = _mean_and_covariance(feats_b, "feats_b")
    return frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, eps)
