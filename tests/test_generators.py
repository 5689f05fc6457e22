"""Image-to-image nets: paper 000's U-Net, the CycleGAN ResNet generator (public checkpoint layout),
paper 003's skip generator, paper 004's U-Net-like generator and the 70x70 PatchGAN."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import stainlab
from stainlab.errors import InputError
from stainlab.nets.files import save_model
from stainlab.nets.generators import ResnetGenerator, SkipResnetGenerator, UNetGenerator, load_cyclegan_generator
from stainlab.nets.inference import apply_network
from stainlab.nets.patchgan import PatchDiscriminator, receptive_field
from stainlab.nets.unet import UNet
from stainlab.nets.weights import WeightsNotFoundError, load_into
from synth import he_image


def conv(c_in, c_out, k, bias=True):
    """Parameters of a k x k (transposed) convolution."""
    return c_in * c_out * k * k + (c_out if bias else 0)


def double(c_in, c_out):
    """Parameters of two 3x3 convolutions c_in -> c_out -> c_out."""
    return conv(c_in, c_out, 3) + conv(c_out, c_out, 3)


def bn(channels):
    """BatchNorm's weight and bias."""
    return 2 * channels


def count(net):
    return sum(p.numel() for p in net.parameters())


def small_nets():
    """One small instance of every generator, built from a fixed seed."""
    torch.manual_seed(0)
    return {
        "unet": UNet(base_channels=8),
        "resnet": ResnetGenerator(ngf=8, n_blocks=2),
        "skip-deconv": SkipResnetGenerator(ngf=8, n_blocks=2),
        "skip-resize": SkipResnetGenerator(ngf=8, n_blocks=2, upsampling="resize"),
        "unet004": UNetGenerator(ngf=8, depth=4, max_channels=32),
    }


def batch(height, width, n=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, height, width, generator=generator) * 2 - 1


@pytest.mark.parametrize("size", [(64, 64), (48, 80), (37, 50), (17, 23)])
def test_generators_return_the_input_size(size):
    x = batch(*size)
    for name, net in small_nets().items():
        assert net.eval()(x).shape == x.shape, name


