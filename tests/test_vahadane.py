"""Vahadane normalization: the own sparse-NMF solver, recovery of known stains, exact-answer output."""

import numpy as np
import pytest
from scipy.optimize import nnls

import stainlab
from stainlab.color import angle_degrees, normalize_rows
from stainlab.errors import NoTissueError, NoTissueWarning
from stainlab.color.od import rgb_to_od
from stainlab.transforms.lut import ColorHistogram
from stainlab.transforms.vahadane import Vahadane, nonnegative_concentrations, od_cell_means, sparse_nmf
from synth import he_image, render
from synth import (FLAT_COLOURS, REFERENCE_STAINS, SOURCE_STAINS, percentile_matched_case, psnr,
                         separable_maps)


def random_od(n=400, seed=0):
    """OD rows around the stain plane, some outside the stains' cone, some off the plane."""
    rng = np.random.default_rng(seed)
    conc = rng.uniform(-0.5, 2.0, (n, 2))
    return conc @ np.array(SOURCE_STAINS) + rng.normal(0, 0.05, (n, 3))


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5])
def test_closed_form_concentrations_satisfy_kkt(sparsity):
    """Optimality of min 1/2||v - cW||^2 + sparsity*sum(c), c >= 0: gradient g = cG - b is 0 where
    c > 0 and >= 0 where c = 0."""
    od, stains = random_od(), np.array(SOURCE_STAINS)
    conc = nonnegative_concentrations(od, stains, sparsity)
    gradient = conc @ (stains @ stains.T) - (od @ stains.T - sparsity)
    assert (conc >= 0).all()
    assert np.abs(gradient[conc > 0]).max() < 1e-9
    assert gradient[conc == 0].min() > -1e-9
    assert (conc == 0).any(axis=1).mean() > 0.1           # the constraint is really active
    if sparsity == 0.0:
        for row, c in zip(od[:50], conc[:50]):
            np.testing.assert_allclose(c, nnls(stains.T, row)[0], atol=1e-9)


def test_concentrations_keep_the_leading_shape_and_nearly_parallel_stains_still_solve():
    """An image's optical density ``(H, W, 3)`` gives ``(H, W, 2)``; two stain rows nearly alike (their
    Gram matrix almost singular: the pseudo-inverse, not the adjugate) still give the KKT point."""
    od = random_od(600).reshape(20, 30, 3)
    stains = np.array(SOURCE_STAINS)
    np.testing.assert_array_equal(nonnegative_concentrations(od, stains),
                                  nonnegative_concentrations(od.reshape(-1, 3), stains).reshape(20, 30, 2))
    close = normalize_rows(np.array([SOURCE_STAINS[0], np.array(SOURCE_STAINS[0]) + [1e-6, 0.0, -1e-6]]))
    conc = nonnegative_concentrations(od.reshape(-1, 3), close)
    gradient = conc @ (close @ close.T) - od.reshape(-1, 3) @ close.T
    assert np.isfinite(conc).all() and (conc >= 0).all()
    assert gradient[conc == 0].min() > -1e-6


def test_sparse_nmf_moves_a_wrong_start_to_the_true_stains():
    rng = np.random.default_rng(1)
    conc = rng.uniform(0.2, 2.0, (600, 2))
    kind = rng.integers(0, 3, 600)                      # pure H, pure E, or a mixture
    conc[kind == 0, 1] = 0
    conc[kind == 1, 0] = 0
    truth = np.array(SOURCE_STAINS)
    start = normalize_rows(np.array(REFERENCE_STAINS))  # 7.7 and 7.0 degrees off
    fitted = sparse_nmf(conc @ truth, np.ones(600), start, sparsity=0.1, iterations=100)
    plain = sparse_nmf(conc @ truth, np.ones(600), start, sparsity=0.0, iterations=100)
    # measured 1.07 / 1.04 degrees (the L1 term's own bias); without it any enclosing cone fits
    # exactly and the start never moves (7.4 / 6.5 degrees)
    assert max(angle_degrees(fitted[i], truth[i]) for i in range(2)) < 1.5
    assert min(angle_degrees(plain[i], truth[i]) for i in range(2)) > 5.0
    assert (fitted >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(fitted, axis=1), 1.0)


