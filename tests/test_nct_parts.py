"""The parts of neural colour transfer (paper 001, Algorithm 2) against answers known in advance:
PatchMatch recovers a known correspondence, voting rebuilds a permuted image, the local transfer
reproduces known affine colour maps, and the guided filter equals a direct windowed computation."""

import numpy as np
import pytest
from scipy import ndimage

from stainlab.nct.features import cluster_labels, enhance, resize_labels, standardize
from stainlab.nct.guided_filter import box_mean, fast_guided_upsample, guided_filter
from stainlab.nct.local_transfer import colour_cells, global_affine, local_affine_maps
from stainlab.nct.patchmatch import (
    bidirectional_fields,
    nearest_neighbour_field,
    patch_descriptors,
    pyramid_field,
)
from stainlab.nct.voting import vote


def smooth_features(shape, channels=8, seed=0, sigma=1.5):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape + (channels,)), (sigma, sigma, 0)).astype(np.float32)


def block_permuted(image, block, seed):
    """``image`` cut into ``block`` x ``block`` tiles shuffled; also the source -> image coordinate map."""
    h, w = image.shape[:2]
    by, bx = h // block, w // block
    order = np.random.default_rng(seed).permutation(by * bx)
    out = np.empty_like(image)
    truth = np.empty((h, w, 2), dtype=np.int64)
    yy, xx = np.mgrid[0:block, 0:block]
    for dst, src in enumerate(order):
        dy, dx = divmod(dst, bx)
        sy, sx = divmod(src, bx)
        out[dy * block:(dy + 1) * block, dx * block:(dx + 1) * block] = \
            image[sy * block:(sy + 1) * block, sx * block:(sx + 1) * block]
        truth[dy * block:(dy + 1) * block, dx * block:(dx + 1) * block] = np.stack(
            [sy * block + yy, sx * block + xx], axis=-1)
    return out, truth


def exact_fraction(nnf, truth, margin=0):
    hit = (nnf[..., 0] == truth[..., 0]) & (nnf[..., 1] == truth[..., 1])
    return hit[margin:hit.shape[0] - margin, margin:hit.shape[1] - margin].mean()


# -- PatchMatch ------------------------------------------------------------------------------------
def test_patchmatch_finds_the_shift_of_a_shifted_map():
    reference = smooth_features((96, 112))
    source = reference[9:81, 13:103]  # the reference seen through a window: true match = p + (9, 13)
    ds, dr = patch_descriptors(source, reference, patch=3, dims=16, seed=0)
    nnf, distance = nearest_neighbour_field(ds, dr, iterations=5, seed=0)
    yy, xx = np.mgrid[0:source.shape[0], 0:source.shape[1]]
    truth = np.stack([yy + 9, xx + 13], axis=-1)
    assert exact_fraction(nnf, truth, margin=1) > 0.97
    assert nnf.dtype == np.int32 and distance.shape == source.shape[:2] and np.isfinite(distance).all()
    assert (nnf[..., 0] < reference.shape[0]).all() and (nnf[..., 1] < reference.shape[1]).all() and nnf.min() >= 0


def test_coarse_to_fine_search_finds_the_shift_too():
    reference = smooth_features((160, 176), seed=10, sigma=2.5)
    source = reference[11:147, 5:165]
    ds, dr = patch_descriptors(source, reference, patch=3, dims=16, seed=0)
    nnf = pyramid_field(ds, dr, iterations=5, seed=0, fine_iterations=2, coarsest=32)
    yy, xx = np.mgrid[0:source.shape[0], 0:source.shape[1]]
    assert exact_fraction(nnf, np.stack([yy + 11, xx + 5], axis=-1), margin=1) > 0.97


