"""``convention="torchstain"``: stainlab's Macenko reproduces torchstain's NumPy Macenko, and its Reinhard
torchstain's Reinhard, within a mean CIEDE2000 of 1.0, for people who migrate (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

import stainlab
from stainlab.metrics.pixel import ciede2000
from synth import SOURCE_STAINS, concentration_maps, he_image, render

macenko = pytest.importorskip("torchstain.numpy.normalizers.macenko")
reinhard = pytest.importorskip("torchstain.numpy.normalizers.reinhard")


def beige_glass(image):
    """The image seen under a grey-beige light, as some scanners render glass (glass near 236)."""
    return np.clip(np.rint(image * (np.array([236.0, 231.0, 222.0]) / 255.0)), 0, 255).astype(np.uint8)


CASES = {
    "white glass": (he_image(shape=(192, 224), seed=1, glass=0.3),
                    render(concentration_maps((192, 224), seed=2, glass=0.4) * [1.3, 0.8], SOURCE_STAINS, noise=1.0)),
    "beige glass": (beige_glass(he_image(shape=(192, 224), seed=3, glass=0.3)),
                    beige_glass(render(concentration_maps((192, 224), seed=4, glass=0.2), SOURCE_STAINS, noise=1.0))),
}


@pytest.mark.parametrize("case", CASES)
def test_macenko_in_torchstains_convention_reproduces_torchstain(case):
    reference, source = CASES[case]
    peer = macenko.NumpyMacenkoNormalizer()
    peer.fit(reference)
    expected, hema, eosin = peer.normalize(source, stains=True)
    t = stainlab.load("macenko", convention="torchstain").fit(reference)
    np.testing.assert_allclose(t.target_light, 239.0)
    for out in (t(source), t.transform(source, exact=True), t(source[:128, :128])):
        expected_part = expected[:out.shape[0], :out.shape[1]]
        if out.shape != source.shape:   # a tile of its own: torchstain's answer on that tile
            expected_part = peer.normalize(source[:128, :128], stains=False)[0]
        assert ciede2000(out, expected_part) < 1.0
    separated = t.stain_images(source)
    assert ciede2000(separated.hematoxylin, hema) < 1.0 and ciede2000(separated.eosin, eosin) < 1.0


@pytest.mark.parametrize("case", CASES)
def test_reinhard_reproduces_torchstain(case):
    reference, source = CASES[case]
    peer = reinhard.NumpyReinhardNormalizer()
    peer.fit(reference)
    assert ciede2000(stainlab.load("reinhard").fit(reference)(source), peer.normalize(source)) < 1.0


def test_the_default_convention_differs_where_the_glass_is_not_white():
    """What the README says differs by default: stainlab takes the image's own light, so a source and a
    reference under the same beige light keep glass at that light, where torchstain's fixed Io = 240
    renders it at 240 and counts the beige glass's density as tissue."""
    reference, source = CASES["beige glass"]
    ours = stainlab.load("macenko").fit(reference)
    np.testing.assert_allclose(ours.target_light, [236, 231, 222], atol=2)
    glass = (source >= np.array([234, 229, 220])).all(axis=-1) & (source <= np.array([238, 233, 224])).all(axis=-1)
    assert glass.mean() > 0.1
    np.testing.assert_allclose(np.median(ours(source)[glass], axis=0), [236, 231, 222], atol=1.5)


def test_torchstains_convention_takes_tensors_through_numpy_only():
    """The torch engine computes stainlab's convention, so in torchstain's a CPU batch goes through the
    NumPy path (the same numbers) and a batch that needs the engine is refused in one line."""
    torch = pytest.importorskip("torch")
    reference, source = CASES["white glass"]
    t = stainlab.load("macenko", convention="torchstain").fit(reference)
    batch = torch.from_numpy(source).permute(2, 0, 1)[None].float() / 255
    out = t(batch)
    np.testing.assert_array_equal((out[0].permute(1, 2, 0) * 255).round().byte().numpy(), t(source))
    with pytest.raises(stainlab.errors.InputError, match="no torch engine"):
        t(batch, engine="torch")
    with pytest.raises(stainlab.errors.InputError, match="torchstain"):
        t.stain_images(batch)
