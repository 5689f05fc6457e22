"""Torch twins of colour deconvolution (stainlab.color.torch_stains) against scikit-image and NumPy."""

import numpy as np
import pytest
import torch
from skimage.color import hed2rgb, rgb2hed

from stainlab.color import deconvolution
from stainlab.color.torch_stains import StainSeparator, combine, project, separate


def _nchw(image: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """uint8 HxWx3 -> (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(image / 255.0).permute(2, 0, 1).unsqueeze(0).to(dtype)


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].permute(1, 2, 0).detach().double().numpy()


def _single(hed: np.ndarray, keep: int) -> np.ndarray:
    out = np.zeros_like(hed)
    out[..., keep] = hed[..., keep]
    return out


def test_separate_matches_rgb2hed_in_float32(ihc_image):
    ours = _hwc(separate(_nchw(ihc_image)))
    reference = rgb2hed(ihc_image)
    assert np.abs(ours - reference).max() < 1e-4
    assert reference[..., 2].max() > 0.05                 # real DAB in the crop: the test can fail


def test_combine_matches_hed2rgb(ihc_image):
    hed = rgb2hed(ihc_image)
    conc = torch.from_numpy(hed).permute(2, 0, 1).unsqueeze(0).float()
    assert np.abs(_hwc(combine(conc)) - hed2rgb(hed)).max() < 1e-4


@pytest.mark.parametrize("channel, keep", [("H", 0), ("E", 1), ("dab", 2), (2, 2)])
def test_project_matches_hed2rgb_of_one_channel(ihc_image, channel, keep):
    """Paper 002's I^H = T^-1([v_H, 0, 0]) and the DAB twin, to 1e-4 of scikit-image."""
    expected = hed2rgb(_single(rgb2hed(ihc_image), keep))
    assert np.abs(_hwc(project(_nchw(ihc_image), channel)) - expected).max() < 1e-4
    module = StainSeparator()
    assert np.abs(_hwc(module.project(_nchw(ihc_image), channel)) - expected).max() < 1e-4


def test_stainlab_convention_matches_numpy_deconvolution(ihc_image):
    x = _nchw(ihc_image, torch.float64)
    for stains in ("hed", "hdab"):
        conc = deconvolution.separate(ihc_image, stains)
        assert np.abs(_hwc(separate(x, stains, "stainlab")) - conc).max() < 1e-9
        assert np.abs(_hwc(combine(separate(x, stains, "stainlab"), stains, "stainlab")) * 255
                      - deconvolution.combine(conc, stains)).max() < 1e-7
        expected = deconvolution.project(ihc_image, "DAB", stains) / 255
        assert np.abs(_hwc(project(x, "DAB", stains, "stainlab")) - expected).max() < 1e-9


def test_project_net_maps_minus_one_one(ihc_image):
    x = _nchw(ihc_image)
    module = StainSeparator()
    net = module.project_net(x * 2 - 1, "H")
    torch.testing.assert_close(net, project(x, "H") * 2 - 1)
    assert module.state_dict() == {}                      # constants, never saved with a model


def test_gradients_flow_through_projection(ihc_image):
    x = _nchw(ihc_image[:32, :32]).requires_grad_(True)
    project(x, "DAB").sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.abs() > 0).float().mean() > 0.5       # flat only where a clip is active
    # a finite-difference check of the derivative on a mid-grey pixel, where nothing is clipped
    y = torch.full((1, 3, 1, 1), 0.5, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: project(t, "H"), (y,))
    torch.autograd.gradcheck(lambda t: separate(t, "hed", "stainlab"), (y,))


def test_bad_shapes_and_names_are_named():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        separate(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="float"):
        project(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "H")
    with pytest.raises(ValueError, match="unknown stain channel"):
        project(torch.rand(1, 3, 4, 4), "eosine")
    with pytest.raises(ValueError, match="convention"):
        separate(torch.rand(1, 3, 4, 4), convention="imagej")