def test_od_cell_means_keep_weight_and_mean_and_ignore_the_representation():
    image = render(separable_maps(2), SOURCE_STAINS)
    hist = ColorHistogram.of(image, 8)
    od, weights = rgb_to_od(hist.colors), hist.counts
    cells, totals = od_cell_means(od, weights)
    assert len(cells) < len(od) / 5
    assert totals.sum() == weights.sum()
    np.testing.assert_allclose(totals @ cells, weights @ od, rtol=1e-12)          # same weighted sum
    per_pixel = od_cell_means(rgb_to_od(image.reshape(-1, 3)), np.ones(image.shape[0] * image.shape[1]))
    np.testing.assert_allclose(per_pixel[0], cells, atol=1e-12)                   # histogram = pixels
    np.testing.assert_array_equal(per_pixel[1], totals)


@pytest.mark.parametrize("glass", [0.25, 0.9])
@pytest.mark.parametrize("seed", [0, 3])
def test_recovers_known_stain_vectors_in_order(glass, seed):
    stains = Vahadane().fit(render(separable_maps(seed, glass), SOURCE_STAINS)).stain_matrix
    # measured: at most 0.2 degrees
    assert angle_degrees(stains[0], SOURCE_STAINS[0]) <= 5.0
    assert angle_degrees(stains[1], SOURCE_STAINS[1]) <= 5.0


def test_mixed_stains_keep_their_order():
    """synth.he_image mixes both stains everywhere (see test_macenko); measured 6.3 and 2.9 degrees."""
    stains = Vahadane().stain_matrix_of(he_image(seed=0, stains=SOURCE_STAINS))
    assert angle_degrees(stains[0], SOURCE_STAINS[0]) <= 8.0
    assert angle_degrees(stains[1], SOURCE_STAINS[1]) <= 4.0
    assert angle_degrees(stains[0], SOURCE_STAINS[0]) < angle_degrees(stains[0], SOURCE_STAINS[1])


def test_normalized_output_matches_exact_answer():
    reference, source, answer = percentile_matched_case()
    t = Vahadane().fit(reference)
    assert psnr(t(source), answer) > 51                     # measured 54.7 dB
    assert psnr(t.transform(source, exact=True), answer) > 52   # measured 55.2 dB


def test_without_rescaling_concentrations_are_kept():
    """rescale=False (tiatoolbox #289): only the stain colours change, the amounts stay the source's."""
    conc = separable_maps(2) * [1.3, 0.7]
    t = Vahadane(rescale=False).fit(render(separable_maps(1), REFERENCE_STAINS))
    source = render(conc, SOURCE_STAINS)
    assert psnr(t(source), render(conc, REFERENCE_STAINS)) > 52      # measured 55.5 dB
    rescaled = Vahadane().fit(render(separable_maps(1), REFERENCE_STAINS))(source)
    assert psnr(rescaled, render(conc, REFERENCE_STAINS)) < 35       # the percentile scaling did act


def test_lut_and_exact_paths_see_the_same_stains():
    image = render(separable_maps(3) * [1.2, 0.9], SOURCE_STAINS)
    t = Vahadane()
    from_cells = t._source(ColorHistogram.of(image, 6).colors, ColorHistogram.of(image, 6).counts)[0]
    from_pixels = t._source(image.reshape(-1, 3).astype(float), None)[0]
    assert max(angle_degrees(from_cells[i], from_pixels[i]) for i in range(2)) < 0.1   # measured 0.005


def test_save_load_round_trip(tmp_path):
    reference, source, _ = percentile_matched_case()
    t = Vahadane(sparsity=0.05, iterations=20).fit(reference)
    t.save(tmp_path / "v.json")
    loaded = stainlab.load(tmp_path / "v.json")
    assert loaded.get_params() == t.get_params()
    np.testing.assert_array_equal(loaded(source), t(source))


def test_no_tissue_reference_and_sources():
    with pytest.raises(NoTissueError):
        Vahadane().fit(np.full((32, 32, 3), 250, np.uint8))
    t = Vahadane().fit(render(separable_maps(1), REFERENCE_STAINS))
    for colour in FLAT_COLOURS:
        flat = np.full((30, 30, 3), colour, np.uint8)
        with pytest.warns(NoTissueWarning):
            assert np.array_equal(t(flat), flat)
