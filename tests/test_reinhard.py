"""Reinhard colour transfer: the output carries the reference's CIELAB mean and standard deviation."""

import numpy as np
import pytest

import stainlab
from stainlab.color.lab import rgb_to_lab
from stainlab.color.tissue import tissue_mask
from stainlab.errors import NoTissueError, NoTissueWarning

MEAN_TOLERANCE = 0.5   # CIELAB units
STD_TOLERANCE = 0.03   # relative


def lab_stats(image, keep=None):
    pixels = image.reshape(-1, 3) if keep is None else image[keep]
    lab = rgb_to_lab(pixels)
    return lab.mean(axis=0), lab.std(axis=0)


def assert_stats_match(out, reference, out_keep=None, ref_keep=None):
    mean, std = lab_stats(out, out_keep)
    ref_mean, ref_std = lab_stats(reference, ref_keep)
    np.testing.assert_allclose(mean, ref_mean, atol=MEAN_TOLERANCE)
    np.testing.assert_allclose(std, ref_std, rtol=STD_TOLERANCE)


def pair(case, request):
    """(source, reference) pairs whose transfer stays inside the RGB gamut, so clipping does not
    bend the statistics: real to real, and synthetic H&E to real IHC."""
    source = {"real-to-real": "ihc_other", "synthetic-to-real": "he_source"}[case]
    return request.getfixturevalue(source), request.getfixturevalue("ihc_image")


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("case", ["real-to-real", "synthetic-to-real"])
def test_output_has_reference_lab_statistics(case, exact, request):
    source, reference = pair(case, request)
    before, _ = lab_stats(source)
    assert np.abs(before - lab_stats(reference)[0]).max() > 10  # a real shift to undo
    out = stainlab.load("reinhard").fit(reference).transform(source, exact=exact)
    assert_stats_match(out, reference)


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("source, reference", [("he_source", "he_reference"), ("ihc_other", "ihc_image")])
def test_masked_variant_matches_tissue_and_keeps_background(source, reference, exact, request):
    source, reference = request.getfixturevalue(source), request.getfixturevalue(reference)
    tissue = tissue_mask(source)
    out = stainlab.load("reinhard-masked").fit(reference).transform(source, exact=exact)
    assert_stats_match(out, reference, tissue, tissue_mask(reference))
    if exact:
        np.testing.assert_array_equal(out[~tissue], source[~tissue])


def test_masked_variant_keeps_background_bytes_on_lut_path(he_source, he_reference):
    tissue = tissue_mask(he_source)
    out = stainlab.load("reinhard-masked").fit(he_reference)(he_source)
    np.testing.assert_array_equal(out[~tissue], he_source[~tissue])


@pytest.mark.parametrize("name", ["reinhard", "reinhard-masked"])
def test_all_white_reference_is_refused(name):
    """Both variants: every fitted per-pixel method requires tissue in its reference."""
    white = np.full((64, 64, 3), 255, dtype=np.uint8)
    with pytest.raises(NoTissueError, match="no tissue"):
        stainlab.load(name).fit(white)


@pytest.mark.parametrize("name", ["reinhard", "reinhard-masked"])
def test_flat_source_is_passed_through_with_a_warning(name, he_reference):
    """A single-colour source has zero spread: standardising it would divide by zero, and shifting it
    paints it the reference's mean colour (issue 12), so it is passed through with a warning."""
    t = stainlab.load(name).fit(he_reference)
    flat = np.empty((40, 50, 3), dtype=np.uint8)
    flat[:] = (170, 90, 150)
    for exact in (False, True):
        with pytest.warns(NoTissueWarning, match="reinhard source: channel R does not vary"):
            out = t.transform(flat, exact=exact)
        np.testing.assert_array_equal(out, flat)


def test_blank_source_passes_masked_variant_unchanged(he_reference):
    white = np.full((40, 50, 3), 255, dtype=np.uint8)
    with pytest.warns(NoTissueWarning):
        out = stainlab.load("reinhard-masked").fit(he_reference)(white)
    np.testing.assert_array_equal(out, white)
