"""Macenko normalization and the stain-matrix machinery it shares with Vahadane and Ruifrok.

Images are rendered by Beer-Lambert from known concentrations under known stain vectors, so the
recovered stain vectors and the normalized output are compared with exact answers.
"""

import json
import warnings

import numpy as np
import pytest

import stainlab
from stainlab.color import EOSIN, HEMATOXYLIN, angle_degrees, normalize_rows, tissue_mask
from stainlab.color.stains import MACENKO_REFERENCE_HE, MACENKO_REFERENCE_MAX_C
from stainlab.errors import InputError, NoTissueError, NoTissueWarning, NotFittedError
from stainlab.transforms.macenko import Macenko, least_squares_map
from stainlab.transforms.stain_matrix import scale_factors
from synth import (FLAT_COLOURS, REFERENCE_STAINS, SOURCE_STAINS, he_image, percentile_matched_case, psnr,
                   render, separable_maps)

@pytest.mark.parametrize("glass", [0.25, 0.9])
@pytest.mark.parametrize("seed", [0, 3])
def test_recovers_known_stain_vectors_in_order(glass, seed):
    image = render(separable_maps(seed, glass), SOURCE_STAINS)
    stains = Macenko().fit(image).stain_matrix
    # measured: at most 0.5 degrees, with 25% and with 90% glass
    assert angle_degrees(stains[0], SOURCE_STAINS[0]) <= 3.0
    assert angle_degrees(stains[1], SOURCE_STAINS[1]) <= 3.0


def test_mixed_stains_keep_their_order():
    """On synth.he_image every pixel mixes both stains, so the extremes sit inside the true vectors
    (measured 3.8 and 2.4 degrees), but the labels must still be right."""
    stains = Macenko().stain_matrix_of(he_image(seed=0, stains=SOURCE_STAINS))
    assert angle_degrees(stains[0], SOURCE_STAINS[0]) <= 5.0
    assert angle_degrees(stains[1], SOURCE_STAINS[1]) <= 3.0
    assert angle_degrees(stains[0], SOURCE_STAINS[0]) < angle_degrees(stains[0], SOURCE_STAINS[1])


def test_normalized_output_matches_exact_answer():
    reference, source, answer = percentile_matched_case()
    t = Macenko().fit(reference)
    assert psnr(source, answer) < 27                        # the task: far from the answer before
    assert psnr(t(source), answer) > 43                     # measured 46.2 dB through the LUT
    assert psnr(t.transform(source, exact=True), answer) > 49   # measured 52.1 dB


def test_histogram_weights_give_the_pixel_answer():
    image = render(separable_maps(4), SOURCE_STAINS)
    t = Macenko()
    from_histogram = t.stain_matrix_of(image)                           # distinct colours + counts
    from_pixels, max_c, _ = t._source(image.reshape(-1, 3).astype(float), None)   # every pixel, no weights
    np.testing.assert_allclose(from_histogram, from_pixels, atol=1e-9)
    np.testing.assert_allclose(t.fit(image).max_concentrations, max_c, rtol=1e-9)


def test_all_white_reference_is_refused():
    with pytest.raises(NoTissueError, match="no tissue"):
        Macenko().fit(np.full((64, 64, 3), 255, np.uint8))




@pytest.mark.parametrize("colour", FLAT_COLOURS)
def test_flat_source_passes_through(colour):
    t = Macenko().fit(render(separable_maps(1), REFERENCE_STAINS))
    flat = np.full((40, 50, 3), colour, np.uint8)
    with pytest.warns(NoTissueWarning):
        assert np.array_equal(t(flat), flat)
    with pytest.warns(NoTissueWarning):
        assert np.array_equal(t.transform(flat, exact=True), flat)


def test_one_stain_source_passes_through():
    t = Macenko().fit(render(separable_maps(1), REFERENCE_STAINS))
    conc = separable_maps(2)
    eosin_only = render(conc * [0, 1], SOURCE_STAINS)
    with pytest.warns(NoTissueWarning, match="one stain only"):
        assert np.array_equal(t(eosin_only), eosin_only)


