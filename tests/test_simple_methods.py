"""Histogram matching, simplest color balance, background-colour normalization and grayscale:
each checked against what it promises, on synthetic H&E and on a real IHC image."""

import warnings

import numpy as np
import pytest
from skimage.exposure import match_histograms

import stainlab
from stainlab.color.tissue import tissue_mask
from stainlab.errors import InputError, NoBackgroundWarning, NotFittedError
from stainlab.transforms.background import estimate_background
from synth import he_image

SIMPLE = ["histogram", "histogram-masked", "colorbalance", "background", "grayscale"]


def make(name, **params):
    if name == "histogram-masked":
        return stainlab.load("histogram", mask=True, **params)
    return stainlab.load(name, **params)


def level_shares(pixels):
    """(3, 256) share of pixels at each level, per channel, of an (N, 3) uint8 array."""
    return np.stack([np.bincount(pixels[:, c], minlength=256) / len(pixels) for c in range(3)])


def ks_distance(a, b):
    """Per-channel Kolmogorov-Smirnov distance between the level distributions of two pixel sets."""
    return np.abs(np.cumsum(level_shares(a), axis=1) - np.cumsum(level_shares(b), axis=1)).max(axis=1)


def pixels_of(image, keep=None):
    """(N, 3) pixels of an image, all of them or those where ``keep`` is true."""
    return image.reshape(-1, 3) if keep is None else image[keep]


def largest_atom(pixels, levels_per_cell=1):
    """Largest share of pixels on one lookup-table cell of ``levels_per_cell`` levels, per channel."""
    shares = level_shares(pixels).reshape(3, -1, levels_per_cell).sum(axis=2)
    return shares.max(axis=1)


# -- histogram matching ---------------------------------------------------------------------------

@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("case", ["real-to-real", "synthetic-tissue-to-real"])
def test_histogram_output_has_reference_cdf(case, exact, ihc_image, ihc_other, he_source):
    """Matched CDFs equal the reference's up to the discreteness bound: one source level (a lattice
    cell of two levels on the LUT path) cannot be split, one reference level cannot be shared."""
    if case == "real-to-real":
        t, source, keep_src, keep_ref = make("histogram").fit(ihc_image), ihc_other, None, None
    else:
        t, source = make("histogram-masked").fit(ihc_image), he_source
        keep_src, keep_ref = tissue_mask(source), tissue_mask(ihc_image)
    src, ref = pixels_of(source, keep_src), pixels_of(ihc_image, keep_ref)
    out = pixels_of(t.transform(source, exact=exact), keep_src)
    bound = largest_atom(src, 1 if exact else 1 << (8 - t.lut_bits)) + largest_atom(ref)
    before, after = ks_distance(src, ref), ks_distance(out, ref)
    assert before.max() > 0.5 and (after < before).all()
    assert (after <= bound + 1e-9).all(), (after, bound)


@pytest.mark.parametrize("reference", ["ihc_other", "he_reference"])
def test_histogram_agrees_with_scikit_image(reference, ihc_image, request):
    reference = request.getfixturevalue(reference)
    t = make("histogram").fit(reference)
    expected = np.rint(match_histograms(ihc_image.astype(np.float64), reference.astype(np.float64),
                                        channel_axis=-1))
    exact = t.transform(ihc_image, exact=True)
    np.testing.assert_array_equal(exact, expected)
    # scikit-image's own uint8 result truncates instead of rounding: one level at most
    assert np.abs(exact.astype(int) - match_histograms(ihc_image, reference, channel_axis=-1)).max() <= 1
    lut = t(ihc_image)
    assert np.abs(lut.astype(int) - expected).mean() < 1.0
    for c in range(3):  # both paths are monotone maps of each channel
        order = np.argsort(ihc_image[..., c].ravel(), kind="stable")
        for out in (exact, lut):
            assert (np.diff(out[..., c].ravel()[order].astype(int)) >= 0).all()


@pytest.mark.parametrize("exact", [True, False])
def test_masked_histogram_leaves_background_exactly(exact, he_source, ihc_image):
    t = make("histogram-masked").fit(ihc_image)
    out = t.transform(he_source, exact=exact)
    background = ~tissue_mask(he_source)
    assert background.mean() > 0.2
    np.testing.assert_array_equal(out[background], he_source[background])
    assert (out[~background] != he_source[~background]).any(axis=-1).mean() > 0.5


# -- simplest color balance -----------------------------------------------------------------------

@pytest.mark.parametrize("s1, s2", [(1.0, 1.0), (2.0, 5.0)])
@pytest.mark.parametrize("which", ["ihc", "synthetic"])
def test_colorbalance_saturates_the_promised_shares(which, s1, s2, ihc_image, he_source):
    image = ihc_image if which == "ihc" else he_source
    out = make("colorbalance", s1=s1, s2=s2)(image)
    for c in range(3):
        x, y = image[..., c].ravel().astype(int), out[..., c].ravel().astype(int)
        black, white = y == 0, y == 255
        lo, hi = x[black].max(), x[white].min()
        # more than s1 % saturate to black, and fewer than s1 % lie strictly below the black level
        assert black.mean() > s1 / 100 >= (x < lo).mean()
        if hi < 255:  # synthetic glass already fills the top level: nothing to saturate there
            assert white.mean() > s2 / 100 >= (x > hi).mean()
        inside = (x > lo) & (x < hi)
        np.testing.assert_array_equal(y[inside], np.rint((x[inside] - lo) * 255.0 / (hi - lo)))


