"""VGG16/VGG19 feature extractors: TorchVision's key layout, conv-part parameter counts, stage shapes,
loading a published-layout file (classifier keys ignored), missing-file errors, seeded random weights."""

import numpy as np
import pytest
import torch

from stainlab.errors import InputError
from stainlab.nets import WeightsNotFoundError, vgg16, vgg19
from stainlab.nets.vgg import VGG16_FILE, VGG19_FILE

# TorchVision's ``features`` indices of the convolutions (ReLU after each, max-pools between blocks)
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG19_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
WIDTHS16 = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
WIDTHS19 = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]


@pytest.fixture(scope="module")
def net16():
    return vgg16(weights="random", seed=0)


@pytest.fixture(scope="module")
def net19():
    return vgg19(weights="random", seed=0)


@pytest.mark.parametrize("which, convs, widths, parameters", [
    ("net16", VGG16_CONVS, WIDTHS16, 14_714_688), ("net19", VGG19_CONVS, WIDTHS19, 20_024_384)])
def test_keys_shapes_and_parameter_count(which, convs, widths, parameters, request):
    net = request.getfixturevalue(which)
    expected = {}
    for index, width, width_in in zip(convs, widths, [3] + widths[:-1]):
        expected[f"features.{index}.weight"] = (width, width_in, 3, 3)
        expected[f"features.{index}.bias"] = (width,)
    assert {key: tuple(value.shape) for key, value in net.state_dict().items()} == expected
    assert sum(p.numel() for p in net.parameters()) == parameters
    assert not net.training


def test_stage_shapes_for_a_64px_input(net16, net19, batch):
    pools = {f"pool{b}": (2, width, 64 >> b, 64 >> b) for b, width in enumerate([64, 128, 256, 512, 512], 1)}
    got16 = net16.features_at(batch, list(pools) + ["relu3_3"])
    assert {name: tuple(x.shape) for name, x in got16.items()} == {**pools, "relu3_3": (2, 256, 16, 16)}
    # paper 001's stages on VGG19: relu{b}_1 at the input resolution of block b
    relus = {f"relu{b}_1": (2, width, 64 >> (b - 1), 64 >> (b - 1))
             for b, width in enumerate([64, 128, 256, 512, 512], 1)}
    got19 = net19.features_at(batch, list(relus) + ["relu3_4"])
    assert {name: tuple(x.shape) for name, x in got19.items()} == {**relus, "relu3_4": (2, 256, 16, 16)}
    assert all((x >= 0).all() for x in got19.values())
    assert torch.equal(net16(batch), got16["pool5"])


def test_imagenet_normalisation_is_inside(net16, batch):
    x = (batch - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        by_hand = torch.relu(net16.features[0](x))
        got = net16.features_at(batch, ["relu1_1"])["relu1_1"]
    assert torch.allclose(got, by_hand, atol=1e-6)


def test_unknown_stage_is_named(net16, batch):
    with pytest.raises(InputError, match="relu3_4"):
        net16.features_at(batch, ["relu3_4"])  # VGG16's block 3 has three convolutions


def test_published_file_loads_from_a_path_and_the_cache(net16, batch, tmp_path, monkeypatch):
    state = dict(net16.state_dict())
    state["classifier.0.weight"] = torch.zeros(4, 7)  # the published file's FC layers: ignored
    state["classifier.6.bias"] = torch.zeros(1000)
    torch.save(state, tmp_path / VGG16_FILE)
    expected = net16.features_at(batch, ["pool5"])["pool5"]
    assert torch.equal(vgg16(tmp_path / VGG16_FILE).features_at(batch, ["pool5"])["pool5"], expected)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / VGG16_FILE).write_bytes((tmp_path / VGG16_FILE).read_bytes())
    assert torch.equal(vgg16().features_at(batch, ["pool5"])["pool5"], expected)


def test_a_vgg16_file_does_not_fit_vgg19(net16, tmp_path):
    torch.save(net16.state_dict(), tmp_path / VGG19_FILE)
    with pytest.raises(InputError, match="features.16.weight"):
        vgg19(tmp_path / VGG19_FILE)


@pytest.mark.parametrize("factory, filename", [(vgg16, VGG16_FILE), (vgg19, VGG19_FILE)])
def test_missing_weights_name_the_file(factory, filename, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match=filename.replace(".", r"\.")) as info:
        factory()
    assert "download.pytorch.org" in str(info.value)
    with pytest.raises(WeightsNotFoundError, match="elsewhere.pth"):
        factory(tmp_path / "elsewhere.pth")


def test_random_weights_are_seeded(net16):
    again, other = vgg16(weights="random", seed=0), vgg16(weights="random", seed=1)
    for key, value in net16.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)
    first = net16.state_dict()["features.0.weight"]
    assert not torch.equal(other.state_dict()["features.0.weight"], first)
    # He fan-out init: std sqrt(2 / (64 * 9)) for the first convolution
    assert abs(first.std().item() - np.sqrt(2 / (64 * 9))) < 0.01
