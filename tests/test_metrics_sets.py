"""Unpaired and set-level metrics: colour-distribution distances, the Frechet distance against closed
forms, cycle consistency and the tile-seam score."""

import numpy as np
import pytest
from synth import he_image

from stainlab import metrics
from stainlab.errors import InputError


@pytest.fixture(scope="module")
def tissue():
    return he_image((96, 112), seed=4)


def shifted(image, amount):
    """``image`` with ``amount`` grey levels taken off R and added to B (a known colour cast)."""
    out = image.astype(int)
    out[..., 0] -= amount
    out[..., 2] += amount
    return np.clip(out, 0, 255).astype(np.uint8)


DISTANCES = [
    lambda a, b: metrics.channel_wasserstein(a, b, space="lab"),
    lambda a, b: metrics.channel_wasserstein(a, b, space="od"),
    metrics.histogram_intersection,
    metrics.chi_square_distance,
]


@pytest.mark.parametrize("distance", DISTANCES, ids=["wasserstein-lab", "wasserstein-od", "intersection", "chi2"])
def test_distribution_distances_are_zero_symmetric_and_grow_with_a_colour_cast(distance, tissue):
    assert distance(tissue, tissue) == pytest.approx(0.0, abs=1e-12)
    other = shifted(tissue, 10)
    assert distance(tissue, other) == pytest.approx(distance(other, tissue), abs=1e-12)
    values = [distance(tissue, shifted(tissue, k)) for k in (3, 8, 16, 32)]
    assert (np.diff(values) > 0).all(), values


def test_wasserstein_in_rgb_recovers_a_uniform_offset_exactly(tissue):
    dark = tissue // 2                                     # room to add 40 without clipping
    assert metrics.channel_wasserstein(dark, dark + 40, space="rgb") == pytest.approx(40.0, abs=1e-9)
    rotated = np.rot90(dark).copy()                        # same pixels, another size: distance 0
    assert metrics.channel_wasserstein(dark, [rotated, rotated], space="lab") == pytest.approx(0.0, abs=1e-9)


def test_histogram_distances_of_disjoint_colours_are_one():
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((6, 5, 3), 255, np.uint8)
    assert metrics.histogram_intersection(black, white) == pytest.approx(1.0)
    assert metrics.chi_square_distance(black, white) == pytest.approx(1.0)
    with pytest.raises(InputError, match="bins"):
        metrics.histogram_intersection(black, white, bins=0)
    with pytest.raises(InputError, match="colour space"):
        metrics.channel_wasserstein(black, white, space="hsv")


def gaussian_samples(mean, cov, n, seed):
    """``n`` samples whose sample mean and (ddof 1) covariance are exactly ``mean`` and ``cov``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    return z @ np.linalg.cholesky(cov).T + mean


def spd_sqrt(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_frechet_distance_of_one_dimensional_gaussians():
    # N(0, 1) vs N(3, 4): 3^2 + 1 + 4 - 2 * sqrt(1 * 4) = 10.
    a = gaussian_samples(np.array([0.0]), np.array([[1.0]]), 500, seed=0)
    b = gaussian_samples(np.array([3.0]), np.array([[4.0]]), 700, seed=1)
    assert metrics.frechet_distance(a, b) == pytest.approx(10.0, abs=1e-6)


def test_frechet_distance_matches_the_closed_form_for_general_covariances():
    rng = np.random.default_rng(7)
    d = 6
    m1, m2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    cov1, cov2 = m1 @ m1.T + 0.1 * np.eye(d), m2 @ m2.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    root1 = spd_sqrt(cov1)                                 # Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2) - 2 * np.trace(spd_sqrt(root1 @ cov2 @ root1))
    a, b = gaussian_samples(mu1, cov1, 400, seed=2), gaussian_samples(mu2, cov2, 300, seed=3)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, abs=1e-3)
    assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), abs=1e-6)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_survives_singular_covariances_and_rejects_mismatches():
    rng = np.random.default_rng(0)
    few = rng.normal(size=(5, 32))                         # 5 samples in 32 dims: rank-4 covariance
    value = metrics.frechet_distance(few, few + 0.5)
    assert np.isfinite(value) and value == pytest.approx(32 * 0.25, rel=1e-3)
    with pytest.raises(InputError, match="mismatched"):
        metrics.frechet_distance(few, rng.normal(size=(5, 16)))
    with pytest.raises(InputError, match="n_samples"):
        metrics.frechet_distance(few[:1], few)


def test_cycle_consistency_reports_ssim_psnr_and_mae(tissue):
    assert metrics.cycle_consistency(tissue, tissue) == {"ssim": pytest.approx(1.0), "psnr": float("inf"),
                                                         "mae": 0.0}
    recon = shifted(tissue, 4)
    scores = metrics.cycle_consistency(tissue, recon)
    assert scores == {"ssim": metrics.ssim(tissue, recon), "psnr": metrics.psnr(tissue, recon),
                      "mae": metrics.mae(tissue, recon)}
    assert 0.0 < scores["mae"] <= 8 * 2 / 3


def tiled_with_offsets(image, tile, offset):
    """``image`` with every other tile (checkerboard) brightened by ``offset`` grey levels."""
    out = image.astype(int)
    for i in range(0, image.shape[0], tile):
        for j in range(0, image.shape[1], tile):
            if (i // tile + j // tile) % 2:
                out[i:i + tile, j:j + tile] += offset
    return np.clip(out, 0, 255).astype(np.uint8)


def test_seam_score_measures_a_per_tile_offset_exactly_on_flat_tiles():
    flat = np.full((64, 96, 3), 100, np.uint8)
    assert metrics.border_differences(tiled_with_offsets(flat, 32, 12), 32) == (12.0, 0.0)
    assert metrics.seam_score(flat, 32) == 0.0


def test_seam_score_finds_tile_offsets_in_tissue(tissue):
    dim = tissue // 2 + 40                                 # no clipping for offsets up to 40
    clean = metrics.seam_score(dim, 32)
    assert abs(clean) < 1.0
    scores = [metrics.seam_score(tiled_with_offsets(dim, 32, d), 32) for d in (5, 10, 20)]
    assert scores[0] > clean + 2 and scores[0] < scores[1] < scores[2]
    assert scores[2] == pytest.approx(20, abs=3)
    # Measured on the wrong grid, the same seams count mostly as "inside" differences.
    assert metrics.seam_score(tiled_with_offsets(dim, 32, 20), 24) < scores[2] / 2
    batch = metrics.seam_score(np.stack([dim, tiled_with_offsets(dim, 32, 10)]), 32)
    np.testing.assert_allclose(batch, [clean, scores[1]])


def test_seam_score_rejects_tiles_without_borders(tissue):
    with pytest.raises(InputError, match="no 128x128 tile borders"):
        metrics.seam_score(tissue, 128)
    with pytest.raises(InputError, match="tile"):
        metrics.seam_score(tissue, 0)
