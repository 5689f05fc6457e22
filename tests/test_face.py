"""The shared face of every registered method: uint8 in and out, inputs untouched, save/load
round-trips, torch batches, and clear errors for bad names, files and arrays.

Methods are collected from the registry and kept when their module is present, so the suite runs
while some methods are still being written; every method that exists is held to the same face.
"""

import json

import numpy as np
import pytest
import torch

import stainlab
from stainlab.errors import InputError, NotFittedError
from stainlab.transforms.registry import learned_kinds, names
from synth import he_image


AVAILABLE = sorted(names())
SHAPE = (48, 72)

# The real IHC crop is all tissue: background normalization says so and uses its brightest pixels.
pytestmark = pytest.mark.filterwarnings("ignore:background.*has no background:stainlab.errors.NoBackgroundWarning")


@pytest.fixture(scope="module")
def fitted(he_reference):
    """``fitted(name)``: the method fitted once on the synthetic H&E reference (methods whose defaults
    read a weight file get their offline features, ``features="random"``)."""
    cache = {}

    def get(name):
        if name not in cache:
            offline = {"features": "random"} if stainlab.load(name).needs_weights else {}
            cache[name] = stainlab.load(name, **offline).fit(he_reference)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def images(ihc_image):
    """A synthetic and a real image of the same odd shape."""
    return [he_image(SHAPE, seed=7, scale=(0.8, 1.2)), np.ascontiguousarray(ihc_image[:SHAPE[0], :SHAPE[1]])]


def test_methods_lists_every_name_with_a_description():
    listed = stainlab.methods()
    assert list(listed) == names() + [f"{kind}:PATH" for kind in learned_kinds()]
    assert {"reinhard", "macenko", "vahadane", "ruifrok", "histogram", "colorbalance", "background",
            "grayscale"} <= set(listed)
    assert all(isinstance(line, str) and len(line) > 10 for line in listed.values())


@pytest.mark.parametrize("name", AVAILABLE)
def test_uint8_in_uint8_out_and_input_untouched(name, fitted, images, ihc_image):
    t = fitted(name)
    strided = ihc_image[::3, ::2]  # a non-contiguous view
    for image in images + [strided]:
        before = image.copy()
        out = t(image)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert not np.shares_memory(out, image)
        np.testing.assert_array_equal(image, before)


def twin(name, fitted):
    """The fitted method, or for a random one a fresh seeded instance (whose draws a twin replays)."""
    t = stainlab.load(name)
    return fitted(name) if t.deterministic else stainlab.load(name, seed=5)


@pytest.mark.parametrize("name", AVAILABLE)
def test_save_and_load_give_identical_output(name, fitted, images, tmp_path):
    t = twin(name, fitted)
    path = tmp_path / f"{name}.json"
    t.save(path)
    for spec in (path, str(path)):
        again = stainlab.load(spec)
        assert type(again) is type(t)
        assert json.loads(json.dumps(again.to_dict())) == json.loads(path.read_text())
        replay = t if t.deterministic else twin(name, fitted)
        for image in images:
            np.testing.assert_array_equal(again(image), replay(image))


@pytest.mark.parametrize("name", AVAILABLE)
def test_unfitted_save_loads_unfitted(name, images, tmp_path):
    t = stainlab.load(name)
    if not t.requires_fit:
        pytest.skip(f"{name} is reference-free")
    path = tmp_path / "unfitted.json"
    t.save(path)
    with pytest.raises(NotFittedError):
        stainlab.load(path)(images[0])


# (dtype, declared value range): the default [0, 1], the networks' [-1, 1], and uint8 tensors (0-255).
CONVENTIONS = [(torch.float32, None), (torch.float64, None), (torch.float32, (-1, 1)), (torch.uint8, None)]


@pytest.mark.parametrize("dtype, value_range", CONVENTIONS, ids=["float32", "float64", "signed", "uint8"])
@pytest.mark.parametrize("name", AVAILABLE)
def test_torch_batch_matches_numpy(name, dtype, value_range, fitted, images):
    t, replay = twin(name, fitted), twin(name, fitted)
    low, high = value_range or (0, 255 if dtype == torch.uint8 else 1)
    exact = dtype == torch.uint8
    atol = 0 if exact else (high - low) * (1 / 255 + 1e-6)

    def as_tensor(arrays):
        u8 = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return u8 if exact else (u8.double() * (high - low) / 255 + low).to(dtype)

    batch = as_tensor(images)
    out = t(batch, value_range=value_range, engine="numpy")
    assert out.shape == batch.shape and out.dtype == dtype
    torch.testing.assert_close(out, as_tensor([replay(image) for image in images]), atol=atol, rtol=0)
    if not t.deterministic:
        return
    single = t(batch[1], value_range=value_range, engine="numpy")
    assert single.shape == batch[1].shape
    torch.testing.assert_close(single, out[1], atol=atol, rtol=0)
    if getattr(t, "_torch", None) is None:
        return
    # the torch engine computes the exact path: within a level of it
    engine = t(batch, value_range=value_range, engine="torch")
    assert engine.shape == batch.shape and engine.dtype == dtype
    expected = as_tensor([t.transform(image, exact=True) for image in images])
    torch.testing.assert_close(engine, expected, atol=(high - low) * (1 / 255 + 1e-5), rtol=0)


@pytest.mark.parametrize("name", AVAILABLE)
def test_bad_arrays_are_refused(name, fitted, he_reference):
    t = fitted(name)
    bad = {
        "float": he_reference.astype(np.float32),
        "16-bit": he_reference.astype(np.uint16),
        "grey": he_reference[..., 0],
        "rgba": np.dstack([he_reference, np.full(he_reference.shape[:2], 255, np.uint8)]),
        "empty": np.zeros((0, 5, 3), np.uint8),
    }
    for what, array in bad.items():
        with pytest.raises(InputError):
            t(array)
        with pytest.raises(InputError):
            stainlab.load(name).fit(array)


def test_unknown_method_lists_known_names():
    with pytest.raises(InputError, match="nonsense") as info:
        stainlab.load("nonsense")
    for name in names():
        assert name in str(info.value)


def test_missing_and_corrupt_files_name_the_file(fitted, tmp_path):
    good = tmp_path / "good.json"
    fitted("reinhard").save(good)
    text = good.read_text()
    cases = {
        "missing.json": None,
        "truncated.json": text[: len(text) // 2],
        "not-json.json": "this is not JSON",
        "foreign.json": json.dumps({"weights": [1, 2, 3]}),
        "unknown-method.json": text.replace('"reinhard"', '"nonsense"'),
        "newer.json": text.replace('"version": 1', '"version": 99'),
    }
    for filename, content in cases.items():
        path = tmp_path / filename
        if content is not None:
            path.write_text(content)
        with pytest.raises(InputError, match=filename):
            stainlab.load(path)


@pytest.mark.parametrize("name", AVAILABLE)
def test_corrupt_state_names_the_file(name, fitted, tmp_path):
    data = fitted(name).to_dict()
    if not data["state"]:
        pytest.skip(f"{name} has no fitted state")
    data["state"] = {key: "garbage" for key in data["state"]}
    path = tmp_path / "corrupt.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="corrupt.json"):
        stainlab.load(path)


def test_normalizers_are_the_deterministic_methods():
    assert "augment" in names() and "augment" not in stainlab.transforms.normalizers()
    assert set(stainlab.transforms.normalizers()) == {n for n in names() if stainlab.load(n).deterministic
                                                      and not stainlab.load(n).needs_weights}