def test_patchmatch_finds_the_blocks_of_a_permuted_map():
    reference = smooth_features((96, 96), seed=1)
    source, truth = block_permuted(reference, 24, seed=2)
    ds, dr = patch_descriptors(source, reference, patch=3, dims=16, seed=0)
    nnf, _ = nearest_neighbour_field(ds, dr, iterations=5, seed=3)
    inner = np.ones(source.shape[:2], bool)  # pixels whose 3x3 patch lies inside one block
    for k in range(0, 96, 24):
        inner[max(k - 1, 0):k + 1] = False
        inner[:, max(k - 1, 0):k + 1] = False
    inner[-1], inner[:, -1] = False, False
    hit = (nnf[..., 0] == truth[..., 0]) & (nnf[..., 1] == truth[..., 1])
    assert hit[inner].mean() > 0.97


def test_patchmatch_beats_its_random_start_and_is_seeded():
    reference = smooth_features((64, 64), seed=4)
    source, truth = block_permuted(reference, 16, seed=5)
    ds, dr = patch_descriptors(source, reference, dims=16)
    start, start_distance = nearest_neighbour_field(ds, dr, iterations=0, seed=7)
    nnf, distance = nearest_neighbour_field(ds, dr, iterations=4, seed=7)
    assert exact_fraction(start, truth) < 0.01 and exact_fraction(nnf, truth) > 0.85
    assert distance.mean() < 0.05 * start_distance.mean()
    again, _ = nearest_neighbour_field(ds, dr, iterations=4, seed=7)
    other, _ = nearest_neighbour_field(ds, dr, iterations=4, seed=8)
    np.testing.assert_array_equal(nnf, again)
    assert (other != nnf).any()


def test_pca_descriptors_keep_the_patch_distance_order():
    """Projected distances are full patch SSDs minus the discarded energy: never larger, and close."""
    a, b = smooth_features((40, 40), 6, seed=6), smooth_features((40, 40), 6, seed=7)
    full_a, full_b = patch_descriptors(a, b, dims=None)
    pca_a, pca_b = patch_descriptors(a, b, dims=16)
    assert full_a.shape[2] == 54 and pca_a.shape[2] == 16
    full = ((full_a[:, :, None, None] - full_b[None, None, ::5, ::5]) ** 2).sum(-1).ravel()
    pca = ((pca_a[:, :, None, None] - pca_b[None, None, ::5, ::5]) ** 2).sum(-1).ravel()
    assert (pca <= full * (1 + 1e-4) + 1e-4).all()
    assert np.corrcoef(full, pca)[0, 1] > 0.95


# -- voting ----------------------------------------------------------------------------------------
def test_bidirectional_voting_rebuilds_a_permuted_image():
    """The reference is the source cut in 32x32 blocks and shuffled: away from the block seams (where
    patches straddle blocks and votes scatter) the guidance is the source's own colours, exactly."""
    features = smooth_features((96, 96), 8, seed=8)
    permuted, _ = block_permuted(features, 32, seed=9)
    ds, dr = patch_descriptors(features, permuted, dims=16)
    forward, backward = bidirectional_fields(ds, dr, iterations=5, seed=0)
    colours, reference = features[..., :3], permuted[..., :3]  # vote three of the channels as "colours"
    guide = vote(reference, forward, backward, patch=3)
    assert guide.shape == colours.shape
    exact = np.abs(guide - colours).max(axis=-1) < 1e-6
    inner = np.ones(exact.shape, bool)
    for k in range(0, 97, 32):
        inner[max(k - 3, 0):k + 3] = False
        inner[:, max(k - 3, 0):k + 3] = False
    assert exact[inner].mean() > 0.88 and exact.mean() > 0.7
    assert np.abs(guide - colours).mean() < 0.05 * np.abs(colours).mean()


