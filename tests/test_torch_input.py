"""Torch tensors at the face: declared value ranges, uint8 tensors, fit and augment on tensors, and
clear refusals (channels-last, NaN/inf, out of range, gradients on the NumPy path, meta tensors) instead
of silent fixes. Macenko takes tensors through its torch engine (tests/test_torch_engine.py) unless
``engine="numpy"`` is asked for; both paths share the conversions and refusals tested here."""

import numpy as np
import pytest
import torch

import stainlab
from stainlab.errors import InputError
from stainlab.transforms.augment import augment


def to_tensor(images, dtype=torch.float32, value_range=(0, 1)):
    """uint8 HxWx3 images -> an (N,3,H,W) tensor in ``value_range`` (uint8: as is)."""
    u8 = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    if dtype == torch.uint8:
        return u8.contiguous()
    low, high = value_range
    return (u8.double() * ((high - low) / 255) + low).to(dtype)


@pytest.fixture(scope="module")
def macenko(he_reference):
    return stainlab.load("macenko").fit(he_reference)


@pytest.fixture(scope="module")
def sources(he_source, ihc_image):
    return [he_source[:40, :56], np.ascontiguousarray(ihc_image[:40, :56])]


@pytest.mark.parametrize("value_range", [(-1, 1), (0, 255), (-0.5, 2.0)])
def test_declared_range_gives_the_same_pixels_and_keeps_the_range(macenko, sources, value_range):
    unit = macenko(to_tensor(sources), engine="torch")
    batch = to_tensor(sources, value_range=value_range)
    out = macenko(batch, value_range=value_range, engine="torch")
    assert out.shape == batch.shape and out.dtype == batch.dtype and out.device == batch.device
    low, high = value_range
    torch.testing.assert_close((out - low) / (high - low), unit, atol=1e-5, rtol=0)  # float32 engine
    assert out.min() >= low and out.max() <= high


def test_uint8_tensor_equals_the_numpy_path_exactly(macenko, sources):
    batch = to_tensor(sources, torch.uint8)
    out = macenko(batch, engine="numpy")
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    for got, image in zip(out, sources):
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), macenko(image))
    np.testing.assert_array_equal(macenko(batch[0], engine="numpy").numpy(), out[0].numpy())
    engine = macenko(batch, engine="torch")                     # the torch engine: the exact path, rounded
    assert engine.dtype == torch.uint8 and engine.shape == batch.shape
    for got, image in zip(engine, sources):
        exact = macenko.transform(image, exact=True).astype(int)
        assert np.abs(got.permute(1, 2, 0).numpy().astype(int) - exact).max() <= 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_its_dtype(macenko, sources, dtype):
    for engine in ("torch", "numpy"):
        out = macenko(to_tensor(sources, dtype), engine=engine)
        assert out.dtype == dtype
        expected = to_tensor([macenko.transform(im, exact=engine == "torch") for im in sources])
        torch.testing.assert_close(out.float(), expected, atol=1.5 / 255, rtol=0)


def test_channels_last_is_refused_naming_the_layout(macenko, sources):
    batch = to_tensor(sources)
    with pytest.raises(InputError, match=r"channels-last .*\(N, 3, H, W\).*permute\(0, 3, 1, 2\)"):
        macenko(batch.permute(0, 2, 3, 1))
    with pytest.raises(InputError, match=r"channels-last .*permute\(2, 0, 1\)"):
        macenko(batch[0].permute(1, 2, 0))
    with pytest.raises(InputError, match="channels-last"):
        macenko.fit(batch.permute(0, 2, 3, 1))
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        macenko(batch[:, :2])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_are_refused(macenko, sources, bad):
    batch = to_tensor(sources)
    batch[1, 2, 5, 7] = bad
    for engine in ("auto", "numpy"):
        with pytest.raises(InputError, match="1 NaN or infinite"):
            macenko(batch, engine=engine)
    with pytest.raises(InputError, match="NaN or infinite"):
        stainlab.load("macenko").fit(batch)
    with pytest.raises(InputError, match="NaN or infinite"):
        augment(batch, seed=0)


