"""Paired metrics: PSNR, MAE, CIEDE2000, SSIM (NumPy and torch) and MS-SSIM, against scikit-image and
published values."""

import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from synth import he_image

from stainlab import metrics
from stainlab.errors import InputError


def noisy(image, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).round().astype(np.uint8)


def to_torch(image):
    return torch.from_numpy(np.asarray(image)).permute(0, 3, 1, 2).double() / 255


def skimage_ssim(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=255)


@pytest.fixture(scope="module")
def pair():
    image = he_image((120, 136), seed=5)
    return image, noisy(image, 12.0)


# Sharma, Wu & Dalal (2005), Table 1: pairs 1, 2, 3, 7, 17 and 25 with their published CIEDE2000.
SHARMA_PAIRS = np.array([
    [50.0, 2.6772, -79.7751, 50.0, 0.0, -82.7485, 2.0425],
    [50.0, 3.1571, -77.2803, 50.0, 0.0, -82.7485, 2.8615],
    [50.0, 2.8361, -74.0200, 50.0, 0.0, -82.7485, 3.4412],
    [50.0, 0.0, 0.0, 50.0, -1.0, 2.0, 2.3669],
    [50.0, 2.5, 0.0, 73.0, 25.0, -18.0, 27.1492],
    [60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644],
])


