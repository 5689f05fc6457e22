"""StainNet: the published checkpoint layout, a hand computation of the network, and the learned
transform behind the shared face (``stainlab.load("stainnet:PATH")``, LUT baking, JSON round trip)."""

import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from synth import he_image

import stainlab
from stainlab.errors import InputError
from stainlab.metrics.pixel import ciede2000
from stainlab.nets import StainNet, WeightsNotFoundError, stainnet

# 3 -> 32 -> 32 -> 3 with biases: 3*32+32 + 32*32+32 + 32*3+3
PUBLISHED_PARAMETERS = 128 + 1056 + 99
PUBLISHED_KEYS = ["rgb_trans.0.weight", "rgb_trans.0.bias", "rgb_trans.2.weight", "rgb_trans.2.bias",
                  "rgb_trans.4.weight", "rgb_trans.4.bias"]


def published_layout(seed=0, channels=32, layers=3):
    """Random weights in the authors' layout, built without our module: a mild colour map whose
    output stays mostly inside [0, 1], so clipping does not hide differences."""
    g = torch.Generator().manual_seed(seed)
    widths = [3] + [channels] * (layers - 1) + [3]
    state = {}
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        gain = 1.0 if index == 0 else 0.5 / np.sqrt(width_in)
        state[f"rgb_trans.{2 * index}.weight"] = torch.randn(width_out, width_in, 1, 1, generator=g) * gain
        state[f"rgb_trans.{2 * index}.bias"] = torch.randn(width_out, generator=g) * 0.1
    return state


def by_hand(state, image):
    """The network in NumPy: scale to [-1, 1], matrix products with ReLU between, map back to [0, 1]."""
    x = image.reshape(-1, 3).astype(np.float64) / 255.0 * 2.0 - 1.0
    indices = sorted({int(key.split(".")[1]) for key in state})
    for position, index in enumerate(indices):
        weight = state[f"rgb_trans.{index}.weight"].double().numpy()[:, :, 0, 0]
        x = x @ weight.T + state[f"rgb_trans.{index}.bias"].double().numpy()
        if position < len(indices) - 1:
            x = np.maximum(x, 0.0)
    return (x * 0.5 + 0.5).reshape(image.shape)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A .pth saved with torch.save as the authors did (a plain state dict)."""
    path = tmp_path_factory.mktemp("stainnet") / "camelyon16_test_layer3_ch32.pth"
    torch.save(published_layout(), path)
    return path


@pytest.fixture(scope="module")
def image():
    return he_image((96, 128), seed=5, scale=(0.7, 1.3))


def test_published_layout_loads_with_its_keys_and_parameter_count(checkpoint):
    net = stainnet(checkpoint)
    assert list(net.state_dict()) == PUBLISHED_KEYS
    assert sum(p.numel() for p in net.parameters()) == PUBLISHED_PARAMETERS == 1283
    assert not net.training
    for key, value in torch.load(checkpoint, weights_only=True).items():
        assert torch.equal(net.state_dict()[key], value)


def test_output_equals_a_hand_computation(checkpoint, image):
    net = stainnet(checkpoint)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0 * 2 - 1
    with torch.no_grad():
        y = net(x)[0].permute(1, 2, 0).numpy() * 0.5 + 0.5
    expected = by_hand(torch.load(checkpoint, weights_only=True), image)
    assert np.abs(y - expected).max() < 1e-5
    assert expected.std() > 0.05 and ((expected < 0) | (expected > 1)).mean() < 0.05  # a real, mostly unclipped map


def test_size_is_read_from_the_file(tmp_path):
    path = tmp_path / "student.safetensors"
    save_file(published_layout(seed=1, channels=16, layers=4), str(path))
    net = stainnet(path)
    assert len([m for m in net.rgb_trans if isinstance(m, torch.nn.Conv2d)]) == 4
    assert net.rgb_trans[0].out_channels == 16
    assert sum(p.numel() for p in net.parameters()) == (3 * 16 + 16) + 2 * (16 * 16 + 16) + (16 * 3 + 3)


def test_foreign_or_misshapen_files_are_refused_by_name(tmp_path):
    spatial = published_layout()
    spatial["rgb_trans.2.weight"] = torch.zeros(32, 32, 3, 3)  # not per-pixel: cannot be a StainNet
    torch.save(spatial, tmp_path / "spatial.pth")
    with pytest.raises(InputError, match="spatial.pth.*rgb_trans.2.weight"):
        stainnet(tmp_path / "spatial.pth")
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, tmp_path / "foreign.pth")
    with pytest.raises(InputError, match="not a StainNet"):
        stainnet(tmp_path / "foreign.pth")


def test_random_weights_are_seeded():
    a, b, c = stainnet("random", seed=3), stainnet("random", seed=3), stainnet("random", seed=4)
    colors = np.array([[255.0, 255.0, 255.0], [120.0, 60.0, 150.0]])
    assert np.array_equal(a.map_colors(colors), b.map_colors(colors))
    assert not np.allclose(a.map_colors(colors), c.map_colors(colors))
    assert isinstance(a, StainNet)


def test_load_kind_and_path_runs_the_network_per_pixel(checkpoint, image):
    t = stainlab.load(f"stainnet:{checkpoint}")
    assert t.name == "stainnet" and not t.requires_fit and t.per_pixel
    expected = np.clip(np.rint(by_hand(torch.load(checkpoint, weights_only=True), image) * 255), 0, 255)
    exact = t.transform(image, exact=True)
    assert np.array_equal(exact, expected.astype(np.uint8))
    assert np.abs(exact.astype(int) - image).mean() > 10  # the map really changes colours
    assert ciede2000(t(image), exact) < 0.5  # LUT path: once per colour cell


def test_fit_ignores_the_reference(checkpoint, image, he_reference):
    t = stainlab.load(f"stainnet:{checkpoint}")
    before = t(image)
    assert np.array_equal(t.fit(he_reference)(image), before)


def test_json_round_trip_is_identical_from_any_directory(checkpoint, image, tmp_path, monkeypatch):
    t = stainlab.load(f"stainnet:{checkpoint}")
    saved = tmp_path / "stainnet.json"
    t.save(saved)
    assert json.loads(saved.read_text())["params"]["model"] == str(checkpoint.resolve())
    monkeypatch.chdir(tmp_path)
    again = stainlab.load(saved)
    assert np.array_equal(again(image), t(image))
    assert np.array_equal(again.transform(image, exact=True), t.transform(image, exact=True))


def test_missing_weight_file_is_named(checkpoint, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="absent_layer3_ch32.pth"):
        stainlab.load(f"stainnet:{tmp_path / 'absent_layer3_ch32.pth'}")
    moved = tmp_path / "moved.pth"
    moved.write_bytes(checkpoint.read_bytes())
    saved = tmp_path / "moved.json"
    stainlab.load(f"stainnet:{moved}").save(saved)
    moved.unlink()
    with pytest.raises(WeightsNotFoundError, match="moved.pth"):
        stainlab.load(saved)
    with pytest.raises(InputError, match="stainnet:PATH"):
        stainlab.load("stainnet")


def test_cli_normalizes_with_a_stainnet_checkpoint(checkpoint, tmp_path):
    from PIL import Image

    from stainlab.cli import main

    image = he_image(seed=5)
    Image.fromarray(image).save(tmp_path / "in.png")
    args = ["normalize", str(tmp_path / "in.png"), "-m", f"stainnet:{checkpoint}", "-o", str(tmp_path / "out")]
    assert main(args) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "in.png"))
    np.testing.assert_array_equal(written, stainlab.load(f"stainnet:{checkpoint}")(image))
