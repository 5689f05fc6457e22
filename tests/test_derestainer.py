"""DeReStainer (paper 002): ModConv, SimAM, the generator, discriminator, comparator and losses."""

import io
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stainlab.color.torch_stains import project
from stainlab.errors import InputError
from stainlab.nets.derestainer import (DeReStainer, MultiScalePatchGAN, comparator_features,
                                       her2_comparator)
from stainlab.nets.modconv import ModConv2d
from stainlab.nets.simam import SimAM
from stainlab.training.derestainer_losses import (PAPER, DeReStainerHyperParams, derestainer_discriminator_loss,
                                                  derestainer_losses, focal_loss)

SIDE = 64


def _images(seed: int, count: int = 2, side: int = SIDE) -> torch.Tensor:
    return torch.rand(count, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def comparator():
    return her2_comparator("resnet18", seed=3).requires_grad_(False)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return DeReStainer.from_size("tiny"), MultiScalePatchGAN.from_size("tiny")


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- building blocks --------------------------------------------------------------------------------
def test_modconv_demodulated_weights_have_unit_norm_per_output_channel_and_sample():
    torch.manual_seed(0)
    conv = ModConv2d(5, 7, style_dim=4).double()
    condition = torch.softmax(torch.randn(3, 4, dtype=torch.float64), dim=1)
    weight = conv.modulated_weight(condition)
    assert weight.shape == (3, 7, 5, 3, 3)
    squares = weight.pow(2).sum(dim=(2, 3, 4))
    # unit norm up to eps: |w|^2 = S / (S + eps) for S = sum (W (S + 1))^2, about 0.02 here
    assert (squares.sqrt() - 1).abs().max() < 1e-6
    # the formula by hand: W (S + 1) / sqrt(sum (W (S + 1))^2 + eps), S = affine(condition)
    w = conv.weight.detach().numpy()
    s = condition.numpy() @ conv.affine.weight.detach().numpy().T + conv.affine.bias.detach().numpy()
    for i in range(3):
        modulated = w * (s[i] + 1)[None, :, None, None]
        expected = modulated / np.sqrt((modulated ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
        np.testing.assert_allclose(weight[i].detach().numpy(), expected, rtol=1e-10)
    assert (weight[0] - weight[1]).abs().max() > 1e-3    # the condition changes the weights


def test_modconv_runs_each_sample_with_its_own_weights():
    torch.manual_seed(1)
    conv = ModConv2d(4, 6, style_dim=4).double()
    bias = torch.randn(6, dtype=torch.float64)
    conv.bias.data.copy_(bias)
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    condition = torch.randn(2, 4, dtype=torch.float64)
    out = conv(x, condition)
    weight = conv.modulated_weight(condition)
    for i in range(2):
        expected = F.conv2d(F.pad(x[i:i + 1], (1, 1, 1, 1), mode="reflect"), weight[i], bias)
        torch.testing.assert_close(out[i:i + 1], expected)


def test_simam_matches_its_closed_form():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3 + 1
    out = SimAM()(x).numpy()
    a = x.numpy()
    expected = np.empty_like(a)
    for n in range(2):
        for c in range(3):
            v = a[n, c]
            d = (v - v.mean()) ** 2
            variance = d.sum() / (v.size - 1)
            inverse_energy = d / (4 * (variance + 1e-4)) + 0.5
            expected[n, c] = v / (1 + np.exp(-inverse_energy))
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_focal_loss_by_hand_and_cross_entropy_at_gamma_zero():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
    labels = torch.tensor([0, 3])
    p = np.array([np.e ** 2 / (np.e ** 2 + 3), np.e ** -1 / (1 + np.e + 1 + np.e ** -1)])
    expected = np.mean(-(1 - p) ** 2 * np.log(p))
    assert abs(focal_loss(logits, labels).item() - expected) < 1e-6
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels))


# -- the whole model --------------------------------------------------------------------------------
def test_forward_backward_every_loss_finite_every_parameter_gets_a_gradient(comparator):
    generator, discriminator = _tiny()
    he, ihc = _images(0), _images(1)
    out = generator(he, ihc)
    assert out.fake_ihc.shape == he.shape and out.fake_ihc.abs().max() <= 1
    assert out.level_logits.shape == (2, 4)
    assert out.he_embedding.shape == out.ihc_embedding.shape == (2, 32 * 2 * 2)   # 4c x (64/32)^2
    torch.testing.assert_close(out.he_h, project((he + 1) / 2, "H") * 2 - 1)
    torch.testing.assert_close(out.real_dab, project((ihc + 1) / 2, "DAB") * 2 - 1)
    torch.testing.assert_close(out.fake_dab, project((out.fake_ihc + 1) / 2, "DAB") * 2 - 1)
    losses = derestainer_losses(out, he, ihc, [0, 3], discriminator=discriminator, comparator=comparator)
    assert set(losses) == {"h", "dab", "stain", "ssim", "mae", "cmp", "content", "level", "gan", "total"}
    for name, value in losses.items():
        assert torch.isfinite(value) and value.item() > 0, name
    by_hand = (2 * (losses["h"] + losses["dab"])
               + 13 * (losses["ssim"] + 10 * losses["mae"] + 2 * losses["cmp"])
               + 5 * losses["level"] + losses["gan"])
    torch.testing.assert_close(losses["total"], by_hand)
    losses["total"].backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in comparator.parameters())          # frozen: only the image learns
    discriminator.zero_grad()
    derestainer_discriminator_loss(discriminator, he, ihc, out.fake_ihc).backward()
    for name, parameter in discriminator.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_level_prediction_conditions_the_fusion():
    generator, _ = _tiny()
    features = torch.randn(1, 32, 8, 8)
    level0 = generator.fuse(features, torch.tensor([[1.0, 0, 0, 0]]))
    level3 = generator.fuse(features, torch.tensor([[0, 0, 0, 1.0]]))
    assert (level0 - level3).abs().mean() > 1e-3 * level0.abs().mean()


