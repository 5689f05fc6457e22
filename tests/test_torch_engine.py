"""The torch engine (issue 15): the same fitted transforms on (N, 3, H, W) batches, on the batch's device,
differentiable. It must agree with the NumPy exact path per image, keep per-image statistics per image,
pass images without tissue through like the NumPy path does, refuse bad input like the face does and let
gradients through everything, statistics included."""

import numpy as np
import pytest
import torch

import stainlab
from stainlab.errors import InputError, NoTissueWarning
from stainlab.metrics import ciede2000
from stainlab.transforms import torch_engine
from stainlab.transforms.augment import augment
from stainlab.transforms.checks import check_stains
from synth import he_image

ENGINES = [("reinhard", {}), ("reinhard", {"mask": True}), ("macenko", {}), ("macenko", {"rescale": False}),
           ("ruifrok", {}), ("ruifrok", {"channel": "H"}), ("colorbalance", {})]


def to_tensor(images, dtype=torch.float32):
    u8 = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return u8 if dtype == torch.uint8 else u8.to(dtype) / 255


def to_rgb8(batch):
    return [(im.detach().permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy() for im in batch]


@pytest.fixture(scope="module")
def images(he_source, ihc_image):
    """Different images: pale H&E with glass, a strong H&E, real IHC (its own colour balance)."""
    return [he_source[:96, :128], he_image((96, 128), seed=7, scale=(1.3, 0.8)),
            np.ascontiguousarray(ihc_image[:96, :128])]


@pytest.fixture(scope="module")
def fitted(he_reference):
    return {(name, tuple(kw.items())): stainlab.load(name, **kw).fit(he_reference) for name, kw in ENGINES}


@pytest.mark.parametrize("name, kw", ENGINES)
def test_engine_agrees_with_the_numpy_exact_path_and_keeps_statistics_per_image(fitted, images, name, kw):
    t = fitted[name, tuple(kw.items())]
    out = t(to_tensor(images), engine="torch")
    for i, (got, image) in enumerate(zip(to_rgb8(out), images)):
        exact = t.transform(image, exact=True)
        assert ciede2000(got, exact) < 0.05, (name, kw, i)           # the bound is 0.5
        assert np.abs(got.astype(int) - exact).max() <= 1
        alone = t(to_tensor([image]), engine="torch")               # each image's statistics are its own
        torch.testing.assert_close(out[i:i + 1], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, kw", [("reinhard", {}), ("reinhard", {"mask": True}), ("macenko", {}), ("ruifrok", {})])
def test_engine_gradients_pass_gradcheck(he_reference, name, kw):
    """float64, 2 images of 6x6 colours away from the clip points, the sRGB joints and the tissue
    threshold, all distinct (percentiles interpolate between two order statistics)."""
    t = stainlab.load(name, **kw).fit(he_reference)
    x = (0.3 + 0.5 * torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    if kw.get("mask"):
        x[:, :, :2] = 0.9 + 0.05 * x[:, :, :2]                      # background rows, kept as they are
    assert torch.autograd.gradcheck(t, (x.requires_grad_(),), eps=1e-6, atol=1e-5)


def test_augment_gradients_pass_gradcheck_with_fixed_draws():
    basis = check_stains("augment: stains", "hed")
    alpha, beta = torch_engine.augment_draws(2, 3, 0.2, 0.2, torch.Generator().manual_seed(1))
    x = 0.3 + 0.5 * torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: torch_engine.augment(v, alpha, beta, basis), (x.requires_grad_(),))


def test_augment_on_the_engine_is_reproducible_and_keeps_glass(images):
    batch = to_tensor(images)
    batch[:, :, :4] = 1.0                                              # white glass rows
    first, again = augment(batch, 0.2, 0.2, seed=5), augment(batch, 0.2, 0.2, seed=5)
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.equal(first, augment(batch, 0.2, 0.2, seed=6))
    assert torch.equal(first[:, :, :4], batch[:, :, :4])
    same = torch_engine.augment(batch, torch.ones(3, 3), torch.zeros(3, 3), check_stains("augment: stains", "hed"))
    torch.testing.assert_close(same, batch, atol=1e-5, rtol=0)        # no jitter: the OD round trip
    augmenter = stainlab.load("augment", sigma1=0.2, sigma2=0.2, seed=4)
    seeded = [stainlab.load("augment", sigma1=0.2, sigma2=0.2, seed=4)(batch) for _ in range(2)]
    torch.testing.assert_close(seeded[0], seeded[1], atol=0, rtol=0)
    assert not torch.equal(augmenter(batch), augmenter(batch))        # each call draws anew
    grad = batch.clone().requires_grad_()
    augmenter(grad).sum().backward()
    assert torch.isfinite(grad.grad).all()


def test_images_without_tissue_pass_through_with_one_warning(fitted, images):
    white = np.full_like(images[0], 255)
    flat = np.full_like(images[0], 120)                              # tissue-dark, but one colour
    batch = to_tensor([images[0], white, flat, images[1]]).requires_grad_()
    for name, kw in [("macenko", {}), ("reinhard", {}), ("reinhard", {"mask": True}), ("ruifrok", {})]:
        t = fitted[name, tuple(kw.items())]
        with pytest.warns(NoTissueWarning, match=r"2 of 4 images of the batch .* passed through unchanged"):
            out = t(batch)
        assert torch.equal(out[1:3], batch[1:3])
        torch.testing.assert_close(out[[0, 3]], t(to_tensor([images[0], images[1]]), engine="torch"),
                                   atol=1e-5, rtol=0)
        (grad,) = torch.autograd.grad(out.sum(), batch)
        assert torch.isfinite(grad).all() and torch.equal(grad[1:3], torch.ones_like(grad[1:3]))


def test_inseparable_stains_pass_through(fitted):
    one_stain = he_image((64, 64), seed=2, scale=(1.0, 0.0))        # haematoxylin only
    with pytest.warns(NoTissueWarning, match="1 of 1 images"):
        out = fitted["macenko", ()](to_tensor([one_stain]), engine="torch")
    assert torch.equal(out, to_tensor([one_stain]))


def test_bad_input_is_refused_clearly(fitted, images):
    t = fitted["reinhard", ()]
    batch = to_tensor(images)
    bad = batch.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(InputError, match="1 NaN or infinite"):
        t(bad)
    with pytest.raises(InputError, match=r"outside the declared range \[0, 1\]"):
        t(batch * 2)
    with pytest.raises(InputError, match=r"channels-last .*permute\(0, 3, 1, 2\)"):
        t(batch.permute(0, 2, 3, 1))
    with pytest.raises(InputError, match="meta tensor"):
        t(torch.empty(1, 3, 8, 8, device="meta"))
    with pytest.raises(InputError, match="empty images"):
        t(torch.zeros(1, 3, 0, 8))
    empty = t(batch[:0])
    assert empty.shape == (0, 3, 96, 128) and empty.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.uint8])