def test_psnr_matches_skimage_and_the_closed_form(pair):
    a, b = pair
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    shifted = (a.astype(int) // 2 + 5).astype(np.uint8)   # exact offset of 5 grey levels, no clipping
    assert metrics.psnr(a // 2, shifted) == pytest.approx(10 * np.log10(255 ** 2 / 25), abs=1e-9)
    assert metrics.psnr(a, a) == float("inf")


def test_mae_of_a_known_offset_and_batches(pair):
    a, b = pair
    assert metrics.mae(a // 2, a // 2 + 7) == pytest.approx(7.0)
    batch = metrics.mae(np.stack([a, a]), np.stack([a, b]))
    assert isinstance(batch, np.ndarray) and batch.shape == (2,)
    assert batch[0] == 0.0
    assert batch[1] == pytest.approx(np.abs(a.astype(float) - b).mean())
    assert isinstance(metrics.mae(a, b), float)


def test_delta_e_2000_reproduces_sharmas_test_data_and_skimage():
    lab1, lab2, expected = SHARMA_PAIRS[:, :3], SHARMA_PAIRS[:, 3:6], SHARMA_PAIRS[:, 6]
    np.testing.assert_allclose(metrics.delta_e_2000(lab1, lab2), expected, atol=5e-5)
    rng = np.random.default_rng(0)
    low, high = [0, -110, -110], [100, 110, 110]
    x, y = rng.uniform(low, high, (20000, 3)), rng.uniform(low, high, (20000, 3))
    x[:50, 1:] = 0                                          # achromatic colours take the C' = 0 branches
    np.testing.assert_allclose(metrics.delta_e_2000(x, y), deltaE_ciede2000(x, y), atol=1e-6)
    np.testing.assert_allclose(metrics.delta_e_2000(x, y), metrics.delta_e_2000(y, x), atol=1e-9)


def test_ciede2000_of_rgb_images_matches_skimage(pair):
    a, b = pair
    expected = deltaE_ciede2000(rgb2lab(a), rgb2lab(b)).mean()
    assert metrics.ciede2000(a, b) == pytest.approx(expected, abs=1e-6)
    assert metrics.ciede2000(a, a) == 0.0
    black_white = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    assert metrics.ciede2000(*black_white) == pytest.approx(100.0, abs=1e-3)


def test_ssim_matches_skimage_gaussian_ssim(pair):
    a, b = pair
    assert metrics.ssim(a, b) == pytest.approx(skimage_ssim(a, b), abs=1e-9)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    worse = noisy(a, 40.0, seed=1)
    batch = metrics.ssim(np.stack([a, a]), np.stack([b, worse]))
    np.testing.assert_allclose(batch, [skimage_ssim(a, b), skimage_ssim(a, worse)], atol=1e-9)
    assert batch[1] < batch[0] < 1.0


def test_ssim_torch_agrees_with_numpy_and_has_gradients(pair):
    a, b = pair
    x, y = to_torch(a[None]).float(), to_torch(b[None]).float().requires_grad_(True)
    value = metrics.ssim_torch(x, y)
    assert value.item() == pytest.approx(metrics.ssim(a, b), abs=1e-4)
    value.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    grey_levels = metrics.ssim_torch(255 * x, 255 * y.detach(), data_range=255.0)
    assert grey_levels.item() == pytest.approx(metrics.ssim(a, b), abs=1e-4)
    per_image = metrics.ssim_torch(torch.cat([x, x]), torch.cat([x, y.detach()]), reduction="none")
    assert per_image.shape == (2,) and per_image[0].item() == pytest.approx(1.0, abs=1e-5)


def test_torch_inputs_give_the_numpy_values(pair):
    a, b = pair
    x, y = to_torch(a[None]), to_torch(b[None])
    np.testing.assert_allclose(metrics.psnr(x, y), [metrics.psnr(a, b)], atol=1e-9)
    np.testing.assert_allclose(metrics.ssim(x, y), [metrics.ssim(a, b)], atol=1e-9)
    assert metrics.mae(x[0], y[0]) == pytest.approx(metrics.mae(a, b), abs=1e-9)


def test_ms_ssim_reduces_to_ssim_and_falls_with_noise():
    image = he_image((192, 184), seed=2)
    assert metrics.ms_ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    noise_levels = [4.0, 12.0, 30.0]
    values = [metrics.ms_ssim(image, noisy(image, s)) for s in noise_levels]
    assert values[0] > values[1] > values[2] > 0.0
    b = noisy(image, 12.0)
    assert metrics.ms_ssim(image, b, weights=(1.0,)) == pytest.approx(metrics.ssim(image, b), abs=1e-12)
    # Noise is fine detail: coarse scales average it away, so MS-SSIM rates it above single-scale SSIM.
    assert values[1] > metrics.ssim(image, b)


def test_ms_ssim_refuses_images_too_small_for_five_scales():
    image = he_image((100, 120), seed=2)
    with pytest.raises(InputError, match="176x176"):
        metrics.ms_ssim(image, image)
    three_scales = metrics.ms_ssim(image, noisy(image, 10.0), weights=(0.2, 0.3, 0.5))
    assert 0.0 < three_scales < 1.0


@pytest.mark.parametrize("a, b, message", [
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8), "same shape"),
    (np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), "uint8"),
    (np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8), "HxWx3"),
    (torch.full((1, 3, 16, 16), 2.0), torch.zeros(1, 3, 16, 16), r"\[0, 1\]"),
])
def test_bad_inputs_raise_clear_errors(a, b, message):
    with pytest.raises(InputError, match=message):
        metrics.psnr(a, b)


def test_ssim_needs_an_11_pixel_window():
    tiny = np.zeros((10, 30, 3), np.uint8)
    with pytest.raises(InputError, match="11x11"):
        metrics.ssim(tiny, tiny)


def test_ms_ssim_of_a_uniform_shift_is_the_coarsest_luminance_term():
    # y = x + c leaves every variance and covariance unchanged, so cs = 1 at all five scales and MS-SSIM
    # reduces to SSIM at the coarsest scale (x averaged over 16x16 blocks) raised to the last weight.
    image = he_image((192, 176), seed=6) // 2
    shift = 30
    coarse = image.astype(float).reshape(12, 16, 11, 16, 3).mean(axis=(1, 3))
    per_channel = [structural_similarity(coarse[..., c], coarse[..., c] + shift, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255) for c in range(3)]
    expected = np.mean(np.array(per_channel) ** 0.1333)
    assert metrics.ms_ssim(image, image + shift) == pytest.approx(expected, abs=1e-9)
    assert expected < 0.999
