"""The sliced Wasserstein distance: zero, symmetric, exact on a known shift, and it sees a change of the
joint colour distribution that every channel's marginal hides."""

import numpy as np
import pytest
from synth import he_image

from stainlab import metrics
from stainlab.errors import InputError


def test_zero_symmetric_and_reproducible():
    tissue, other = he_image((64, 80), seed=4), he_image((48, 48), seed=5, scale=(1.3, 0.8))
    assert metrics.sliced_wasserstein(tissue, tissue) == pytest.approx(0.0, abs=1e-12)
    assert metrics.sliced_wasserstein(tissue, other) == metrics.sliced_wasserstein(other, tissue) > 1.0
    assert metrics.sliced_wasserstein(tissue, other, seed=1) != metrics.sliced_wasserstein(tissue, other)


def test_a_uniform_shift_costs_its_mean_projection():
    """Shifting every pixel by ``d`` moves each projection by ``d . u``: the distance is the mean of
    ``|d . u|`` over the directions, exactly."""
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 200, (32, 32, 3)).astype(np.uint8)
    shift = np.array([30, 0, 40])
    units = np.random.default_rng(0).standard_normal((64, 3))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    expected = np.abs(units @ shift).mean()
    assert metrics.sliced_wasserstein(dark, dark + shift.astype(np.uint8), space="rgb") == pytest.approx(expected)


def test_it_sees_colours_recombined_with_the_same_channel_histograms():
    """Two pixel sets with identical R, G and B histograms: in one the channels rise together (greys),
    in the other each channel is shuffled on its own (random colours). Per channel they are equal;
    sliced, they are far apart."""
    levels = np.repeat(np.arange(0, 256, 4, dtype=np.uint8), 4)
    greys = np.stack([levels] * 3, axis=-1)[:, None, :]
    rng = np.random.default_rng(1)
    mixed = np.stack([rng.permutation(levels) for _ in range(3)], axis=-1)[:, None, :]
    assert metrics.channel_wasserstein(greys, mixed, space="rgb") == pytest.approx(0.0, abs=1e-12)
    assert metrics.sliced_wasserstein(greys, mixed, space="rgb") > 15.0


def test_bad_arguments_are_named():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(InputError, match="directions"):
        metrics.sliced_wasserstein(image, image, directions=0)
    with pytest.raises(InputError, match="colour space"):
        metrics.sliced_wasserstein(image, image, space="hsv")


def test_each_slice_is_scipys_exact_wasserstein_distance():
    from scipy.stats import wasserstein_distance

    from stainlab.metrics.distribution import _wasserstein_columns

    rng = np.random.default_rng(2)
    x, y = rng.normal(0, 1, (301, 3)), rng.normal(0.5, 2, (177, 3))   # sizes share no factor
    ours = _wasserstein_columns(np.sort(x, axis=0), np.sort(y, axis=0))
    assert ours == pytest.approx([wasserstein_distance(x[:, c], y[:, c]) for c in range(3)], rel=1e-12)