def test_values_outside_the_declared_range_are_refused_not_clamped(macenko, sources):
    signed = to_tensor(sources, value_range=(-1, 1))
    with pytest.raises(InputError, match=r"outside the declared range \[0, 1\].*value_range="):
        macenko(signed)                                         # a [-1, 1] batch is no longer read silently
    with pytest.raises(InputError, match=r"outside the declared range \[0, 1\]"):
        macenko(to_tensor(sources, value_range=(0, 255)))
    with pytest.raises(InputError, match=r"outside the declared range \[-1, 1\]"):
        macenko(signed * 1.01, value_range=(-1, 1))
    with pytest.raises(InputError, match="outside the declared range"):
        stainlab.load("macenko").fit(signed)
    unit = to_tensor(sources, torch.float64)
    unit[0, 0, 0, 0], unit[0, 1, 0, 0] = 1 + 1e-7, -1e-7        # float rounding within the slack
    out = macenko(unit)
    assert out.max() <= 1 and out.min() >= 0


def test_bad_dtypes_and_ranges_are_refused(macenko, sources, he_reference):
    batch = to_tensor(sources, torch.uint8)
    with pytest.raises(InputError, match="float or uint8 tensor, got dtype torch.int64"):
        macenko(batch.long())
    with pytest.raises(InputError, match="uint8 tensors are 0-255"):
        macenko(batch, value_range=(0, 1))
    np.testing.assert_array_equal(macenko(batch, value_range=(0, 255)).numpy(), macenko(batch).numpy())
    for value_range in [(1, 0), (0, float("inf")), (0,), "0-1"]:
        with pytest.raises(InputError, match="value_range must be"):
            macenko(to_tensor(sources), value_range=value_range)
    with pytest.raises(InputError, match="value_range applies to torch tensors"):
        macenko(he_reference, value_range=(0, 255))
    with pytest.raises(InputError, match="value_range applies to torch tensors"):
        stainlab.load("macenko").fit(he_reference, value_range=(0, 255))


def test_empty_batch_maps_to_an_empty_batch(macenko, sources):
    for dtype in (torch.float32, torch.uint8):
        empty = to_tensor(sources, dtype)[:0]
        out = macenko(empty)
        assert out.shape == empty.shape == (0, 3, 40, 56) and out.dtype == dtype
    assert augment(to_tensor(sources)[:0], seed=0).shape == (0, 3, 40, 56)
    with pytest.raises(InputError, match="reference: no images given"):
        stainlab.load("macenko").fit(to_tensor(sources)[:0])
    with pytest.raises(InputError, match="empty images"):
        macenko(torch.zeros(2, 3, 0, 5))


def test_gradients_are_refused_on_the_numpy_path_not_silently_cut(macenko, sources, he_reference):
    batch = to_tensor(sources).requires_grad_()
    with pytest.raises(InputError, match=r"requires grad.*engine='numpy'.*no gradient.*detach\(\).*no_grad"):
        macenko(batch, engine="numpy")
    histogram = stainlab.load("histogram").fit(he_reference)
    with pytest.raises(InputError, match=r"histogram has no torch engine \(methods with one: augment, "
                                         r"colorbalance, macenko, reinhard, ruifrok\).*no gradient"):
        histogram(batch)
    with pytest.raises(InputError, match="requires grad"):
        stainlab.load("macenko").fit(batch)
    expected = macenko(batch.detach(), engine="numpy")
    with torch.no_grad():                                       # gradients switched off: taken as is
        torch.testing.assert_close(macenko(batch, engine="numpy"), expected, atol=0, rtol=0)
    assert not expected.requires_grad
    assert macenko(batch).requires_grad                         # the torch engine keeps the graph
    with pytest.raises(InputError, match="engine must be one of auto, torch, numpy"):
        macenko(batch, engine="cuda")
    with pytest.raises(InputError, match="histogram has no torch engine"):
        histogram(batch.detach(), engine="torch")


def test_meta_tensor_is_refused(macenko):
    for engine in ("auto", "numpy"):
        with pytest.raises(InputError, match="meta tensor"):
            macenko(torch.empty(1, 3, 8, 8, device="meta"), engine=engine)


def test_output_goes_back_to_the_input_device(macenko, sources):
    """On CPU here; a CUDA batch takes the same path and comes back on its device."""
    batch = to_tensor(sources)
    assert macenko(batch).device == batch.device