def test_training_steps_lower_the_content_and_level_losses():
    generator, _ = _tiny(seed=4)
    he, ihc = _images(5, side=32), _images(6, side=32)
    params = DeReStainerHyperParams(gan=0.0, cmp=0.0)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        losses = derestainer_losses(generator(he, ihc), he, ihc, [1, 2], params=params)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    # measured: mae 0.516 -> 0.427, ssim loss 0.994 -> 0.648, level 0.456 -> 0.004
    assert history[-1]["mae"] < 0.9 * history[0]["mae"]
    assert history[-1]["ssim"] < 0.75 * history[0]["ssim"]
    assert history[-1]["level"] < 0.1 * history[0]["level"]


def test_state_dict_round_trip_gives_identical_outputs():
    generator, _ = _tiny(seed=7)
    generator(_images(8), _images(9))                 # one training-mode pass moves the BatchNorm statistics
    buffer = io.BytesIO()
    torch.save(generator.state_dict(), buffer)
    assert not any("stains" in key for key in generator.state_dict())
    torch.manual_seed(8)
    copy = DeReStainer(**generator.config)
    copy.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    generator.eval()
    copy.eval()
    he = _images(10)
    with torch.no_grad():
        assert torch.equal(generator(he).fake_ihc, copy(he).fake_ihc)
        assert not torch.equal(generator(he).fake_ihc, _tiny(seed=8)[0].eval()(he).fake_ihc)


def _generator_parameters(c: int, blocks: int, levels: int = 4) -> int:
    """Counted from the architecture: 3x3 convs without bias before BatchNorm (2 parameters per channel)."""

    def conv_bn(a, b):
        return 9 * a * b + 2 * b

    encoder = conv_bn(3, c) + conv_bn(c, 2 * c) + conv_bn(2 * c, 4 * c)
    f_h = 2 * conv_bn(4 * c, 4 * c)
    f_level = 2 * conv_bn(4 * c, 4 * c) + (4 * c * levels + levels)
    modconv = 9 * (4 * c) ** 2 + 4 * c + (levels * 4 * c + 4 * c)  # weight, bias, affine to 4c styles
    fusion = blocks * 2 * modconv
    restainer = conv_bn(4 * c, 2 * c) + conv_bn(2 * c, c) + (9 * c * 3 + 3)
    return encoder + f_h + f_level + fusion + restainer


def _discriminator_parameters(ndf: int, layers: int, scales: int = 2, inputs: int = 6) -> int:
    widths = [ndf * min(2 ** i, 8) for i in range(layers + 1)]
    one = 16 * inputs * widths[0] + widths[0]
    one += sum(16 * a * b + 2 * b for a, b in pairwise(widths))
    one += 16 * widths[-1] + 1
    return scales * one


