"""Colour deconvolution (stainlab.color.deconvolution) and the fixed-vector Ruifrok transform."""

import numpy as np
import pytest
from skimage.color import hed2rgb, rgb2hed

import stainlab
from stainlab.color import DAB, EOSIN, HEMATOXYLIN, normalize_rows
from stainlab.color.deconvolution import combine, project, separate, stain_basis, stain_images
from stainlab.errors import InputError, NoTissueError, NoTissueWarning
from stainlab.transforms.lut import to_uint8
from stainlab.transforms.ruifrok import Ruifrok
from synth import render
from synth import REFERENCE_STAINS, percentile_matched_case, psnr, separable_maps


# -- colour deconvolution ---------------------------------------------------------------------------
@pytest.mark.parametrize("stains", ["hed", "he", "hdab"])
def test_separate_and_combine_are_exact_inverses(ihc_image, stains):
    conc = separate(ihc_image, stains)
    back = combine(conc, stains)
    np.testing.assert_allclose(back, ihc_image, atol=1e-9)
    np.testing.assert_array_equal(to_uint8(back), ihc_image)
    assert stain_basis(stains).names[-1] == ("DAB" if stains == "hed" else "residual")


def test_custom_matrix_is_normalised_and_completed():
    basis = stain_basis([2 * HEMATOXYLIN, EOSIN])
    assert basis.names == ("stain 1", "stain 2", "residual")
    np.testing.assert_allclose(basis.matrix[:2], normalize_rows([HEMATOXYLIN, EOSIN]))
    np.testing.assert_allclose(basis.matrix[:2] @ basis.matrix[2], 0, atol=1e-12)
    np.testing.assert_allclose(basis.matrix @ basis.inverse, np.eye(3), atol=1e-12)


def test_separate_recovers_rendered_concentrations():
    conc = separable_maps(2)
    image = render(conc, REFERENCE_STAINS)
    found = separate(image, "he")
    # uint8 rounding moves OD by at most ~0.5/(I+1); measured 0.0055 and 0.0025 at the 99th percentile
    assert np.percentile(np.abs(found[..., :2] - conc), 99) < 0.02
    assert np.percentile(np.abs(found[..., 2]), 99) < 0.02          # nothing left in the residual


def test_skimage_convention_matches_rgb2hed_and_hed2rgb(ihc_image):
    hed = rgb2hed(ihc_image)
    ours = separate(ihc_image, "hed", convention="skimage")
    assert np.abs(ours - hed).max() < 1e-10                          # the later issue needs 1e-4
    assert np.abs(combine(hed, "hed", convention="skimage") - hed2rgb(hed)).max() < 1e-10
    h_only = hed.copy()
    h_only[..., 1:] = 0
    assert np.abs(project(ihc_image, "H", "hed", convention="skimage") - hed2rgb(h_only)).max() < 1e-10
    floats = ihc_image / 255.0
    assert np.abs(separate(floats, "hed", convention="skimage") - rgb2hed(floats)).max() < 1e-10


def test_project_is_the_single_stain_render():
    """Paper 002's T^-1([v_H, 0, 0]): an image rendered from H and E, projected on H, is the render of
    its haematoxylin alone (up to the source's uint8 rounding)."""
    conc = separable_maps(2)
    image = render(conc, REFERENCE_STAINS)
    h_image = project(image, "h", "he")
    assert h_image.shape == image.shape
    assert np.abs(h_image - render(conc * [1, 0], REFERENCE_STAINS)).max() <= 2.0    # measured 1.23
    images = stain_images(image, "he")
    assert set(images) == {"H", "E"} and all(im.dtype == np.uint8 for im in images.values())
    np.testing.assert_array_equal(images["H"], to_uint8(h_image))
    glass = (image == 255).all(axis=-1)
    assert glass.any() and all((im[glass] == 255).all() for im in images.values())


def test_deconvolution_errors_name_the_problem(ihc_image):
    with pytest.raises(ValueError, match="unknown stain set"):
        separate(ihc_image, "hex")
    with pytest.raises(ValueError, match="unknown stain channel"):
        project(ihc_image, "E", "hdab")
    with pytest.raises(ValueError, match="3 channels"):
        separate(ihc_image[..., :2])
    with pytest.raises(ValueError, match="convention='skimage'"):
        separate(ihc_image.astype(np.uint16))
    with pytest.raises(ValueError, match="linearly dependent"):
        separate(ihc_image, [HEMATOXYLIN, 2 * HEMATOXYLIN])
    with pytest.raises(ValueError, match="convention"):
        separate(ihc_image, convention="imagej")


# -- the Ruifrok transform ----------------------------------------------------------------------
def test_normalization_matches_exact_answer_under_ruifrok_stains():
    """Stains fixed and known, concentrations scaled by (1.3, 0.7): only the percentile scaling acts."""
    reference, source, answer = percentile_matched_case(source_stains=REFERENCE_STAINS)
    t = Ruifrok().fit(reference)
    assert psnr(source, answer) < 28
    assert psnr(t(source), answer) > 48                          # measured 51.5 dB
    assert psnr(t.transform(source, exact=True), answer) > 51    # measured 55.0 dB


def test_projection_channel_needs_no_fit(ihc_image):
    t = Ruifrok(stains="hdab", channel="DAB")
    assert t.fitted
    expected = to_uint8(project(ihc_image, "DAB", "hdab"))
    np.testing.assert_array_equal(t.transform(ihc_image, exact=True), expected)
    assert np.abs(t(ihc_image).astype(int) - t.transform(ihc_image, exact=True)).mean() < 1.0
    assert t.fit(ihc_image) is t                                 # a reference is accepted and ignored
    assert t.to_dict()["state"] == {}


def test_save_load_round_trip(tmp_path, ihc_image):
    reference = render(separable_maps(1), REFERENCE_STAINS)
    for t in (Ruifrok(stains="hed").fit(reference), Ruifrok(channel="H")):
        t.save(tmp_path / "r.json")
        loaded = stainlab.load(tmp_path / "r.json")
        assert loaded.get_params() == t.get_params()
        np.testing.assert_array_equal(loaded(ihc_image), t(ihc_image))
    custom = Ruifrok(stains=[HEMATOXYLIN, DAB]).fit(reference)
    custom.save(tmp_path / "c.json")
    np.testing.assert_array_equal(stainlab.load(tmp_path / "c.json")(ihc_image), custom(ihc_image))


def test_no_tissue_and_bad_parameters():
    with pytest.raises(NoTissueError):
        Ruifrok().fit(np.full((32, 32, 3), 255, np.uint8))
    t = Ruifrok().fit(render(separable_maps(1), REFERENCE_STAINS))
    white = np.full((16, 16, 3), 255, np.uint8)
    with pytest.warns(NoTissueWarning):
        assert np.array_equal(t(white), white)
    with pytest.raises(InputError, match="unknown stain channel"):
        Ruifrok(stains="he", channel="DAB")
    with pytest.raises(InputError, match="unknown stain set"):
        Ruifrok(stains="giemsa")
