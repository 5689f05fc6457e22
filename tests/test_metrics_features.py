"""Feature metrics (FID, paper 003's perceptual hash) and semantic metrics (paper 002 top-k / kNN,
paper 004 classification agreement), with features whose answers are known exactly."""

import numpy as np
import pytest
import torch

from stainlab.errors import InputError
from stainlab.metrics.features import extract_features, fid, hash_similarity, perceptual_hash
from stainlab.metrics.frechet import frechet_distance
from stainlab.metrics.semantic import classification_agreement, knn_accuracy, topk_accuracy
from stainlab.nets import WeightsNotFoundError, fid_inception_v3, resnet18
from synth import he_image


def colour_stats(batch):
    """A weight-free extractor: per-channel mean and standard deviation, (n, 6)."""
    pixels = batch.reshape(len(batch), -1, 3).astype(np.float64)
    return np.concatenate([pixels.mean(1), pixels.std(1)], axis=1)


@pytest.fixture(scope="module")
def tiles():
    """Twelve 32x32 tiles of synthetic H&E, values kept within [20, 235] so a shift of 10 never clips."""
    image = he_image((96, 128), seed=5)
    cut = [image[r:r + 32, c:c + 32] for r in range(0, 96, 32) for c in range(0, 128, 32)]
    return [np.clip(tile, 20, 235).astype(np.uint8) for tile in cut]


@pytest.fixture(scope="module")
def hash_model():
    return resnet18(weights="random", seed=0)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


# FID ---------------------------------------------------------------------------------------------------

def test_fid_of_a_set_with_itself_is_zero(tiles):
    assert fid(tiles, tiles, extractor=colour_stats) == pytest.approx(0.0, abs=1e-6)


def test_fid_agrees_with_frechet_distance_on_the_same_features(tiles):
    other = [np.ascontiguousarray(tile[::-1, :, ::-1]) for tile in tiles]  # flipped, channels swapped
    expected = frechet_distance(colour_stats(np.stack(tiles)), colour_stats(np.stack(other)))
    assert expected > 1.0
    assert fid(tiles, other, extractor=colour_stats) == pytest.approx(expected, rel=1e-9)
    assert fid(tiles, other, extractor=colour_stats, batch_size=5) == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_brightness_shift_is_the_squared_mean_shift(tiles):
    # +10 on every channel moves the three mean features by 10 and leaves the std features: d^2 = 3 * 10^2.
    brighter = [tile + np.uint8(10) for tile in tiles]
    assert fid(tiles, brighter, extractor=colour_stats) == pytest.approx(300.0, rel=1e-6)


def test_fid_with_inception_needs_the_weight_file(tiles, empty_cache):
    for extractor in (None, "inception"):
        with pytest.raises(WeightsNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
            fid(tiles, tiles, extractor=extractor)


def test_fid_refuses_ambiguous_or_bad_extractors(tiles):
    with pytest.raises(InputError, match="weights only apply"):
        fid(tiles, tiles, extractor=colour_stats, weights="random")
    with pytest.raises(InputError, match="unknown extractor"):
        fid(tiles, tiles, extractor="vgg")
    with pytest.raises(InputError, match=r"\(3, D\)"):
        fid(tiles[:3], tiles[:3], extractor=lambda batch: np.zeros(len(batch)))
    with pytest.raises(InputError, match="NaN"):
        fid(tiles[:3], tiles[:3], extractor=lambda batch: np.full((len(batch), 2), np.nan))
    with pytest.raises(InputError, match="share a size"):
        fid([tiles[0], tiles[1][:16]], tiles[:2], extractor=colour_stats)


def test_network_extractor_sees_images_in_unit_range():
    inception = fid_inception_v3(weights="random", seed=0)
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    feats = extract_features(images, inception, batch_size=1)
    with torch.inference_mode():
        direct = inception(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).double().numpy()
    assert feats.shape == (2, 2048)
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-6)


# Perceptual hash (paper 003) ---------------------------------------------------------------------------

def test_perceptual_hash_splits_128_channels_at_the_median(hash_model, tiles):
    bits = perceptual_hash(tiles[0], hash_model)
    assert bits.shape == (128,) and bits.dtype == bool
    assert bits.sum() == 64
    assert np.array_equal(perceptual_hash(tiles[0].copy(), hash_model), bits)
    assert hash_similarity(bits, perceptual_hash(tiles[0], hash_model)) == 1.0


