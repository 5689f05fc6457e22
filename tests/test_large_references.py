"""Large references are fitted from a sample, as a source of their size is analysed (issue 16: a slide's
reference fit costs what its source statistics cost, not a second of colour histogram).

The sample sizes are made small here (``LARGE_IMAGE_SAMPLE``) so that a 256 x 320 image stands for a
multi-megapixel reference; the rules are the same at the real sizes.
"""

import numpy as np
import pytest

import stainlab
from stainlab.color.stains import angle_degrees
from stainlab.errors import NoBackgroundWarning
from stainlab.transforms import base, small
from synth import he_image

SAMPLED = ["macenko", "vahadane", "ruifrok", "linear-ot", "reinhard", "reinhard-masked", "reinhard-split"]


@pytest.fixture
def small_samples(monkeypatch):
    """References and images over 2**14 pixels are 'large': sampled to 2**14 pixels."""
    monkeypatch.setattr(small, "LARGE_IMAGE_SAMPLE", 1 << 14)
    monkeypatch.setattr(small, "SMALL_IMAGE_PIXELS", 1 << 14)


@pytest.fixture(scope="module")
def reference():
    image = he_image(shape=(256, 320), seed=5, glass=0.3)
    glass = image.min(axis=2) == 255
    noise = np.random.default_rng(3).integers(-4, 5, (int(glass.sum()), 3))
    image[glass] = np.clip(np.array([238, 233, 226]) + noise, 0, 255)  # beige glass, as scanned
    return image


def states(t) -> dict:
    return {key: np.asarray(value, dtype=np.float64) for key, value in t._get_state().items()}


@pytest.mark.parametrize("name", SAMPLED)
def test_a_large_reference_is_fitted_from_the_sample_a_source_of_its_size_takes(name, reference, small_samples,
                                                                                monkeypatch):
    """The fitted target is the source statistics ``t(image)`` would take from the same image (no colour
    histogram of the whole reference is built), and lands near the fit from every pixel's colour histogram."""
    whole = stainlab.load(name, lut_bits=8).fit(reference)  # lut_bits 8: exact, every pixel
    of = base.ColorHistogram.of

    def sample_only(image, bits):  # Vahadane takes a sample's histogram, as its sources do
        assert image.shape[0] * image.shape[1] <= small.LARGE_IMAGE_SAMPLE, "the whole reference's histogram"
        return of(image, bits)

    monkeypatch.setattr(base.ColorHistogram, "of", sample_only)
    t = stainlab.load(name).fit(reference)
    adopted = stainlab.load(name)
    adopted._adopt(t._sampled_source(reference))
    for key, value in states(t).items():
        np.testing.assert_array_equal(value, states(adopted)[key])
    got, exact = states(t), states(whole)
    if "stain_matrix" in got:  # stain rows within a degree of every pixel's
        assert max(angle_degrees(a, b) for a, b in zip(got["stain_matrix"], exact["stain_matrix"])) < 1.0
    for key in ("max_concentrations", "target_std", "target_moment"):
        if key in got:
            np.testing.assert_allclose(got[key], exact[key], rtol=0.03)
    if "target_mean" in got:
        np.testing.assert_allclose(got["target_mean"], exact["target_mean"], atol=0.5)
    if "light" in got:
        np.testing.assert_allclose(got["light"], exact["light"], atol=0.5)


@pytest.mark.parametrize("name", ["reinhard", "reinhard-split"])
def test_a_large_reference_normalized_to_itself_is_unchanged(name, reference, small_samples):
    """Reference and source are measured alike, so the map of the reference onto itself is the identity."""
    t = stainlab.load(name).fit(reference)
    out = t(reference)
    assert np.abs(out.astype(int) - reference).max() <= 1
    assert np.mean(out != reference) < 1e-3


@pytest.mark.parametrize("name", ["macenko", "ruifrok"])
def test_a_large_reference_normalized_to_itself_keeps_its_stain_amounts(name, reference, small_samples):
    t = stainlab.load(name).fit(reference)
    source = t._sampled_source(reference)
    np.testing.assert_array_equal(t._factors(source)[:2], [1.0, 1.0])


def test_several_large_references_are_pooled_into_one_sample(reference, small_samples):
    """``multi='pool'``: one sample strided over all references as if they were one image;
    ``multi='average'``: each reference fitted on its own sample, the targets averaged."""
    other = he_image(shape=(200, 300), seed=8, scale=(1.3, 0.7))
    pooled = stainlab.load("macenko").fit([reference, other])
    joined = np.concatenate([reference.reshape(-1, 1, 3), other.reshape(-1, 1, 3)])
    alone = stainlab.load("macenko").fit(joined)
    for key, value in states(pooled).items():
        np.testing.assert_allclose(value, states(alone)[key], rtol=1e-12, atol=1e-12)
    average = stainlab.load("macenko", multi="average").fit([reference, other])
    each = [stainlab.load("macenko").fit(image) for image in (reference, other)]
    np.testing.assert_allclose(average.max_concentrations, np.mean([t.max_concentrations for t in each], axis=0))


def test_a_large_reference_without_glass_warns_as_a_small_one_does(small_samples):
    covered = he_image(shape=(256, 320), seed=6, glass=0.0)
    with pytest.warns(NoBackgroundWarning, match="macenko reference: no glass"):
        stainlab.load("macenko").fit(covered)