def test_bad_inputs_raise_clear_errors():
    nets = small_nets()
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        nets["unet"](torch.zeros(1, 4, 16, 16))
    with pytest.raises(InputError, match="float"):
        nets["resnet"](torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    for side in (9, 16):  # 4 stride-2 blocks: sides must exceed 16 (17 works, see above)
        with pytest.raises(InputError, match="must be more than 16 pixels"):
            nets["unet004"](batch(side, 40))
    with pytest.raises(InputError, match="must be more than 8 pixels"):
        nets["skip-deconv"](batch(40, 8))


def test_parameter_counts_match_hand_computation():
    c = 64
    unet = (double(3, c) + double(c, 2 * c) + double(2 * c, 4 * c) + conv(4 * c, 2 * c, 2)
            + double(4 * c, 2 * c) + conv(2 * c, c, 2) + double(2 * c, c) + conv(c, 3, 1))
    assert count(UNet()) == unet == 1_862_979

    # CycleGAN resnet_9blocks, ngf=64, InstanceNorm without affine (no norm parameters)
    resnet = (conv(3, 64, 7) + conv(64, 128, 3) + conv(128, 256, 3) + 9 * 2 * conv(256, 256, 3)
              + conv(256, 128, 3) + conv(128, 64, 3) + conv(64, 3, 7))
    assert count(ResnetGenerator()) == resnet == 11_378_179

    # paper 003, ngf=32: 32-64-128-256, ten blocks at 256; resize-conv has the same kernel sizes
    skip = (conv(3, 32, 7) + conv(32, 64, 3) + conv(64, 128, 3) + conv(128, 256, 3)
            + 10 * 2 * conv(256, 256, 3) + conv(256, 128, 3) + conv(128, 64, 3) + conv(64, 32, 3)
            + conv(32, 3, 7))
    assert count(SkipResnetGenerator()) == count(SkipResnetGenerator(upsampling="resize")) == skip
    assert count(SkipResnetGenerator(skips=False)) == skip  # skips are added: no extra weights

    # paper 004: "approximately 20 million parameters"; encoder 64-128-256-256-256-256-256
    widths = [64, 128, 256, 256, 256, 256, 256]
    encoder = sum(conv(a, b, 5, bias=False) + bn(b) for a, b in zip([3] + widths, widths))
    ins = [256] + [2 * w for w in widths[-2:0:-1]]
    decoder = sum(conv(a, b, 5, bias=False) + bn(b) for a, b in zip(ins, widths[-2::-1]))
    unet004 = encoder + decoder + conv(2 * 64, 3, 5)
    assert count(UNetGenerator()) == unet004 == 21_114_179

    # 70x70 PatchGAN, ndf=64, BatchNorm (no conv bias before it)
    patch = (conv(3, 64, 4) + conv(64, 128, 4, False) + bn(128) + conv(128, 256, 4, False) + bn(256)
             + conv(256, 512, 4, False) + bn(512) + conv(512, 1, 4))
    assert count(PatchDiscriminator()) == patch == 2_765_633


def public_cyclegan_layout(ngf=64, n_blocks=9):
    """Keys and shapes of the public implementation's resnet generator, written out independently."""
    layout = {"model.1": (ngf, 3, 7, 7), "model.4": (2 * ngf, ngf, 3, 3), "model.7": (4 * ngf, 2 * ngf, 3, 3)}
    for i in range(10, 10 + n_blocks):
        layout[f"model.{i}.conv_block.1"] = layout[f"model.{i}.conv_block.5"] = (4 * ngf, 4 * ngf, 3, 3)
    first_up = 10 + n_blocks
    layout[f"model.{first_up}"] = (4 * ngf, 2 * ngf, 3, 3)  # ConvTranspose2d: (in, out, k, k)
    layout[f"model.{first_up + 3}"] = (2 * ngf, ngf, 3, 3)
    layout[f"model.{first_up + 7}"] = (3, ngf, 7, 7)
    shapes = {}
    for prefix, shape in layout.items():
        shapes[prefix + ".weight"] = shape
        shapes[prefix + ".bias"] = (shape[1] if prefix in (f"model.{first_up}", f"model.{first_up + 3}")
                                    else shape[0],)
    return shapes


def test_resnet_generator_has_the_public_checkpoint_layout():
    expected = public_cyclegan_layout()
    state = ResnetGenerator().state_dict()
    assert len(state) == len(expected) == 48
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    assert tuple(state["model.26.weight"].shape) == (3, 64, 7, 7)
    assert tuple(state["model.18.conv_block.5.weight"].shape) == (256, 256, 3, 3)


def test_public_cyclegan_checkpoint_loads(tmp_path):
    torch.manual_seed(3)
    state = {key: torch.randn(shape) * 0.05 for key, shape in public_cyclegan_layout(ngf=8, n_blocks=3).items()}
    # as saved from DataParallel by PyTorch < 0.4: "module." prefix and InstanceNorm running stats
    old_style = {f"module.{key}": value for key, value in state.items()}
    old_style["module.model.2.running_mean"] = torch.zeros(8)
    old_style["module.model.11.conv_block.2.running_var"] = torch.ones(32)
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(old_style, path)

    generator = load_cyclegan_generator(path, ngf=8, n_blocks=3)
    assert not generator.training
    for key, value in generator.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = batch(32, 32)
    with torch.no_grad():
        stem = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3,) * 4, mode="reflect"),
                                          state["model.1.weight"], state["model.1.bias"])
        assert torch.allclose(generator.model[1](generator.model[0](x)), stem, atol=1e-6)

    with pytest.raises(InputError, match="does not fit"):
        load_cyclegan_generator(path, ngf=8, n_blocks=9)
    with pytest.raises(WeightsNotFoundError, match="latest_net_G_A.pth"):
        load_cyclegan_generator(tmp_path / "missing" / "latest_net_G_A.pth")


def test_tanh_outputs_stay_in_range_when_saturated():
    x = batch(32, 32)
    nets = small_nets()
    for name in ("resnet", "skip-deconv", "unet004"):
        net = nets[name].eval()
        last_conv = convolutions(net)[-1]
        with torch.no_grad():
            last_conv.weight.mul_(1000)
            y = net(x)
        assert torch.isfinite(y).all() and y.abs().max() <= 1, name
        assert y.abs().max() > 0.99, name