def test_noisy_copy_hashes_closer_than_another_image(hash_model, ihc_image):
    # With random weights the channel ranking is mostly the network's own, so "another image" has to be
    # another kind of tissue (real IHC against synthetic H&E) to move many bits; measured: 1.0 vs 0.859.
    image = he_image((64, 64), seed=11)
    noise = np.random.default_rng(1).normal(0, 6, image.shape)
    noisy = np.clip(image + noise, 0, 255).astype(np.uint8)
    other = np.ascontiguousarray(ihc_image[:64, :64])
    hashes = perceptual_hash(np.stack([image, noisy, other]), hash_model)
    assert hashes.shape == (3, 128)
    near, far = hash_similarity(hashes[0], hashes[1]), hash_similarity(hashes[0], hashes[2])
    assert near >= 0.95
    assert near - far >= 0.08
    assert np.array_equal(hashes[2], perceptual_hash(other, hash_model))  # batch == one at a time


def test_hash_similarity_is_the_fraction_of_equal_bits():
    a = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=bool)
    b = np.array([[1, 0, 0, 1], [1, 0, 1, 0]], dtype=bool)
    assert hash_similarity(a[0], b[0]) == 0.5
    np.testing.assert_array_equal(hash_similarity(a, b), [0.5, 1.0])
    with pytest.raises(InputError, match="same shape"):
        hash_similarity(a[0], b[0, :3])


def test_perceptual_hash_without_a_model_needs_resnet18_weights(tiles, empty_cache):
    with pytest.raises(WeightsNotFoundError, match="resnet18-f37072fd.pth"):
        perceptual_hash(tiles[0])


# Top-k / kNN (paper 002) and classification agreement (paper 004) --------------------------------------
# Library directions: L0 0 deg, L1 11.3 deg, L2 90 deg, L3 78.7 deg, L4 180 deg.
LIBRARY = np.array([[1, 0], [1, 0.2], [0, 1], [0.2, 1], [-1, 0]])
LIBRARY_LABELS = np.array([0, 0, 1, 1, 2])
# q0 at 2.9 deg (nearest L0, L1, L3), q1 at 51.3 deg (L3, L2, L1, L0), q2 at 174.3 deg (L4, L2, L3).
QUERIES = np.array([[1, 0.05], [0.8, 1], [-1, 0.1]])
QUERY_LABELS = np.array([0, 0, 2])


@pytest.mark.parametrize("k, expected", [(1, 2 / 3), (2, 2 / 3), (3, 1.0)])
def test_topk_accuracy_counts_a_hit_among_the_k_nearest(k, expected):
    assert topk_accuracy(QUERIES, QUERY_LABELS, LIBRARY, LIBRARY_LABELS, k) == pytest.approx(expected)


@pytest.mark.parametrize("k, expected", [(1, 2 / 3), (2, 2 / 3), (3, 1 / 3)])
def test_knn_accuracy_is_a_majority_vote(k, expected):
    # k=2: q2 sees labels [2, 1], a tie won by the nearer neighbour (2); k=3: q0 [0,0,1] right,
    # q1 [1,1,0] wrong, q2 [2,1,1] wrong.
    assert knn_accuracy(QUERIES, QUERY_LABELS, LIBRARY, LIBRARY_LABELS, k) == pytest.approx(expected)


def test_cosine_and_euclidean_neighbours_differ_as_expected():
    library = np.array([[1.0, 0.0], [9.0, 1.0]])
    labels = np.array(["same direction", "same place"])
    query, truth = np.array([[10.0, 0.0]]), np.array(["same direction"])
    assert topk_accuracy(query, truth, library, labels, 1, metric="cosine") == 1.0
    assert topk_accuracy(query, truth, library, labels, 1, metric="euclidean") == 0.0
    assert knn_accuracy(query, truth, library, labels, 1, metric="euclidean") == 0.0


def test_semantic_metrics_refuse_bad_input():
    with pytest.raises(InputError, match="k must be"):
        topk_accuracy(QUERIES, QUERY_LABELS, LIBRARY, LIBRARY_LABELS, 6)
    with pytest.raises(InputError, match="zero feature vector"):
        topk_accuracy(np.zeros((1, 2)), [0], LIBRARY, LIBRARY_LABELS, 1)
    with pytest.raises(InputError, match="dimension"):
        knn_accuracy(np.ones((1, 3)), [0], LIBRARY, LIBRARY_LABELS, 1)
    with pytest.raises(InputError, match="labels"):
        knn_accuracy(QUERIES, QUERY_LABELS[:2], LIBRARY, LIBRARY_LABELS, 1)
    with pytest.raises(InputError, match="unknown metric"):
        knn_accuracy(QUERIES, QUERY_LABELS, LIBRARY, LIBRARY_LABELS, 1, metric="manhattan")


def test_classification_agreement_is_the_fraction_of_equal_labels():
    assert classification_agreement([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75
    assert classification_agreement(["a", "b"], ["a", "b"]) == 1.0
    with pytest.raises(InputError, match="one length"):
        classification_agreement([0, 1], [0])
