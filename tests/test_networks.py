"""The network registry (stainlab.networks): every table of kinds, transforms and recipes derives from it,
so the kinds agree everywhere, and one entry is all a new network needs to load as KIND:PATH, appear in
`stainlab methods` and train with `stainlab train`."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stainlab
import stainlab.networks as networks
from stainlab.cli import main
from stainlab.errors import InputError
from stainlab.io.images import write_image
from stainlab.nets.files import build_network, load_model, save_model
from stainlab.training import Option, Recipe, TrainConfig, recipe_class
from stainlab.transforms import registry
from stainlab.transforms.base import Transform
from synth import he_image


def test_every_kind_has_one_transform_and_every_recipe_one_class():
    for kind in networks.learned_kinds():
        transforms = {networks.ARCHITECTURES[arch].transform for arch in networks.kind_architectures(kind)}
        assert len(transforms) == 1, kind
        assert issubclass(networks.resolve(transforms.pop()), Transform)
    for name in networks.recipes():
        targets = {entry.recipes[name] for entry in networks.ARCHITECTURES.values() if name in entry.recipes}
        assert len(targets) == 1, name
        assert issubclass(recipe_class(name), Recipe) and recipe_class(name).name == name
    for arch, entry in networks.ARCHITECTURES.items():
        assert callable(networks.resolve(entry.network)), arch
        assert bool(entry.kinds) == bool(entry.transform), arch  # an image-to-image network runs as a kind
        assert entry.kinds or entry.use or not entry.recipes, arch  # a trained file says how it is used


def test_the_kinds_agree_everywhere(capsys):
    kinds = networks.learned_kinds()
    assert set(kinds) == {"stainnet", "unet", "cyclegan", "ccgan", "pcnet", "pix2pix", "derestainer"}
    assert registry.learned_kinds() == kinds
    assert [name for name in stainlab.methods() if name.endswith(":PATH")] == [f"{k}:PATH" for k in kinds]
    for kind in kinds:
        with pytest.raises(InputError, match=f"{kind} needs its weight file"):
            stainlab.load(kind)
    assert main(["train", "--help"]) == 0
    listed = capsys.readouterr().out
    for recipe in networks.recipes():
        assert f"\n    {recipe} " in listed
    assert set(networks.recipes()) == {"cyclegan", "ccgan", "pcnet", "pix2pix", "distill", "derestainer",
                                       "comparator"}


def test_what_a_recipe_writes_is_used_as_its_kind():
    assert networks.use_as("skip-resnet-generator", "cyclegan", "G.safetensors") == "-m cyclegan --model G.safetensors"
    assert networks.use_as("unet-generator", "pix2pix", "G.safetensors") == "-m pix2pix --model G.safetensors"
    assert networks.use_as("unet", "distill", "s.safetensors") == "-m unet --model s.safetensors"
    assert networks.use_as("stainnet", "distill", "s.safetensors") == "-m stainnet --model s.safetensors"
    assert networks.use_as("her2-classifier", "comparator", "c.safetensors") == \
        "train derestainer --comparator c.safetensors, or evaluate --classifier c.safetensors"
    with pytest.raises(InputError, match="unknown architecture 'resnet-9000'"):
        build_network("resnet-9000", {})


# -- a network of this test module, registered by one entry -------------------------------------------

class TinyNet(nn.Module):
    """One 1x1 convolution with a residual: float NCHW in [-1, 1] in and out."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.mix = nn.Sequential(nn.Conv2d(3, width, 1), nn.Tanh(), nn.Conv2d(width, 3, 1))

    def forward(self, x):
        return torch.tanh(x + self.mix(x))


@dataclass
class TinyConfig(TrainConfig):
    width: int = 4  # hidden channels
    lr: float = 1e-2


class TinyRecipe(Recipe):
    """L1 from A to B with one TinyNet (a test recipe)."""

    name = "tiny-recipe"
    config_class = TinyConfig
    options = (Option("width", "hidden channels"),)

    def __init__(self, config, rng) -> None:
        super().__init__(config, rng)
        self.net = TinyNet(config.width).to(self.device).train()
        self.networks = {"net": self.net}
        self.optimizers = {"net": self._adam(self.net)}

    def step(self, batch):
        loss = F.l1_loss(self.net(batch["A"]), batch["B"])
        self.optimizers["net"].zero_grad()
        loss.backward()
        self.optimizers["net"].step()
        return {"l1": float(loss.detach())}

    def samples(self, batch):
        return [("A", batch["A"]), ("net(A)", self.net(batch["A"]))]

    def exports(self):
        return {"tiny.safetensors": (self.net, "tiny-net", {"width": self.config.width}, {})}


@pytest.fixture
def tiny_entry(monkeypatch):
    monkeypatch.setitem(networks.ARCHITECTURES, "tiny-net", networks.Architecture(
        f"{__name__}:TinyNet", networks.NETWORK_TRANSFORM, {"tiny": networks.Kind("Tiny network (a test)")},
        {"tiny-recipe": f"{__name__}:TinyRecipe"}))


def test_one_registry_entry_loads_lists_and_trains_a_new_network(tiny_entry, tmp_path, capsys):
    image = he_image((24, 32), seed=4)
    net = TinyNet(3).eval()
    path = save_model(tmp_path / "tiny.safetensors", net, "tiny-net", {"width": 3})
    out = stainlab.load(f"tiny:{path}")(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert stainlab.methods()["tiny:PATH"] == \
        "Tiny network (a test); needs a model file from `stainlab train tiny-recipe`"
    assert main(["methods"]) == 0 and "tiny:PATH" in capsys.readouterr().out

    assert main(["train", "tiny-recipe", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--width INT" in text and "hidden channels; default: 4" in text and "--skips" not in text
    for domain, scale in (("A", (1.0, 1.0)), ("B", (1.3, 0.7))):
        for i in range(2):
            write_image(tmp_path / "data" / domain / f"t{i}.png", he_image((32, 32), seed=i, scale=scale))
    run = tmp_path / "run"
    assert main(["train", "tiny-recipe", "--data", str(tmp_path / "data"), "-o", str(run), "--steps", "2",
                 "--width", "5", "--set", "size=16", "--set", "batch_size=1"]) == 0
    assert f"use as: -m tiny --model {run / 'tiny.safetensors'}" in capsys.readouterr().out
    assert load_model(run / "tiny.safetensors")[1] == {"arch": "tiny-net", "kwargs": {"width": 5},
                                                        "recipe": "tiny-recipe", "step": 2}
