"""Neural colour transfer behind the shared face (``stainlab.load("nct")``): what it does to colour on
real and synthetic tissue, determinism, the weight-file options, and its clear errors."""

import numpy as np
import pytest
import torch
from synth import he_image

import stainlab
from stainlab.color.lab import rgb_to_lab
from stainlab.errors import InputError, NoTissueError, NoTissueWarning
from stainlab.metrics import channel_wasserstein
from stainlab.nets.weights import WeightsNotFoundError


def nct(**params):
    return stainlab.load("nct", features="random", **params)


def mae(a, b):
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def recolour(image, matrix, offset):
    """A known global affine RGB map (a staining/scanner change), clipped to uint8."""
    return np.clip(image.astype(float) @ np.asarray(matrix).T + offset, 0, 255).astype(np.uint8)


MATRIX = [[0.80, 0.10, 0.00], [0.05, 0.70, 0.05], [0.00, 0.10, 0.95]]
OFFSET = [10.0, -5.0, 8.0]


@pytest.fixture(scope="module")
def tissue(ihc_image):
    return np.ascontiguousarray(ihc_image[:96, :128])


def test_reproduces_a_known_global_colour_map(ihc_image, tissue):
    """The reference is another, overlapping view of the tissue under a known colour map: the output
    is the source under that map, far closer than the source was."""
    reference = recolour(ihc_image[20:116, 30:158], MATRIX, OFFSET)
    expected = recolour(tissue, MATRIX, OFFSET)
    out = nct().fit(reference)(tissue)
    assert out.shape == tissue.shape and out.dtype == np.uint8
    assert mae(out, expected) < 0.3 * mae(tissue, expected)
    assert mae(out, expected) < 5.0


@pytest.mark.parametrize("scales", [((0.5, 0.5), (1.5, 1.4)), ((1.5, 1.4), (0.5, 0.5))], ids=["light-to-dark", "dark-to-light"])
def test_transfers_lightness_both_ways(scales):
    """Paper 001 Sec. 2.2.4: with its luminance weights the transfer works from light to dark and from
    dark to light. Source and reference are different tissue under different stain amounts."""
    source = he_image((96, 112), seed=3, scale=scales[0])
    reference = he_image((96, 112), seed=4, scale=scales[1])
    out = nct().fit(reference)(source)
    lightness = [rgb_to_lab(im)[..., 0].mean() for im in (source, reference, out)]
    assert abs(lightness[2] - lightness[1]) < 0.25 * abs(lightness[0] - lightness[1])


def test_segmentation_steers_the_correspondence():
    """Two regions the features cannot tell apart (the same grey texture) take the colours of the
    reference regions that carry the same label: left red, right blue."""
    rng = np.random.default_rng(0)
    texture = (100 + 40 * rng.random((64, 96, 1))).repeat(3, axis=2).astype(np.uint8)
    labels = np.zeros((64, 96), int)
    labels[:, 48:] = 1
    reference = texture.copy()
    reference[:, :48, 1:] //= 2   # left: red
    reference[:, 48:, :2] //= 2   # right: blue
    out = nct().fit(reference, labels=labels).transform(texture, labels=labels)
    red = out[..., 0].astype(float) - out[..., 2]
    assert red[:, 4:44].mean() > 30 and red[:, 52:92].mean() < -30
    unlabelled = nct(clusters=1).fit(reference)(texture)
    unlabelled_red = unlabelled[..., 0].astype(float) - unlabelled[..., 2]
    assert abs(unlabelled_red[:, 4:44].mean() - unlabelled_red[:, 52:92].mean()) < 30


def test_deterministic_under_its_seed(tissue, he_reference):
    first = nct(seed=3).fit(he_reference)(tissue)
    second = nct(seed=3).fit(he_reference)(tissue)
    other = nct(seed=4).fit(he_reference)(tissue)
    np.testing.assert_array_equal(first, second)
    assert (other != first).any() and mae(other, first) < 6.0


def test_every_option_moves_the_colours_to_the_reference(tissue, he_reference):
    """Each variant (tuned weights, Rec. 709 luminance, deeper layers, coarse-to-fine, a smaller working
    size) gives its own result, and each brings the colour distribution most of the way to the reference's."""
    before = channel_wasserstein(tissue, he_reference)
    base = nct().fit(he_reference)(tissue)
    for params in ({}, {"lambdas": "tuned"}, {"luminance": "bt709"}, {"layer": 2}, {"progressive": True, "layer": 3},
                   {"lambdas": [0.5, 1.0]}, {"work_side": 64}):
        out = nct(**params).fit(he_reference)(tissue)
        assert out.shape == tissue.shape and out.dtype == np.uint8
        assert params == {} or (out != base).any(), params
        assert channel_wasserstein(out, he_reference) < 0.3 * before, params