def test_fit_on_a_tensor_equals_fit_on_the_numpy_images(he_reference, ihc_other, sources):
    images = [he_reference[:96, :96], np.ascontiguousarray(ihc_other[:96, :96])]
    for name in ("macenko", "reinhard"):
        on_numpy = stainlab.load(name).fit(images)
        fits = [stainlab.load(name).fit(to_tensor(images)),
                stainlab.load(name).fit(to_tensor(images, value_range=(-1, 1)), value_range=(-1, 1)),
                stainlab.load(name).fit(to_tensor(images, torch.uint8)),
                stainlab.load(name).fit([to_tensor(images)[0], images[1]])]
        for on_tensor in fits:
            for key, value in on_numpy._get_state().items():
                np.testing.assert_allclose(on_tensor._get_state()[key], value, rtol=0, atol=1e-9)
            for image in sources:
                np.testing.assert_array_equal(on_tensor(image), on_numpy(image))
    single = stainlab.load("macenko").fit(to_tensor(images[:1])[0])
    np.testing.assert_allclose(single.stain_matrix, stainlab.load("macenko").fit(images[0]).stain_matrix,
                               rtol=0, atol=1e-9)


def test_augment_on_a_tensor_with_the_numpy_engine_replays_the_numpy_draws(sources):
    rng = np.random.default_rng(3)
    expected = [augment(image, 0.2, 0.2, seed=rng) for image in sources]
    out = augment(to_tensor(sources, torch.uint8), 0.2, 0.2, seed=3, engine="numpy")
    for got, image in zip(out, expected):
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), image)
    signed = augment(to_tensor(sources, value_range=(-1, 1)), 0.2, 0.2, seed=3, value_range=(-1, 1),
                     engine="numpy")
    torch.testing.assert_close((signed + 1) / 2, to_tensor(expected), atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="channels-last"):
        augment(to_tensor(sources).permute(0, 2, 3, 1))


def test_nct_fits_on_a_declared_range_tensor_like_on_the_numpy_image(he_reference):
    reference = np.ascontiguousarray(he_reference[:64, :64])
    on_numpy = stainlab.load("nct", features="random").fit(reference)
    on_tensor = stainlab.load("nct", features="random").fit(to_tensor([reference], value_range=(-1, 1))[0],
                                                            value_range=(-1, 1))
    np.testing.assert_array_equal(on_tensor._reference.image, on_numpy._reference.image)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_the_compiled_float32_conversion_gives_the_bytes_and_floats_of_the_torch_one(value_range):
    """A contiguous float32 CPU batch is converted in one compiled pass each way; the bytes (rounding
    half to even at exact halves included) and the floats back are the torch path's, and a value out of
    range or not finite still gets the torch path's refusal."""
    from stainlab.io import arrays

    low, high = value_range
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(low, high, (3, 3, 37, 53)).astype(np.float32))
    x[0, 0, 0, :4] = torch.tensor([low, high, low + (high - low) * 0.5 / 255, low + (high - low) * 1.5 / 255])
    images, token = arrays.torch_batch_to_rgb8(x, value_range)
    want = arrays._float_to_uint8(x, low, high, "x").permute(0, 2, 3, 1).numpy()
    assert np.array_equal(np.stack(images), want)
    back = arrays.rgb8_to_torch_batch(images, token)
    expected = torch.from_numpy(want).permute(0, 3, 1, 2).float().mul_((high - low) / 255)
    assert torch.equal(back, expected.add_(low) if low else expected)
    x[2, 1, 5, 5] = high + (high - low)  # far outside
    with pytest.raises(InputError, match="outside the declared range"):
        arrays.torch_batch_to_rgb8(x, value_range)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_a_float32_batch_mapped_in_threads_equals_the_batch_path(macenko, sources, value_range):
    """Each thread converts, maps and converts back its own images: the same floats as converting the
    whole batch each way, and the same refusals."""
    from stainlab.io import arrays

    batch = to_tensor(sources * 3, value_range=value_range)
    with torch.no_grad():
        threaded = arrays.map_rgb8(macenko.transform, batch, value_range, threads=2)
        whole = arrays.map_rgb8(macenko.transform, batch, value_range, threads=1)
    assert threaded.dtype == torch.float32 and torch.equal(threaded, whole)
    batch[4, 2, 3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        arrays.map_rgb8(macenko.transform, batch, value_range, threads=2)