@pytest.mark.parametrize("size, generator_count, discriminator_count", [
    ("tiny", 86_999, 23_250), ("paper", 13_748_871, 5_537_410)])
def test_parameter_counts(size, generator_count, discriminator_count):
    c, blocks, ndf, layers = (8, 2, 8, 2) if size == "tiny" else (64, 9, 64, 3)
    assert _generator_parameters(c, blocks) == generator_count
    assert _discriminator_parameters(ndf, layers) == discriminator_count
    assert _params(DeReStainer.from_size(size)) == generator_count
    assert _params(MultiScalePatchGAN.from_size(size)) == discriminator_count


def test_comparator_features_are_pooled_last_stage_features():
    net = her2_comparator("resnet50", seed=0)
    assert net.fc.out_features == 4 and not net.training
    images = _images(11, count=1)
    features = comparator_features(net, images)
    assert features.shape == (1, 2048)
    with torch.no_grad():
        expected = net.features((images + 1) / 2).mean(dim=(2, 3))
        torch.testing.assert_close(features, expected)
        torch.testing.assert_close(net.fc(features), net((images + 1) / 2))


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels, message", [
    (None, "no level labels"), ([0, -1], r"images \[1\] .* no HER2 level label"),
    (torch.tensor([-1, -1]), r"images \[0, 1\]"), ([0, 4], "must be in 0-3"), ([0.0, 1.0], "integer"),
    ([1], "expected 2 integer")])
def test_missing_or_bad_level_labels_are_clear_errors(levels, message):
    generator, _ = _tiny()
    he, ihc = _images(0, side=32), _images(1, side=32)
    with pytest.raises(InputError, match=message):
        derestainer_losses(generator(he, ihc), he, ihc, levels, params=DeReStainerHyperParams(gan=0.0, cmp=0.0))


def test_terms_with_zero_weight_need_nothing():
    generator, _ = _tiny()
    he, ihc = _images(0, side=32), _images(1, side=32)
    bare = DeReStainerHyperParams(gan=0.0, cmp=0.0, level=0.0)
    losses = derestainer_losses(generator(he, ihc), he, ihc, None, params=bare)
    assert losses["level"].item() == 0 and losses["h"].item() > 0
    no_stain = bare.ablation("no_stain")
    losses = derestainer_losses(generator(he), he, ihc, params=no_stain)    # no IHC embedding needed
    assert losses["h"].item() == losses["dab"].item() == losses["stain"].item() == 0
    assert bare.ablation("no_dab").dab == 0 and bare.ablation("no_dab").stain == 2
    with pytest.raises(InputError, match=r"model\(he, ihc\)"):
        derestainer_losses(generator(he), he, ihc, params=bare)
    with pytest.raises(InputError, match="no discriminator"):
        derestainer_losses(generator(he, ihc), he, ihc, [0, 1], params=DeReStainerHyperParams(cmp=0.0))
    with pytest.raises(InputError, match="no comparator"):
        derestainer_losses(generator(he, ihc), he, ihc, [0, 1], params=DeReStainerHyperParams(gan=0.0))
    with pytest.raises(InputError, match="H&E input's shape"):
        derestainer_losses(generator(he, ihc), he, ihc[:1], params=bare)
    with pytest.raises(InputError, match="ablation"):
        PAPER.ablation("no_h")


def test_wrong_input_shapes_are_clear_errors():
    generator, discriminator = _tiny()
    with pytest.raises(InputError, match="multiples of 8"):
        generator(_images(0, side=60))
    with pytest.raises(InputError, match="at least 16"):
        generator(_images(0, side=8))
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        generator(torch.rand(2, 1, 32, 32))
    with pytest.raises(InputError, match="dtype"):
        generator(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(InputError, match="H&E input's shape"):
        generator(_images(0, side=32), _images(1, count=1, side=32))
    with pytest.raises(InputError, match=r"\(N, 6, H, W\)"):
        discriminator(_images(0, side=32))
    with pytest.raises(InputError, match="unknown DeReStainer size"):
        DeReStainer.from_size("huge")
    with pytest.raises(InputError, match="base_channels >= 1"):
        DeReStainer(base_channels=0)
    with pytest.raises(InputError, match="unknown comparator backbone"):
        her2_comparator("vgg16")
    generator.eval()
    with torch.no_grad():
        assert generator.generate(_images(0, count=1, side=60)).shape == (1, 3, 60, 60)