def test_weights_from_a_path_equal_the_same_random_network(tmp_path, tissue, he_reference):
    path = tmp_path / "vgg19-trained.pth"
    torch.save(stainlab.nets.vgg19("random", seed=0).state_dict(), path)
    from_file = nct().fit(he_reference)(tissue)
    np.testing.assert_array_equal(stainlab.load("nct", features=str(path)).fit(he_reference)(tissue), from_file)


def test_default_features_need_the_vgg19_file(tmp_path, monkeypatch, he_reference):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    t = stainlab.load("nct")  # loading reads nothing
    assert t.needs_weights and not t.per_pixel
    with pytest.raises(WeightsNotFoundError, match="vgg19-dcbb9e9d.pth"):
        t.fit(he_reference)
    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        stainlab.load("nct", features=str(tmp_path / "missing.pth")).fit(he_reference)
    assert "nct" not in stainlab.transforms.normalizers()


def test_reference_without_tissue_is_refused_and_blank_sources_pass_through(he_reference, tissue):
    white = np.full((64, 64, 3), 250, np.uint8)
    with pytest.raises(NoTissueError, match="nct reference: no tissue"):
        nct().fit(white)
    with pytest.warns(NoTissueWarning, match="passed through"):
        out = nct().fit(he_reference)(white)
    np.testing.assert_array_equal(out, white)


def test_bad_segmentations_and_parameters_are_named(he_reference):
    h, w = he_reference.shape[:2]
    with pytest.raises(InputError, match="segmentation of shape \\(10, 10\\) does not match"):
        nct().fit(he_reference, labels=np.zeros((10, 10), int))
    with pytest.raises(InputError, match="integers"):
        nct().fit(he_reference, labels=np.zeros((h, w)))
    labelled = nct().fit(he_reference, labels=np.zeros((h, w), int))
    with pytest.raises(InputError, match="does not match"):
        labelled.transform(he_reference, labels=np.zeros((h, w + 1), int))
    with pytest.raises(InputError, match="both the source and the reference"):
        labelled(he_reference)
    with pytest.raises(InputError, match="layer must be a whole number from 1 to 5"):
        nct(layer=6)
    with pytest.raises(InputError, match="lambdas"):
        nct(lambdas="fast")
    with pytest.raises(InputError, match="too small for VGG19 layer 5"):
        nct(layer=5).fit(he_reference[:20, :20])
    with pytest.raises(InputError, match="one reference image"):
        nct().fit([he_reference, he_reference])


def test_segmentation_survives_save_and_load(tmp_path, he_reference):
    h, w = he_reference.shape[:2]
    labels = (np.arange(w)[None, :] > w // 2).repeat(h, axis=0).astype(np.int64)
    t = nct(seed=2).fit(he_reference, labels=labels)
    t.save(tmp_path / "nct.json")
    again = stainlab.load(tmp_path / "nct.json")
    source = he_image((h, w), seed=9, scale=(0.7, 1.2))
    np.testing.assert_array_equal(again.transform(source, labels=labels), t.transform(source, labels=labels))


def test_a_global_start_is_refined_locally_and_reloads_identically(ihc_image, tissue, tmp_path):
    """``start="linear-ot"``: the global map first, then the local transfer; the saved reference is the
    whole state, so the reloaded transform refits the same global map and gives the same output."""
    reference = recolour(np.ascontiguousarray(ihc_image[32:160, 48:208]), MATRIX, OFFSET)
    t = nct(start="linear-ot").fit(reference)
    out = t(tissue)
    expected = recolour(tissue, MATRIX, OFFSET)
    assert mae(out, expected) < 0.6 * mae(tissue, expected)
    t.save(tmp_path / "nct.json")
    np.testing.assert_array_equal(stainlab.load(tmp_path / "nct.json")(tissue), out)


@pytest.mark.parametrize("start", ["nct", "augment", "grayscale", "nope", 3])
def test_a_start_that_is_no_global_reference_map_is_refused(start):
    with pytest.raises(InputError, match="start"):
        nct(start=start)
