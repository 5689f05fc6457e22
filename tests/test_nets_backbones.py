"""Backbones in plain PyTorch: published state-dict layouts, forward shapes, weight files on disk."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from stainlab.errors import InputError
from stainlab.nets import WeightsNotFoundError, fid_inception_v3, load_weights, resnet18, resnet50
from stainlab.nets.inception import FID_WEIGHTS_FILE

# The layout of pt_inception-2015-12-05-6726825d.pth as pytorch-fid builds it (TorchVision's Inception3,
# 1008 classes, no aux head): 94 conv+BN units of 5 tensors each, plus fc weight and bias.
INCEPTION_KEYS_WITHOUT_COUNTERS = 94 * 5 + 2
INCEPTION_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def inception():
    return fid_inception_v3(weights="random", seed=0)


@pytest.fixture(scope="module")
def inception_features(inception, batch):
    with torch.inference_mode():
        return inception(batch)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_inception_state_dict_has_pytorch_fid_layout(inception):
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) == INCEPTION_KEYS_WITHOUT_COUNTERS
    for key, shape in INCEPTION_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in inception.parameters()) == 23_850_960
    assert not any(key.startswith("AuxLogits") for key in state)


def test_inception_forward_gives_finite_2048_features(inception_features):
    assert inception_features.shape == (2, 2048)
    assert torch.isfinite(inception_features).all()
    assert (inception_features[0] - inception_features[1]).abs().max() > 1e-4  # depends on the image



def test_inception_matches_pytorch_fid_on_the_same_weights(inception_features):
    # Reference: pytorch-fid 0.3.0's InceptionV3 (TorchVision 0.28 Inception3 + FIDInceptionA/C/E_1/E_2),
    # loaded with this random state dict (seed 0), on the same input; computed once outside the suite.
    # Counting zero padding in the A/C/E_1 average pools moves the sum to 1403.3; averaging in Mixed_7c
    # instead of max-pooling moves it to 1388.3.
    feats = inception_features.double()
    np.testing.assert_allclose(feats[0, :3], [1.151098, 0.699785, 0.604877], rtol=1e-4)
    np.testing.assert_allclose(feats[1, :3], [1.185548, 0.698408, 0.613338], rtol=1e-4)
    assert feats.sum().item() == pytest.approx(1428.4772, rel=1e-5)

def test_inception_random_weights_round_trip_through_a_file(inception, batch, inception_features, tmp_path):
    path = tmp_path / "inception.pth"
    torch.save(inception.state_dict(), path)
    with torch.inference_mode():
        reloaded = fid_inception_v3(weights=path)(batch)
    assert torch.equal(reloaded, inception_features)


def test_missing_inception_weights_name_the_file_and_its_origin(empty_cache):
    with pytest.raises(WeightsNotFoundError, match=FID_WEIGHTS_FILE) as info:
        fid_inception_v3()
    assert "github.com/mseitzer/pytorch-fid" in str(info.value)
    assert str(empty_cache) in str(info.value)


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(resnet18(weights="random").state_dict(), path)
    with pytest.raises(InputError, match="does not fit"):
        fid_inception_v3(weights=path)


def test_resnet18_has_the_published_parameter_count_and_keys():
    model = resnet18(weights="random")
    keys = list(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert len(keys) == 122
    assert keys[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    for key in ("layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                "layer4.1.bn2.bias", "fc.weight"):
        assert key in keys
    assert "mean" not in keys  # the input normalisation is not part of the published file


def test_resnet50_has_the_published_parameter_count():
    model = resnet50(weights="random")
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    assert tuple(model.state_dict()["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)


def test_resnet18_stage_features_and_logits(batch):
    model = resnet18(weights="random")
    expected = {"layer1": (64, 16, 16), "layer2": (128, 8, 8), "layer3": (256, 4, 4), "layer4": (512, 2, 2)}
    with torch.inference_mode():
        for stage, shape in expected.items():
            assert tuple(model.features(batch, upto=stage).shape) == (2, *shape)
        assert tuple(model(batch).shape) == (2, 1000)
    with pytest.raises(InputError, match="upto"):
        model.features(batch, upto="layer5")


def test_resnet18_matches_reference_outputs_on_the_same_weights(batch):
    # Reference: TorchVision 0.28 resnet18 loaded with this random state dict (seed 0), input normalised
    # with the ImageNet mean/std; computed once outside the suite.
    model = resnet18(weights="random", seed=0)
    with torch.inference_mode():
        means = model.features(batch, upto="layer2").double().mean(dim=(2, 3))
        logits_sum = model(batch).double().sum().item()
    np.testing.assert_allclose(means[0, :3], [0.731211, 0.041295, 0.996575], rtol=1e-4, atol=1e-6)
    assert means.sum().item() == pytest.approx(304.17096, rel=1e-5)
    assert logits_sum == pytest.approx(119.99693, rel=1e-4)


def test_random_init_is_seeded():
    first = resnet18(weights="random", seed=3).conv1.weight
    assert torch.equal(first, resnet18(weights="random", seed=3).conv1.weight)
    assert not torch.equal(first, resnet18(weights="random", seed=4).conv1.weight)


def test_resnet_loads_safetensors_and_old_files_without_counters(batch, tmp_path):
    model = resnet18(weights="random", seed=1)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(tmp_path / "r18.safetensors"))
    torch.save(state, tmp_path / "r18.pth")
    with torch.inference_mode():
        expected = model.features(batch, "layer2")
        for name in ("r18.safetensors", "r18.pth"):
            assert torch.equal(resnet18(weights=tmp_path / name).features(batch, "layer2"), expected)


def test_load_weights_finds_a_bare_name_in_the_torch_cache(empty_cache):
    empty_cache.mkdir(parents=True)
    torch.save({"w": torch.arange(3.0)}, empty_cache / "tiny.pth")
    state = load_weights("tiny.pth", "tiny.pth", "https://example.org/tiny.pth")
    assert torch.equal(state["w"], torch.arange(3.0))
    assert np.array_equal(load_weights(None, "tiny.pth", "x")["w"].numpy(), [0.0, 1.0, 2.0])


def test_load_weights_refuses_unknown_formats_and_missing_paths(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(InputError, match="unknown format"):
        load_weights(tmp_path / "weights.bin", "weights.bin", "x")
    with pytest.raises(WeightsNotFoundError, match="resnet18-f37072fd.pth"):
        resnet18(weights=tmp_path / "nowhere" / "r.pth")


def test_missing_resnet_weights_name_the_file(empty_cache):
    with pytest.raises(WeightsNotFoundError, match="resnet18-f37072fd.pth") as info:
        resnet18()
    assert "download.pytorch.org/models/resnet18-f37072fd.pth" in str(info.value)