def test_dtypes_and_value_ranges_are_kept(fitted, images, dtype):
    t = fitted["macenko", ()]
    expected = t(to_tensor(images))
    out = t(to_tensor(images, dtype))
    assert out.dtype == dtype
    step = {torch.float16: 2e-3, torch.bfloat16: 8e-3, torch.float64: 1e-4, torch.uint8: 1.0}[dtype]
    got = out.double() / 255 if dtype == torch.uint8 else out.double()
    torch.testing.assert_close(got, expected.double(), atol=step, rtol=0)
    signed = t(to_tensor(images) * 2 - 1, value_range=(-1, 1))
    torch.testing.assert_close((signed + 1) / 2, expected, atol=1e-5, rtol=0)


def test_numpy_engine_is_the_old_path(fitted, images):
    t = fitted["reinhard", ()]
    out = t(to_tensor(images, torch.uint8), engine="numpy")
    for got, image in zip(out, images):
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), t(image))


@pytest.mark.parametrize("name, kw", [("macenko", {}), ("ruifrok", {})])
def test_stain_images_numpy_and_torch(fitted, images, name, kw):
    t = fitted[name, tuple(kw.items())]
    image = images[0]
    separated = t.stain_images(image)
    np.testing.assert_array_equal(separated.normalized, t.transform(image, exact=True))
    assert separated.hematoxylin.dtype == np.uint8 and separated.concentrations.shape == (*image.shape[:2], 2)
    assert not separated.passed
    # the two stains alone add up, in optical density, to the normalized image (Ruifrok: plus the residual)
    batch = to_tensor([image, np.full_like(image, 255)])
    with pytest.warns(NoTissueWarning, match="1 of 2"):
        on_torch = t.stain_images(batch)
    assert on_torch.concentrations.shape == (2, 2, *image.shape[:2]) and on_torch.passed.tolist() == [False, True]
    np.testing.assert_allclose(on_torch.concentrations[0].permute(1, 2, 0).numpy(), separated.concentrations,
                               atol=1e-4, rtol=0)
    for field in ("normalized", "hematoxylin", "eosin"):
        got = to_rgb8(getattr(on_torch, field)[:1])[0].astype(int)
        assert np.abs(got - getattr(separated, field)).max() <= 1, field
    assert torch.equal(on_torch.hematoxylin[1], torch.ones_like(on_torch.hematoxylin[1]))
    single = t.stain_images(to_tensor([image], torch.uint8)[0])
    assert single.normalized.dtype == torch.uint8 and single.concentrations.shape == (2, *image.shape[:2])


def test_vahadane_has_no_torch_engine(he_reference, images):
    t = stainlab.load("vahadane").fit(he_reference[:64, :64])
    with pytest.raises(InputError, match="vahadane: no torch engine"):
        t.stain_images(to_tensor(images[:1]))
    out = t(to_tensor(images[:1], torch.uint8))                        # the NumPy path, as before
    np.testing.assert_array_equal(out[0].permute(1, 2, 0).numpy(), t(images[0]))


def test_auto_takes_the_engine_for_gradients_and_accelerators_and_the_compiled_path_on_the_cpu(fitted, images,
                                                                                                 monkeypatch):
    """``engine="auto"``: a CPU batch without gradient goes through the compiled uint8 path (the fastest
    there); a batch that needs a gradient through the torch engine; both within a level of each other."""
    t = fitted["macenko", ()]
    batch = to_tensor(images)
    calls = []
    monkeypatch.setattr(type(t), "_torch", lambda self, x: calls.append(x.shape) or x)
    t(batch)
    assert calls == []
    t(batch.clone().requires_grad_())
    assert len(calls) == 1
    monkeypatch.undo()
    with torch.no_grad():
        auto, engine = t(batch), t(batch, engine="torch")
    torch.testing.assert_close(auto, engine, atol=1.01 / 255, rtol=0)
