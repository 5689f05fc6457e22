"""Per-image light on the torch engine and in the HED augmentation: on tissue around coloured, noisy glass
the engine estimates the light the NumPy path estimates, normalizes as the NumPy exact path does under
every ``light`` option, keeps gradients, and the augmentation leaves each image's glass its own colour."""

import numpy as np
import pytest
import torch

import stainlab
from stainlab.color import EOSIN, HEMATOXYLIN, normalize_rows, od_to_rgb
from stainlab.color import torch_color as tc
from stainlab.color.light import SAMPLE, estimate_light
from stainlab.errors import InputError
from stainlab.metrics import ciede2000
from stainlab.transforms import torch_engine
from stainlab.transforms.augment import StainAugmenter, augment
from stainlab.transforms.checks import check_stains
from synth import concentration_maps, he_image

GLASS = (234, 228, 212)                 # a beige scanner's glass
REFERENCE_GLASS = (246, 241, 250)       # the reference's, bluish
LIGHTS = ["estimate", "fixed", (230, 224, 214)]
ENGINES = [("macenko", {}), ("macenko", {"rescale": False}), ("ruifrok", {}), ("ruifrok", {"channel": "H"})]


def on_glass(glass, shape=(96, 128), seed=0, noise=1.5, scale=(1.0, 1.0)):
    """Synthetic H&E tissue rendered under the light ``glass`` (Beer-Lambert against it), with Gaussian
    scanner noise of ``noise`` levels; a third of the area is glass."""
    conc = concentration_maps(shape, seed, glass=0.35) * np.asarray(scale)
    od = conc @ normalize_rows(np.array([HEMATOXYLIN, EOSIN]))
    rgb = od_to_rgb(od, np.asarray(glass, dtype=np.float64))
    rgb += np.random.default_rng(seed).normal(0.0, noise, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def to_tensor(images, dtype=torch.float32):
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(dtype) / 255


def to_rgb8(batch):
    return [(im.detach().permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy() for im in batch]


@pytest.fixture(scope="module")
def images(ihc_image):
    """Beige glass, white glass with noise, dim grey glass, no glass at all, and real IHC."""
    return [on_glass(GLASS, seed=1), on_glass((254, 253, 255), seed=2, noise=0.8),
            on_glass((181, 180, 183), seed=3, scale=(0.7, 0.7)), he_image((96, 128), seed=4, glass=0.0),
            np.ascontiguousarray(ihc_image[:96, :128])]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_light_estimate_equals_the_numpy_one(images, dtype):
    """Exactly, on 8-bit values and on floats that round to them (the levels the NumPy path sees)."""
    batch = to_tensor(images, dtype)
    off_grid = batch + 0.4 / 255 * (2 * torch.rand(batch.shape, generator=torch.Generator().manual_seed(0)) - 1)
    for field, value in zip(tc.Lights._fields, tc.estimate_light(off_grid.clamp(0, 1).flatten(2))):
        torch.testing.assert_close(value, getattr(tc.estimate_light(batch.flatten(2)), field), atol=0, rtol=0)
    lights = tc.estimate_light(batch.flatten(2))
    for i, image in enumerate(images):
        expected = estimate_light(image)
        assert bool(lights.found[i]) == expected.found, i
        np.testing.assert_allclose(lights.rgb[i].numpy(), expected.rgb, rtol=1e-6)   # float32 vs float64 mean
        np.testing.assert_allclose(float(lights.glass_fraction[i]), expected.glass_fraction, rtol=1e-6)
    assert lights.found.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(lights.rgb[0].numpy(), GLASS, atol=1.0)


def test_light_estimate_strides_large_images_like_numpy():
    large = on_glass(GLASS, shape=(520, 520), seed=5, noise=2.0)     # more than SAMPLE pixels
    assert large.shape[0] * large.shape[1] > SAMPLE
    lights = tc.estimate_light(to_tensor([large]).flatten(2))
    expected = estimate_light(large)
    assert bool(lights.found[0]) and expected.found
    np.testing.assert_allclose(lights.rgb[0].numpy(), expected.rgb, rtol=1e-6)
    np.testing.assert_allclose(float(lights.glass_fraction[0]), expected.glass_fraction, rtol=1e-6)


@pytest.fixture(scope="module")
def reference():
    return on_glass(REFERENCE_GLASS, shape=(160, 192), seed=6)


@pytest.fixture(scope="module")
def fitted(reference):
    cache = {}

    def get(name, kw, light):
        key = (name, tuple(kw.items()), str(light))
        if key not in cache:
            cache[key] = stainlab.load(name, light=light, **kw).fit(reference)
        return cache[key]

    return get


@pytest.mark.parametrize("light", LIGHTS, ids=["estimate", "fixed", "rgb"])
@pytest.mark.parametrize("name, kw", ENGINES)
def test_engine_agrees_with_the_numpy_exact_path_on_coloured_glass(fitted, images, name, kw, light):
    t = fitted(name, kw, light)
    sources = images[:3] + images[4:]                                   # each has tissue enough
    out = t(to_tensor(sources), engine="torch")
    for i, (got, image) in enumerate(zip(to_rgb8(out), sources)):
        exact = t.transform(image, exact=True)
        assert ciede2000(got, exact) < 0.05, (name, kw, light, i)
        assert np.abs(got.astype(int) - exact).max() <= 1, (name, kw, light, i)


def test_normalized_glass_is_the_references_glass(fitted, images):
    t = fitted("macenko", {}, "estimate")
    np.testing.assert_allclose(t.target_light, REFERENCE_GLASS, atol=1.0)
    source = images[0]
    glass = (np.abs(source.astype(int) - GLASS) <= 4).all(axis=-1)
    got = to_rgb8(t(to_tensor([source]), engine="torch"))[0]
    np.testing.assert_allclose(np.median(got[glass], axis=0), REFERENCE_GLASS, atol=1.0)


@pytest.mark.parametrize("name", ["macenko", "ruifrok"])
def test_stain_images_on_coloured_glass(fitted, images, name):
    t = fitted(name, {}, "estimate")
    image = images[0]
    separated = t.stain_images(image)
    on_torch = t.stain_images(to_tensor([image]))
    np.testing.assert_allclose(on_torch.concentrations[0].permute(1, 2, 0).numpy(), separated.concentrations,
                               atol=1e-4, rtol=0)
    for field in ("normalized", "hematoxylin", "eosin"):
        got = to_rgb8(getattr(on_torch, field))[0].astype(int)
        assert np.abs(got - getattr(separated, field)).max() <= 1, field


def glass_batch(seed):
    """float64 (2, 3, 6, 6): a third glass within a level or two of ``GLASS`` (the light is found), the
    rest tissue colours away from the clip points and the tissue threshold."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64)
    glass = torch.tensor(GLASS, dtype=torch.float64).view(1, 3, 1, 1) / 255
    x[:, :, :2] = glass + 0.01 * (torch.rand(2, 3, 2, 6, generator=g, dtype=torch.float64) - 0.5)
    return x


@pytest.mark.parametrize("light", ["estimate", GLASS], ids=["estimate", "rgb"])
@pytest.mark.parametrize("name", ["macenko", "ruifrok"])
def test_gradients_pass_gradcheck_with_light(fitted, name, light):
    t = fitted(name, {}, light)
    x = glass_batch(0)
    assert tc.estimate_light(x.flatten(2)).found.all()
    assert torch.autograd.gradcheck(t, (x.requires_grad_(),), eps=1e-6, atol=1e-5)


def test_augment_gradients_pass_gradcheck_with_an_estimated_light():
    basis = check_stains("augment: stains", "hed")
    alpha, beta = torch_engine.augment_draws(2, 3, 0.2, 0.2, torch.Generator().manual_seed(1))
    x = glass_batch(1)
    assert torch.autograd.gradcheck(lambda v: torch_engine.augment(v, alpha, beta, basis), (x.requires_grad_(),))


def test_augmentation_keeps_each_images_own_glass(images):
    image = images[0]
    glass = (np.abs(image.astype(int) - GLASS) <= 4).all(axis=-1)
    assert glass.mean() > 0.2
    np.testing.assert_array_equal(augment(image, 0, 0, seed=0), image)    # the density is not clipped
    for seed in range(3):
        out = augment(image, 0.2, 0.2, seed=seed)
        moved = np.abs(out.astype(int) - image)[glass]
        assert moved.mean() < 0.3 and moved.max() <= 2                      # glass stays beige
        assert np.abs(out.astype(int) - image)[~glass].mean() > 2           # tissue does change
    fixed = augment(image, 0.2, 0.2, seed=0, light="fixed")                  # beige glass taken for stain
    assert np.abs(fixed.astype(int) - image)[glass].mean() > 5


@pytest.mark.parametrize("light", LIGHTS, ids=["estimate", "fixed", "rgb"])
def test_augment_engine_agrees_with_numpy_on_the_same_draws(images, light):
    """The NumPy path's draws of a seed (alpha then beta per stain, ``augment._augment``) given to the
    engine: the same image within a level."""
    basis = check_stains("augment: stains", "hed")
    for image in images:
        rng = np.random.default_rng(3)
        alpha, beta = np.ones((1, 3)), np.zeros((1, 3))
        alpha[0], beta[0] = rng.uniform(0.8, 1.2, 3), rng.uniform(-0.2, 0.2, 3)
        got = torch_engine.augment(to_tensor([image], torch.float64), torch.from_numpy(alpha),
                                   torch.from_numpy(beta), basis, light)
        expected = augment(image, 0.2, 0.2, seed=3, light=light)
        assert np.abs(to_rgb8(got)[0].astype(int) - expected).max() <= 1


def test_augmenter_light_option(images, tmp_path):
    aug = StainAugmenter(0.2, 0.2, seed=2, light=GLASS)
    assert aug.get_params()["light"] == list(GLASS)
    path = tmp_path / "augment.json"
    aug.save(path)
    replay = StainAugmenter(0.2, 0.2, seed=2, light=GLASS)
    np.testing.assert_array_equal(stainlab.load(path)(images[0]), replay(images[0]))
    with pytest.raises(InputError, match="augment: light"):
        StainAugmenter(light="bright")
    with pytest.raises(InputError, match="augment: light"):
        augment(images[0], light=(0, 255, 255))
