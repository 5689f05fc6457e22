"""Stain augmentation (Tellez et al. 2018): reproducible, follows c' = alpha c + beta, keeps glass white."""

import numpy as np
import pytest

from stainlab.color import tissue_mask
from stainlab.color.deconvolution import separate
from stainlab.errors import InputError
from stainlab.transforms.augment import StainAugmenter, augment
from stainlab.transforms.macenko import Macenko
from synth import render
from synth import REFERENCE_STAINS, SOURCE_STAINS, separable_maps


@pytest.fixture(scope="module")
def image():
    return render(separable_maps(2, glass=0.4), REFERENCE_STAINS)


def test_seeded_augmentation_is_reproducible(image):
    first = augment(image, seed=3)
    np.testing.assert_array_equal(first, augment(image, seed=3))
    assert not np.array_equal(first, augment(image, seed=4))
    from_generator = augment(image, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(from_generator, augment(image, seed=np.random.default_rng(7)))
    assert np.abs(first.astype(int) - image).mean() > 0.5          # it does change the image


def test_zero_jitter_is_the_identity(image):
    np.testing.assert_array_equal(augment(image, sigma1=0, sigma2=0, seed=0), image)


def test_each_stain_is_scaled_by_one_factor(image):
    """sigma2 = 0: c' = alpha c with one alpha per stain, within [1 - sigma1, 1 + sigma1]."""
    before, after = separate(image, "hed"), separate(augment(image, sigma1=0.3, sigma2=0, seed=1), "hed")
    dense = before[..., :2] > 0.5
    ratios = [after[..., j][dense[..., j]] / before[..., j][dense[..., j]] for j in range(2)]
    medians = [np.median(r) for r in ratios]
    assert all(0.7 <= m <= 1.3 for m in medians)
    assert all(np.percentile(np.abs(r - m), 95) < 0.02 for r, m in zip(ratios, medians))   # one factor
    assert abs(medians[0] - medians[1]) > 0.01                                             # per stain


def test_each_stain_is_shifted_by_one_offset_on_tissue(image):
    """sigma1 = 0: c' = c + beta on tissue, one beta per stain within [-sigma2, sigma2] (checked where
    no output channel clipped at 0 or 255: a negative shift can push a channel's OD below zero)."""
    out = augment(image, sigma1=0, sigma2=0.2, seed=3)
    before, after = separate(image, "hed"), separate(out, "hed")
    kept = tissue_mask(image) & (out > 0).all(axis=-1) & (out < 255).all(axis=-1)
    assert kept.mean() > 0.3
    shifts = [(after[..., j] - before[..., j])[kept] for j in range(3)]
    assert all(abs(np.median(s)) <= 0.2 for s in shifts)
    assert all(np.percentile(np.abs(s - np.median(s)), 95) < 0.01 for s in shifts)   # measured 0.005


def test_glass_stays_white_under_strong_jitter(image):
    glass = (image == 255).all(axis=-1)
    assert glass.mean() > 0.2
    for seed in range(5):
        out = augment(image, sigma1=0.2, sigma2=0.2, seed=seed)        # Tellez's "HED-strong"
        assert (out[glass] == 255).all()
        assert np.abs(out.astype(int) - image)[~glass].mean() > 2       # tissue does change


def test_over_a_fitted_stain_matrix():
    source = render(separable_maps(3), SOURCE_STAINS)
    stains = Macenko().stain_matrix_of(source)
    np.testing.assert_array_equal(augment(source, 0, 0, stains=stains, seed=0), source)
    before = Macenko().concentrations(source, stains)
    after = Macenko().concentrations(augment(source, 0.3, 0, stains=stains, seed=5), stains)
    dense = before[..., 0] > 0.5
    ratio = after[..., 0][dense] / before[..., 0][dense]
    assert np.percentile(np.abs(ratio - np.median(ratio)), 95) < 0.02


def test_augmenter_in_a_pipeline(image):
    aug = StainAugmenter(sigma1=0.1, sigma2=0.1, seed=11)
    assert aug.fitted and aug.get_params() == {"sigma1": 0.1, "sigma2": 0.1, "stains": "hed", "seed": 11,
                                         "light": "estimate"}
    sequence = [aug(image) for _ in range(3)]
    assert not np.array_equal(sequence[0], sequence[1])
    replay = StainAugmenter(sigma1=0.1, sigma2=0.1, seed=11)
    for out in sequence:
        np.testing.assert_array_equal(replay(image), out)


def test_augmenter_on_a_torch_batch(image):
    torch = pytest.importorskip("torch")
    batch = torch.from_numpy(np.stack([image, image])).permute(0, 3, 1, 2).float() / 255
    out = StainAugmenter(seed=0)(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert not torch.equal(out[0], out[1])                # each image gets its own jitter


def test_bad_arguments(image):
    with pytest.raises(InputError, match="sigma1"):
        augment(image, sigma1=-0.1)
    with pytest.raises(InputError, match="unknown stain set"):
        StainAugmenter(stains="giemsa")
    with pytest.raises(InputError, match="uint8"):
        augment(image.astype(np.float32))
