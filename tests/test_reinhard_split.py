"""Reinhard with tissue and glass apart: the output's tissue carries the reference's tissue statistics
whatever either image's share of glass, and its glass is the reference's glass colour."""

import numpy as np
import pytest

import stainlab
from stainlab.color import EOSIN, HEMATOXYLIN, normalize_rows
from stainlab.color.lab import rgb_to_lab
from stainlab.color.light import estimate_light
from stainlab.color.od import od_to_rgb, rgb_to_od
from stainlab.color.tissue import TISSUE_BETA, tissue_mask_od
from stainlab.errors import NoBackgroundWarning, NoTissueError, NoTissueWarning
from stainlab.transforms.reinhard_split import tissue_weight
from synth import concentration_maps

SOURCE_LIGHT = (236, 229, 221)     # a warm grey scanner
REFERENCE_LIGHT = (250, 246, 253)  # a cool, bright one
MEAN_TOLERANCE = 0.5   # CIELAB units
STD_TOLERANCE = 0.03   # relative
# How the output is computed: the small-image path (default), the lookup table on exact colours, every pixel.
PATHS = {"small": ({}, False), "table": ({"lut_bits": 8}, False), "exact": ({}, True)}


def scan(glass, light, seed, scale=(1.0, 1.0), shape=(256, 256)):
    """(image, glass mask): synthetic H&E under ``light`` (Beer-Lambert with I0 the light per channel)
    with a ``glass`` fraction of empty slide, and a grey level of sensor noise."""
    conc = concentration_maps(shape, seed, glass) * np.asarray(scale)
    od = conc @ normalize_rows(np.array([HEMATOXYLIN, EOSIN]))
    rgb = od_to_rgb(od, np.asarray(light, dtype=np.float64))
    rgb += np.random.default_rng(seed).normal(0.0, 1.0, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), conc.sum(axis=-1) == 0


def tissue(image):
    """The image's tissue: optical density above the threshold against its own light."""
    return tissue_mask_od(rgb_to_od(image, estimate_light(image).rgb))


def tissue_stats(image, mask):
    lab = rgb_to_lab(image[mask])
    return lab.mean(axis=0), lab.std(axis=0)


def stats_error(out, source, reference):
    """The output's tissue CIELAB mean minus the reference's, and its standard deviation over the
    reference's (tissue of the output where the source has tissue)."""
    mean, std = tissue_stats(out, tissue(source))
    ref_mean, ref_std = tissue_stats(reference, tissue(reference))
    return mean - ref_mean, std / ref_std


@pytest.fixture(scope="module")
def case():
    """(source, its glass, reference): other stain amounts, other glass fractions, other lights."""
    source, glass = scan(0.3, SOURCE_LIGHT, seed=3, scale=(0.6, 1.4))
    reference, _ = scan(0.45, REFERENCE_LIGHT, seed=1)
    return source, glass, reference


@pytest.mark.parametrize("path", PATHS)
def test_glass_takes_the_reference_glass_and_tissue_its_statistics(path, case):
    source, glass, reference = case
    params, exact = PATHS[path]
    out = stainlab.load("reinhard-split", **params).fit(reference).transform(source, exact=exact)
    shift, ratio = stats_error(out, source, reference)
    assert np.abs(tissue_stats(source, tissue(source))[0] - tissue_stats(reference, tissue(reference))[0]).max() > 5
    np.testing.assert_allclose(shift, 0.0, atol=MEAN_TOLERANCE)
    np.testing.assert_allclose(ratio, 1.0, rtol=STD_TOLERANCE)
    # the source's glass (its light, plus a grey level of noise) lands on the reference's light
    np.testing.assert_allclose(np.median(out[glass], axis=0), REFERENCE_LIGHT, atol=1.0)
    assert np.abs(out[glass].mean(axis=0) - REFERENCE_LIGHT).max() < 1.5