def convolutions(net):
    return [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


def xavier_std(weight):
    """sqrt(2 / (fan_in + fan_out)) with fans (channels in/out) x kernel area, either weight layout."""
    return math.sqrt(2.0 / ((weight.shape[0] + weight.shape[1]) * weight.shape[2] * weight.shape[3]))


@pytest.mark.parametrize("make, expected_std, layers", [
    (SkipResnetGenerator, xavier_std, 1 + 3 + 2 * 10 + 3 + 1),  # paper 003: Xavier (normal)
    (lambda: UNetGenerator(ngf=16, max_channels=64), xavier_std, 7 + 6 + 1),  # Keras glorot_uniform
    (lambda: ResnetGenerator(ngf=16), lambda w: 0.02, 1 + 2 + 2 * 9 + 2 + 1),  # public CycleGAN N(0, 0.02)
    (lambda: PatchDiscriminator(ndf=16), lambda w: 0.02, 5),
])
def test_initial_weights_follow_the_stated_scheme(make, expected_std, layers):
    torch.manual_seed(0)
    convs = convolutions(make())
    assert len(convs) == layers
    for module in convs:
        w = module.weight
        if w.numel() >= 2000:  # enough samples for a 10% std estimate
            assert abs(w.std().item() / expected_std(w) - 1) < 0.10, (tuple(w.shape), w.std().item())
        assert abs(w.mean().item()) < 0.2 * expected_std(w)
        assert module.bias is None or torch.count_nonzero(module.bias) == 0


def test_skips_reach_the_decoder():
    torch.manual_seed(0)
    with_skips = SkipResnetGenerator(ngf=8, n_blocks=1).eval()
    without = SkipResnetGenerator(ngf=8, n_blocks=1, skips=False).eval()
    without.load_state_dict(with_skips.state_dict())
    x = batch(32, 32, n=1)
    with torch.no_grad():
        assert (with_skips(x) - without(x)).abs().max() > 1e-3


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    x = batch(32, 40)
    torch.manual_seed(7)
    fresh = small_nets()
    for name, net in small_nets().items():
        net.train()(x)  # move BatchNorm running statistics away from their initial values
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        other = fresh[name]
        load_into(other, load_file(str(path)), name)
        with torch.no_grad():
            assert torch.equal(net.eval()(x), other.eval()(x)), name


def test_forward_and_backward_reach_every_parameter():
    x = batch(32, 32)
    nets = small_nets()
    nets["patchgan"] = PatchDiscriminator(ndf=8)
    for name, net in nets.items():
        net.train()
        net(x).square().mean().backward()
        for key, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, (name, key)


def test_patchgan_has_the_public_nlayer_discriminator_layout():
    batch_norm = {key: tuple(v.shape) for key, v in PatchDiscriminator(ndf=64).state_dict().items()}
    assert batch_norm["model.0.weight"] == (64, 3, 4, 4) and batch_norm["model.0.bias"] == (64,)
    assert batch_norm["model.8.weight"] == (512, 256, 4, 4) and "model.8.bias" not in batch_norm
    assert batch_norm["model.9.running_var"] == (512,)
    assert batch_norm["model.11.weight"] == (1, 512, 4, 4) and batch_norm["model.11.bias"] == (1,)
    instance = PatchDiscriminator(ndf=64, norm="instance").state_dict()
    assert sorted(instance) == sorted(f"model.{i}.{p}" for i in (0, 2, 5, 8, 11) for p in ("weight", "bias"))


def test_patchgan_receptive_field_and_map_size():
    net = PatchDiscriminator(ndf=8)
    assert receptive_field(net) == 70
    assert receptive_field(PatchDiscriminator(ndf=8, n_layers=2)) == 34
    with torch.no_grad():
        assert net.eval()(batch(256, 256, n=1)).shape == (1, 1, 30, 30)


def test_patchgan_gradient_support_is_70_pixels():
    """Back-propagate from one interior output value: the input pixels it depends on form a 70x70 square
    starting at 8 * index - 23 (stride 8; padding 1 at jumps 1, 2, 4, 8, 8). BatchNorm in eval mode is
    per-pixel, so nothing else couples pixels."""
    torch.manual_seed(0)
    net = PatchDiscriminator(ndf=8).eval()
    x = batch(128, 128, n=1).requires_grad_(True)
    row, col = 7, 6
    net(x)[0, 0, row, col].backward()
    support = x.grad[0].abs().sum(dim=0) > 0
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    assert (rows.min().item(), rows.max().item()) == (8 * row - 23, 8 * row - 23 + 69)
    assert (cols.min().item(), cols.max().item()) == (8 * col - 23, 8 * col - 23 + 69)


def test_a_generator_file_runs_as_each_kind_the_registry_gives_it(tmp_path):
    """The network registry lets every generator kind run a generator file, and names the kind to use
    when a file is asked for as another (a U-Net student, a DeReStainer)."""
    torch.manual_seed(0)
    net = UNetGenerator(ngf=4, depth=3).eval()
    path = save_model(tmp_path / "G.safetensors", net, "unet-generator", {"ngf": 4, "depth": 3})
    image = he_image((40, 56), seed=2)
    for kind in ("cyclegan", "ccgan", "pcnet", "pix2pix"):
        np.testing.assert_array_equal(stainlab.load(f"{kind}:{path}")(image), apply_network(net, image))
    with pytest.raises(InputError, match="holds a unet-generator network, not a unet model; load it as 'cyclegan:"):
        stainlab.load(f"unet:{path}")
    with pytest.raises(InputError, match="not a DeReStainer"):
        stainlab.load(f"derestainer:{path}")