def test_black_and_white_pixels_inside_tissue_stay_finite():
    image = render(separable_maps(2), SOURCE_STAINS)
    image[:20, :20] = 0
    image[-20:, -20:] = 255
    t = Macenko().fit(render(separable_maps(1), REFERENCE_STAINS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # no RuntimeWarning (log 0, 0/0) and no pass-through
        out = t(image)
        exact = t.transform(image, exact=True)
    assert (out[-20:, -20:] == 255).all() and (exact[-20:, -20:] == 255).all()   # glass stays white
    assert np.abs(out.astype(int) - exact).mean() < 1.0


def test_save_load_round_trip(tmp_path):
    reference, source, _ = percentile_matched_case()
    t = Macenko(alpha=2, percentile=98, lut_bits=6).fit(reference)
    t.save(tmp_path / "macenko.json")
    loaded = stainlab.load(tmp_path / "macenko.json")
    assert isinstance(loaded, Macenko) and loaded.get_params() == t.get_params()
    np.testing.assert_array_equal(loaded.stain_matrix, t.stain_matrix)
    np.testing.assert_array_equal(loaded(source), t(source))
    state = json.loads((tmp_path / "macenko.json").read_text())["state"]
    assert np.array(state["stain_matrix"]).shape == (2, 3)


def test_corrupt_state_is_refused(tmp_path):
    t = Macenko().fit(render(separable_maps(1), REFERENCE_STAINS))
    data = t.to_dict()
    data["state"]["stain_matrix"] = [[1.0, 0.0]]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="corrupt"):
        stainlab.load(path)


def test_multiple_references_pool_and_average():
    a, b = render(separable_maps(1), REFERENCE_STAINS), render(separable_maps(5) * [1.4, 0.8], REFERENCE_STAINS)
    single = [Macenko().fit(im) for im in (a, b)]
    pooled = Macenko().fit([a, b])
    stacked = Macenko().fit(np.concatenate([a, b], axis=0))        # one image holding all pixels
    np.testing.assert_allclose(pooled.stain_matrix, stacked.stain_matrix, atol=1e-12)
    np.testing.assert_allclose(pooled.max_concentrations, stacked.max_concentrations, rtol=1e-12)
    averaged = Macenko(multi="average").fit([a, b])
    np.testing.assert_allclose(averaged.max_concentrations,
                               (single[0].max_concentrations + single[1].max_concentrations) / 2, rtol=1e-12)
    np.testing.assert_allclose(averaged.stain_matrix,
                               normalize_rows(single[0].stain_matrix + single[1].stain_matrix), atol=1e-12)
    for t in (pooled, averaged):
        assert angle_degrees(t.stain_matrix[0], HEMATOXYLIN) < 1.0
        assert angle_degrees(t.stain_matrix[1], EOSIN) < 1.0


def test_standard_target_needs_no_reference():
    t = Macenko.standard()
    assert t.fitted
    np.testing.assert_allclose(t.stain_matrix, normalize_rows(MACENKO_REFERENCE_HE))
    np.testing.assert_array_equal(t.max_concentrations, MACENKO_REFERENCE_MAX_C)
    source = render(separable_maps(2), SOURCE_STAINS)
    out = t(source)
    recovered = Macenko().stain_matrix_of(out)
    assert angle_degrees(recovered[0], MACENKO_REFERENCE_HE[0]) < 1.0    # measured 0.04
    assert angle_degrees(recovered[1], MACENKO_REFERENCE_HE[1]) < 1.0    # measured 0.25


def test_concentrations_give_the_separated_stains():
    conc = separable_maps(2)
    image = render(conc, SOURCE_STAINS)
    tissue = tissue_mask(image)
    t = Macenko()
    own = t.concentrations(image)                                   # with the image's own stain matrix
    known = t.concentrations(image, stain_matrix=np.array(SOURCE_STAINS))
    assert own.shape == image.shape[:2] + (2,)
    # 99th percentile of the error over tissue, measured 0.008 (uint8 rounding only) and 0.018
    assert np.percentile(np.abs(known - conc)[tissue], 99) < 0.02
    assert np.percentile(np.abs(own - conc)[tissue], 99) < 0.05


def test_scale_factors_guard_absent_stains():
    np.testing.assert_array_equal(scale_factors(np.array([2.0, 0.0]), np.array([1.0, 1.0])), [0.5, 1.0])
    np.testing.assert_array_equal(scale_factors(np.array([2.0, 1.0]), np.array([1.0, 0.0])), [0.5, 1.0])
    np.testing.assert_array_equal(scale_factors([0.5, 2.0, 0.004], [1.0, 1.0, 1.0]), [2.0, 0.5, 1.0])


def test_the_od_map_is_least_squares_scaled_and_recomposed():
    """The compiled 3x3 matrix equals ``W^T (W W^T)^-1 diag(factors) target`` written with NumPy."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        rows, factors, target = normalize_rows(rng.random((2, 3)) + 0.1), rng.random(2) + 0.5, rng.random((2, 3))
        expected = rows.T @ np.linalg.inv(rows @ rows.T) @ (factors[:, None] * target)
        np.testing.assert_allclose(least_squares_map(rows, factors, target), expected, rtol=1e-10, atol=1e-12)


def test_unfitted_and_bad_parameters():
    with pytest.raises(NotFittedError):
        Macenko()(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="multi"):
        Macenko(multi="median")
    with pytest.raises(InputError, match="alpha"):
        Macenko(alpha=60)
    assert isinstance(stainlab.load("macenko", alpha=2), Macenko)
    assert stainlab.methods()["macenko"].startswith("Macenko 2009")