def test_colorbalance_rejects_impossible_percentages():
    with pytest.raises(InputError, match="s1"):
        stainlab.load("colorbalance", s1=60, s2=40)


# -- background-colour normalization --------------------------------------------------------------

def tint(image, gain):
    return np.clip(np.rint(image * np.asarray(gain)), 0, 255).astype(np.uint8)


def test_background_finds_a_known_tint_and_undoes_it():
    clean = he_image(seed=4)
    gain = np.array([0.92, 0.88, 0.95])
    tinted = tint(clean, gain)
    found = estimate_background(tinted.reshape(-1, 3))
    np.testing.assert_allclose(found, 255 * gain, atol=0.5)
    np.testing.assert_allclose(found / 255, gain, rtol=0.003)
    glass = (clean == 255).all(axis=-1)
    t = stainlab.load("background")
    for out in (t(tinted), t.transform(tinted, exact=True)):
        assert np.abs(out[glass].astype(int) - 255).max() <= 1
        error = np.abs(out.astype(int) - clean)
        assert error.mean() < 0.6 and error.max() <= 2


def test_background_fit_takes_the_reference_background():
    gain = np.array([0.96, 0.90, 0.93])
    t = stainlab.load("background").fit(tint(he_image(seed=1), gain))
    np.testing.assert_allclose(t.target_color, 255 * gain, atol=0.5)
    source = tint(he_image(seed=2), [0.89, 0.93, 0.97])
    out = t(source)
    glass = (he_image(seed=2) == 255).all(axis=-1)
    assert np.abs(out[glass].astype(int) - np.rint(255 * gain)).max() <= 1


def test_background_explicit_target():
    target = (240.0, 232.0, 246.0)
    out = stainlab.load("background", target=target)(he_image(seed=5))
    glass = (he_image(seed=5) == 255).all(axis=-1)
    assert np.abs(out[glass].astype(int) - np.array(target)).max() <= 1
    with pytest.raises(InputError, match="target"):
        stainlab.load("background", target=(255, 0, 255))


def test_background_without_glass_uses_brightest_pixels_with_a_warning():
    """Light too dim for any pixel to pass as background: the brightest pixels stand in."""
    clean = he_image(seed=4)
    gain = np.array([0.75, 0.70, 0.80])
    with pytest.warns(NoBackgroundWarning, match="no background"):
        found = estimate_background(tint(clean, gain).reshape(-1, 3))
    np.testing.assert_allclose(found, 255 * gain, atol=0.5)
    tissue_only = np.random.default_rng(0).integers(40, 200, (64, 64, 3), dtype=np.uint8)
    with pytest.warns(NoBackgroundWarning, match="no background"):
        out = stainlab.load("background")(tissue_only)
    assert out.max() == 255 and out.dtype == np.uint8


# -- grayscale --------------------------------------------------------------------------------------

def test_grayscale_is_the_luminance_formula(ihc_image):
    expected = np.rint(ihc_image @ np.array([0.299, 0.587, 0.114]))
    t = stainlab.load("grayscale")
    exact = t.transform(ihc_image, exact=True)
    np.testing.assert_array_equal(exact, np.repeat(expected[..., None], 3, axis=-1))
    lut = t(ihc_image)
    assert (lut == lut[..., :1]).all()
    assert np.abs(lut[..., 0].astype(int) - expected).max() <= 1


# -- the face, for these methods --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["colorbalance", "background", "grayscale"])
def test_reference_free_methods_work_unfitted(name):
    tinted = tint(he_image(seed=4), [0.92, 0.88, 0.95])
    t = stainlab.load(name)
    assert t.fitted
    out = t(tinted)
    assert out.shape == tinted.shape and (out != tinted).any(axis=-1).mean() > 0.5


@pytest.mark.parametrize("name", ["histogram", "histogram-masked"])
def test_fitted_methods_refuse_to_run_unfitted(name, ihc_image):
    with pytest.raises(NotFittedError):
        make(name)(ihc_image)


@pytest.mark.parametrize("value", [0, 255])
@pytest.mark.parametrize("name", SIMPLE)
def test_blank_images_give_finite_output(name, value, he_reference):
    t = make(name)
    t.fit(he_reference)
    blank = np.full((32, 48, 3), value, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no tissue / no background: warned, passed through
        lut, exact = t(blank), t.transform(blank, exact=True)
    for out in (lut, exact):
        assert out.shape == blank.shape and out.dtype == np.uint8
        assert (out == out[0, 0]).all()  # a flat image stays flat
    if name in ("colorbalance", "background", "grayscale"):  # white stays white, black stays black
        np.testing.assert_array_equal(exact, blank)
        assert np.abs(lut.astype(int) - blank).max() <= 1  # see test_lut_path_keeps_white_white


def test_lut_path_keeps_white_white():
    white = np.full((8, 8, 3), 255, dtype=np.uint8)
    np.testing.assert_array_equal(stainlab.load("grayscale")(white), white)