def test_voting_averages_coherence_and_completeness_by_image_size():
    """Hand-made fields: a 1x2 source whose pixels both map to the reference's first pixel (coherence),
    while the reference's two pixels map to source pixel 1 (completeness)."""
    reference = np.array([[[10.0], [30.0]]])
    forward = np.zeros((1, 2, 2), np.int32)
    backward = np.array([[[0, 1], [0, 1]]], np.int32)
    guide = vote(reference, forward, backward, patch=1)
    # pixel 0: coherence only (10); pixel 1: coherence 10 and completeness 10 + 30, equal weights 1/2
    np.testing.assert_allclose(guide[0, :, 0], [10.0, (10 + 10 + 30) / 3])


# -- local colour transfer -------------------------------------------------------------------------
def two_region_image(shape=(80, 96), seed=0):
    """A textured source whose left and right halves have separate colour ranges."""
    rng = np.random.default_rng(seed)
    s = ndimage.gaussian_filter(rng.uniform(0, 1, shape + (3,)), (2, 2, 0))
    s = (s - s.min()) / (s.max() - s.min())
    right = np.zeros(shape, bool)
    right[:, shape[1] // 2:] = True
    return np.where(right[..., None], 0.5 + 0.5 * s, 0.5 * s), right


A1, B1 = np.array([0.7, 1.3, 0.9]), np.array([0.10, -0.20, 0.05])
A2, B2 = np.array([1.2, 0.8, 1.0]), np.array([-0.10, 0.10, 0.00])


@pytest.mark.parametrize("lambdas", [(0.125, 2.0), (0.001, 0.4)])
def test_local_transfer_reproduces_a_global_affine_map(lambdas):
    source, _ = two_region_image()
    a, b = local_affine_maps(source, source * A1 + B1, source.mean(-1), *lambdas)
    np.testing.assert_allclose(a * source + b, source * A1 + B1, atol=1e-6)
    np.testing.assert_allclose(a, np.broadcast_to(A1, a.shape), atol=1e-5)


def test_local_transfer_reproduces_region_maps_from_a_noisy_guide():
    """Two affine maps, one per colour region, seen through a guide with noise (as voting gives): the
    smooth maps recover the clean mapping better than the guide itself, the paper's default weights
    more than its tuned, weaker ones."""
    source, right = two_region_image()
    clean = np.where(right[..., None], source * A2 + B2, source * A1 + B1)
    noisy = clean + np.random.default_rng(1).normal(0, 0.03, clean.shape)
    noise = np.abs(noisy - clean).mean()
    errors = {}
    for lambdas in [(0.125, 2.0), (0.001, 0.4)]:
        a, b = local_affine_maps(source, noisy, source.mean(-1), *lambdas)
        errors[lambdas] = np.abs(a * source + b - clean).mean() / noise
    assert errors[(0.125, 2.0)] < 0.45 and errors[(0.001, 0.4)] < 0.85
    assert errors[(0.125, 2.0)] < errors[(0.001, 0.4)]


def test_global_fit_and_colour_cells():
    source, _ = two_region_image()
    a0, b0 = global_affine(source, source * A1 + B1)
    np.testing.assert_allclose(a0, A1, atol=1e-9)
    np.testing.assert_allclose(b0, B1, atol=1e-9)
    flat_a, flat_b = global_affine(np.ones((4, 4, 1)), np.full((4, 4, 1), 3.0))
    assert flat_a[0] == 1.0 and flat_b[0] == 2.0
    cells = colour_cells(np.array([[[0.01, 0.0, 0.0], [0.03, 0.0, 0.0], [0.05, 0.0, 0.0], [0.01, 0.09, 0.0]]]), 0.04)
    assert cells[0] == cells[1] and len(set(cells.tolist())) == 3


# -- guided filter ---------------------------------------------------------------------------------
def direct_box_mean(x, r):
    h, w = x.shape[:2]
    out = np.empty_like(x, dtype=np.float64)
    for y in range(h):
        for i in range(w):
            out[y, i] = x[max(y - r, 0):y + r + 1, max(i - r, 0):i + r + 1].mean(axis=(0, 1))
    return out


def direct_guided_filter(guide, target, r, eps):
    """He et al. 2013, Algorithm 1, with windowed means written out pixel by pixel."""
    mean_i, mean_p = direct_box_mean(guide, r), direct_box_mean(target, r)
    cov = direct_box_mean(guide * target, r) - mean_i * mean_p
    var = direct_box_mean(guide * guide, r) - mean_i ** 2
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return direct_box_mean(a, r) * guide + direct_box_mean(b, r)


@pytest.mark.parametrize("radius", [1, 3])
def test_guided_filter_matches_a_direct_windowed_computation(radius):
    rng = np.random.default_rng(0)
    guide = ndimage.gaussian_filter(rng.uniform(0, 1, (23, 31)), 1.0)
    target = guide * 2 + rng.normal(0, 0.1, guide.shape)
    np.testing.assert_allclose(box_mean(target, radius), direct_box_mean(target, radius), atol=1e-12)
    expected = direct_guided_filter(guide, target, radius, 1e-3)
    np.testing.assert_allclose(guided_filter(guide, target, radius, 1e-3), expected, atol=1e-10)
    stacked = guided_filter(guide, np.stack([target, -target], axis=-1), radius, 1e-3)
    np.testing.assert_allclose(stacked[..., 1], -expected, atol=1e-10)
    same = fast_guided_upsample(guide, target[..., None], guide, radius, 1e-3)
    np.testing.assert_allclose(same[..., 0], expected, atol=1e-10)


def test_fast_guided_upsampling_follows_full_resolution_edges():
    """A map that is a linear function of the guide at low resolution is rebuilt exactly at full
    resolution, sharp edges included (He & Sun 2015), where plain interpolation blurs them."""
    yy, xx = np.mgrid[0:64, 0:64]
    guide_high = np.where(xx + 0.5 * yy > 40, 0.8, 0.2) + 0.001 * yy
    guide_low = guide_high.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    target_low = (3.0 * guide_low + 1.0)[..., None]
    up = fast_guided_upsample(guide_low, target_low, guide_high, radius=2, eps=1e-6)
    assert up.shape == (64, 64, 1)
    assert np.abs(up[..., 0] - (3.0 * guide_high + 1.0)).max() < 0.02


# -- features --------------------------------------------------------------------------------------
def test_standardize_is_eq1_and_enhancement_restandardizes():
    rng = np.random.default_rng(0)
    x = rng.normal(5, 3, (20, 30, 4)).astype(np.float32)
    x[..., 3] = 7.0  # a flat channel goes to zero, not to NaN
    z = standardize(x)
    np.testing.assert_allclose(z[..., :3].reshape(-1, 3).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[..., :3].reshape(-1, 3).std(0), 1, atol=1e-4)
    assert np.all(z[..., 3] == 0)
    labels = (np.arange(30)[None, :] >= 10).repeat(20, axis=0)
    indicators = np.stack([labels == 0, labels == 1], axis=-1).astype(np.float32)
    e = enhance(z[..., :3], indicators, weight=2.0)
    assert e.shape == (20, 30, 5)
    np.testing.assert_allclose(e[..., 3:].reshape(-1, 2).std(0), 2.0, atol=1e-4)


def test_clusters_are_numbered_dark_to_light_in_each_image():
    lab = np.zeros((30, 30, 3))
    lab[:, :10, 0], lab[:, 10:20, 0], lab[:, 20:, 0] = 80.0, 20.0, 50.0
    labels = cluster_labels(lab + np.random.default_rng(0).normal(0, 0.5, lab.shape), 3, seed=0)
    assert (labels[:, :10] == 2).all() and (labels[:, 10:20] == 0).all() and (labels[:, 20:] == 1).all()


def test_resize_labels_is_nearest():
    labels = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(resize_labels(labels, (6, 8)), labels.repeat(2, 0).repeat(2, 1))
    np.testing.assert_array_equal(resize_labels(labels.repeat(2, 0).repeat(2, 1), (3, 4)), labels)
