"""The glass-anchored linear optimal-transport map (transforms/optimal_transport.py) and per-image light."""

from __future__ import annotations

import numpy as np
import pytest

import stainlab
from stainlab.color import od_to_rgb
from stainlab.color.light import estimate_light
from stainlab.color.stains import normalize_rows
from stainlab.transforms.optimal_transport import monge_map
from synth import REFERENCE_STAINS, concentration_maps

SOURCE_LIGHT = (240.0, 236.0, 228.0)
TARGET_LIGHT = (232.0, 226.0, 214.0)
# A symmetric positive-definite change of optical density: gains per channel and some cross-talk.
CHANGE = np.array([[1.25, 0.10, 0.02], [0.10, 0.85, 0.06], [0.02, 0.06, 1.10]])


def rendered(od, light, noise=0.0, seed=0):
    rgb = od_to_rgb(od, np.asarray(light))
    if noise:
        rgb = rgb + np.random.default_rng(seed).normal(0.0, noise, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def tissue_od(seed=0, glass=0.3, shape=(200, 240)):
    return concentration_maps(shape, seed, glass) @ normalize_rows(np.asarray(REFERENCE_STAINS, float))


def quiet_fit(t, reference):
    with np.errstate(all="ignore"):
        return t.fit(reference)


def test_monge_map_sends_one_second_moment_onto_the_other():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    source, target = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    m = monge_map(source, target)
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    assert np.linalg.eigvalsh(m).min() > 0
    np.testing.assert_allclose(m @ source @ m, target, rtol=1e-4, atol=1e-6)


def test_a_linear_change_of_optical_density_and_of_light_is_undone_exactly():
    """Target = the same tissue with its OD changed by a symmetric positive-definite matrix and seen under
    another light: the map fitted on the target sends the source onto it within rounding."""
    od = tissue_od()
    source, target = rendered(od, SOURCE_LIGHT), rendered(od @ CHANGE, TARGET_LIGHT)
    t = stainlab.load("linear-ot").fit(target)
    np.testing.assert_allclose(t.target_light, TARGET_LIGHT, atol=1.0)
    for out in (t(source), t.transform(source, exact=True)):
        diff = np.abs(out.astype(int) - target)
        assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 2, (diff.mean(), diff.max())


def test_glass_stays_glass_under_the_reference_light():
    od = tissue_od(glass=0.4)
    source = rendered(od, SOURCE_LIGHT, noise=1.0, seed=1)
    reference = rendered(tissue_od(seed=3) @ CHANGE, TARGET_LIGHT, noise=1.0, seed=2)
    out = stainlab.load("linear-ot").fit(reference)(source)
    glass = (od == 0).all(axis=-1)
    np.testing.assert_allclose(np.median(out[glass], axis=0), TARGET_LIGHT, atol=1.0)


def test_the_map_ignores_how_much_glass_the_reference_has():
    """Moments are over tissue only: a reference of the same tissue with far more glass gives the same map."""
    od = tissue_od(glass=0.2)
    source = rendered(od, SOURCE_LIGHT)
    target_od = od @ CHANGE
    sparse = np.zeros((400, 480, 3))
    sparse[:200, :240] = target_od                     # three quarters of it glass
    dense_map = stainlab.load("linear-ot").fit(rendered(target_od, TARGET_LIGHT))(source)
    sparse_map = stainlab.load("linear-ot").fit(rendered(sparse, TARGET_LIGHT))(source)
    assert np.abs(dense_map.astype(int) - sparse_map).mean() < 0.3


def test_light_estimation_recovers_a_known_illuminant_within_two_levels():
    for light in (SOURCE_LIGHT, TARGET_LIGHT, (255.0, 255.0, 255.0), (250.0, 238.0, 205.0)):
        image = rendered(tissue_od(seed=5, glass=0.3), light, noise=1.5, seed=4)
        found = estimate_light(image)
        assert found.found
        assert np.abs(found.rgb - light).max() <= 2.0, (found.rgb, light)


def test_a_tile_without_glass_falls_back_to_white_and_says_so():
    od = tissue_od(glass=0.0)
    image = rendered(od + 0.2, SOURCE_LIGHT, noise=1.0)      # tissue everywhere
    found = estimate_light(image)
    assert not found.found and (found.rgb == 255).all() and "no glass" in found.describe()
    with pytest.warns(stainlab.errors.NoBackgroundWarning, match="no glass"):
        stainlab.load("linear-ot").fit(image)


def test_saved_map_reloads_to_identical_outputs(tmp_path):
    od = tissue_od()
    t = stainlab.load("linear-ot").fit(rendered(od @ CHANGE, TARGET_LIGHT, noise=1.0))
    t.save(tmp_path / "ot.json")
    again = stainlab.load(tmp_path / "ot.json")
    source = rendered(od, SOURCE_LIGHT, noise=1.0, seed=3)
    np.testing.assert_array_equal(t(source), again(source))


def test_a_corrupt_saved_moment_is_refused(tmp_path):
    t = stainlab.load("linear-ot").fit(rendered(tissue_od(), TARGET_LIGHT))
    data = t.to_dict()
    data["state"]["target_moment"][0][1] += 0.5           # no longer symmetric
    with pytest.raises(stainlab.errors.InputError, match="symmetric"):
        stainlab.transforms.registry.from_dict(data)


@pytest.mark.parametrize("light", ["fixed", (240, 236, 228)])
def test_light_options(light):
    od = tissue_od()
    source = rendered(od, SOURCE_LIGHT)
    t = stainlab.load("linear-ot", light=light).fit(rendered(od @ CHANGE, TARGET_LIGHT))
    expected = (255.0,) * 3 if light == "fixed" else light
    np.testing.assert_allclose(t.target_light, expected)
    assert t(source).shape == source.shape
    with pytest.raises(stainlab.errors.InputError, match="light"):
        stainlab.load("linear-ot", light=(0, 300, 5))


@pytest.fixture(scope="module")
def large_image():
    """Over 1 MPix (the lookup-table path): a rendered field repeated 4 x 4, under SOURCE_LIGHT with noise."""
    return rendered(np.tile(tissue_od(seed=7, glass=0.1, shape=(275, 250)), (4, 4, 1)), SOURCE_LIGHT,
                    noise=1.5, seed=2)


@pytest.mark.parametrize("name", ["linear-ot", "macenko", "vahadane", "ruifrok", "reinhard-split"])
def test_large_images_and_slide_samples_take_the_light_of_their_glass(name, large_image):
    """On the lookup-table path (over 1 MPix) and from a slide's sample histogram (``source_of``) the
    light is taken on the table's own lattice, and equals the estimate from every pixel within a level."""
    from stainlab.transforms.lut import ColorHistogram

    image = large_image
    t = stainlab.load(name).fit(rendered(tissue_od(seed=8), TARGET_LIGHT, noise=1.0))
    light = t.source_of(ColorHistogram.of(image, t.lut_bits)).light
    np.testing.assert_allclose(light, estimate_light(image).rgb, atol=1.0)
    np.testing.assert_allclose(light, SOURCE_LIGHT, atol=1.0)