def test_tissue_matches_when_the_reference_is_mostly_glass_where_plain_reinhard_fails():
    """Whole-image statistics count glass: a reference that is 70% glass against a source that is 5%
    drags plain Reinhard's tissue far from the reference's; the split variant does not notice."""
    source, _ = scan(0.05, SOURCE_LIGHT, seed=4, scale=(0.7, 1.3))
    reference, _ = scan(0.7, REFERENCE_LIGHT, seed=5)
    split_shift, split_ratio = stats_error(stainlab.load("reinhard-split").fit(reference)(source), source, reference)
    plain_shift, plain_ratio = stats_error(stainlab.load("reinhard").fit(reference)(source), source, reference)
    np.testing.assert_allclose(split_shift, 0.0, atol=MEAN_TOLERANCE)
    np.testing.assert_allclose(split_ratio, 1.0, rtol=STD_TOLERANCE)
    assert np.abs(plain_shift).max() > 20 * np.abs(split_shift).max()
    assert np.abs(plain_shift).max() > 5.0 and np.abs(plain_ratio - 1).max() > 0.15


def test_a_fully_covered_tile_falls_back_to_white_light(case):
    _, _, reference = case
    covered, _ = scan(0.0, SOURCE_LIGHT, seed=6, scale=(0.8, 1.2))
    assert not estimate_light(covered).found
    t = stainlab.load("reinhard-split").fit(reference)
    np.testing.assert_allclose(t.target_light, REFERENCE_LIGHT, atol=1.0)
    shift, ratio = stats_error(t(covered), covered, reference)
    np.testing.assert_allclose(shift, 0.0, atol=MEAN_TOLERANCE)
    np.testing.assert_allclose(ratio, 1.0, rtol=STD_TOLERANCE)
    # as a reference its glass is taken as white, and the fit says so
    with pytest.warns(NoBackgroundWarning, match="reinhard-split reference: no glass found"):
        fitted = stainlab.load("reinhard-split").fit(covered)
    assert fitted.target_light.tolist() == [255.0] * 3
    np.testing.assert_allclose(fitted.target_mean, tissue_stats(covered, tissue_mask_od(rgb_to_od(covered)))[0],
                               atol=MEAN_TOLERANCE)


def test_save_and_load_reproduce_the_outputs(case, tmp_path):
    source, _, reference = case
    covered, _ = scan(0.0, SOURCE_LIGHT, seed=6)
    t = stainlab.load("reinhard-split").fit(reference)
    t.save(tmp_path / "split.json")
    again = stainlab.load(tmp_path / "split.json")
    np.testing.assert_array_equal(again.target_light, t.target_light)
    for image in (source, covered):
        np.testing.assert_array_equal(again(image), t(image))
        np.testing.assert_array_equal(again.transform(image, exact=True), t.transform(image, exact=True))


def test_glass_under_a_dim_light_is_not_tissue(case):
    """Against white, grey glass of 215 has optical density 0.17 and would count as tissue; against its
    own light it has none: a source of only such glass is passed through, such a reference refused."""
    _, _, reference = case
    dim, _ = scan(1.0, (215, 212, 208), seed=7)
    assert tissue_mask_od(rgb_to_od(dim)).mean() > 0.9
    with pytest.warns(NoTissueWarning, match="reinhard-split source: no tissue"):
        out = stainlab.load("reinhard-split").fit(reference)(dim)
    np.testing.assert_array_equal(out, dim)
    with pytest.raises(NoTissueError, match="reinhard-split reference: no tissue"):
        stainlab.load("reinhard-split").fit(dim)


def test_tissue_weight_ramps_smoothly_from_half_to_one_and_a_half_the_threshold():
    od = np.linspace(0.0, 3 * TISSUE_BETA, 301)
    weight = tissue_weight(np.stack([od, 0.5 * od, 0.2 * od], axis=-1))
    assert (weight[od <= 0.5 * TISSUE_BETA] == 0).all() and (weight[od >= 1.5 * TISSUE_BETA] == 1).all()
    assert (np.diff(weight) >= 0).all()
    assert weight[np.argmin(np.abs(od - TISSUE_BETA))] == pytest.approx(0.5)
