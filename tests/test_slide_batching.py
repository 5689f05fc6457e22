"""Networks over slides in batches (issue 16): the tissue windows of a tile row go through the network
together, in batches of equal-shaped windows, with the outputs of one window at a time; --device and
--batch-size on the command line; neither is saved nor changes a transform's identity."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import stainlab
from stainlab.cli import main
from stainlab.errors import InputError
from stainlab.io.images import read_image, write_image
from stainlab.nets import inference
from stainlab.nets.derestainer import DeReStainer
from stainlab.nets.files import save_model
from stainlab.wsi.tiling import run_tiled

TILE, OVERLAP = 64, 16          # windows of 96 px inside, 80 and shorter at the slide's edges


@pytest.fixture(scope="module")
def slide():
    """170 x 300 (not multiples of the tile): glass with tissue of varied texture in the cores of the
    first two rows and four columns, so each of those rows has tissue windows of two shapes (80 px wide at
    the left edge, 96 inside) beside glass windows."""
    rng = np.random.default_rng(1)
    image = np.full((170, 300, 3), (236, 232, 240), np.uint8)
    image[30:120, 40:240] = rng.integers(40, 220, (90, 200, 3))
    return image


def one_at_a_time(transform):
    """The transform as a plain callable, so the tiler maps each window on its own; counts its calls."""
    def fn(image):
        fn.calls += 1
        return transform(image)
    fn.calls = 0
    return fn


def network_batches(transform) -> list[int]:
    """The batch size of every call of the transform's network, from now on."""
    sizes = []
    transform._net.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes


def window_by_window(transform):
    """The transform as the tiler uses it (``transform_many(..., windows=True)``), one window per call."""
    return lambda image: transform.transform_many([image], windows=True)[0]


@pytest.mark.parametrize("net_tile", [512, 64])   # 64: windows larger than 64 + 2 x 8 also cut into network tiles
def test_batched_rows_equal_the_windows_one_at_a_time(model, slide, net_tile):
    t = stainlab.load(f"unet:{model}", tile=net_tile, overlap=8, batch_size=3)
    alone = run_tiled(slide, window_by_window(t), TILE, OVERLAP, min_tissue=0.01)
    batched = run_tiled(slide, t, TILE, OVERLAP, min_tissue=0.01)
    np.testing.assert_array_equal(batched, alone)
    assert alone[100, 150].tolist() != slide[100, 150].tolist() and alone.std() > 5  # the network did map it
    windows = [slide[:96, 48:144], slide[48:144, :80], slide[48:144, 48:144]]  # two shapes, out of order
    for got, want in zip(t.transform_many(windows), windows):
        np.testing.assert_array_equal(got, t(want))


def test_the_batch_size_is_respected_and_every_tissue_window_runs_once(model, slide):
    t = stainlab.load(f"unet:{model}", batch_size=2)
    counted = one_at_a_time(t)
    run_tiled(slide, counted, TILE, OVERLAP, min_tissue=0.01)  # tissue windows and one glass probe
    sizes = network_batches(t)
    run_tiled(slide, t, TILE, OVERLAP, min_tissue=0.01)
    assert sum(sizes) == counted.calls == 9  # 2 rows x 4 tissue columns, and the glass colour once
    assert sizes == [1, 2, 1, 1, 1, 2, 1]  # each row: its edge window, the 3 inner ones as 2 + 1; row 0: the probe


def test_a_window_no_larger_than_a_network_tile_with_its_overlap_goes_through_whole(model, slide):
    cut = stainlab.load(f"unet:{model}", tile=64, overlap=16)   # windows of 96 = 64 + 2 x 16: not cut
    whole = stainlab.load(f"unet:{model}", tile=96, overlap=16)  # the same network, each window in one piece
    calls = network_batches(cut)
    np.testing.assert_array_equal(run_tiled(slide, cut, TILE, OVERLAP, min_tissue=0.01),
                                  run_tiled(slide, one_at_a_time(whole), TILE, OVERLAP, min_tissue=0.01))
    assert sum(calls) == 9  # one network call per tissue window and the glass probe, not four
    window = slide[:96, 48:144]
    assert not np.array_equal(cut(window), whole(window))  # on its own, t(image) still cuts at its tile
    np.testing.assert_array_equal(cut.transform_many([window], windows=True)[0], whole(window))


def test_the_batch_size_by_memory(model, monkeypatch):
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert inference.forward_bytes(conv, 64, 64) == 8 * 64 * 64 * 4  # one float32 output of 8 channels
    assert inference.forward_bytes(conv, 512, 256) == 8 * 512 * 256 * 4  # measured on 128 x 128, scaled
    assert inference.forward_bytes(nn.Sequential(conv, nn.ReLU(inplace=True)), 64, 64) == 8 * 64 * 64 * 4
    assert inference.forward_bytes(nn.Sequential(conv, nn.ReLU()), 64, 64) == 2 * 8 * 64 * 64 * 4
    t = stainlab.load(f"unet:{model}")
    assert t.batch_size_of(96, 96) == 1  # the CPU: one window per call (batches did not pay there)
    monkeypatch.setattr(inference, "MAX_CPU_BATCH", inference.MAX_BATCH)  # the rule of a GPU, on the CPU
    per_window = inference.forward_bytes(t._net, 96, 96)
    monkeypatch.setattr(inference, "free_memory", lambda device: 5 * per_window)  # room for 2.5 windows
    assert inference.batch_size_for(t._net, 96, 96) == 2
    monkeypatch.setattr(inference, "free_memory", lambda device: 0)
    assert inference.batch_size_for(t._net, 96, 96) == 1  # never less than one
    monkeypatch.setattr(inference, "free_memory", lambda device: 1 << 50)
    fresh = stainlab.load(f"unet:{model}")
    assert fresh.batch_size_of(640, 640) == inference.MAX_BATCH == 32  # capped
    monkeypatch.setattr(inference, "free_memory", lambda device: 0)
    assert fresh.batch_size_of(512, 512) == 32  # the same network input (tile 512): chosen once, kept


def test_device_and_batch_size_are_not_saved_and_keep_the_identity(model, tmp_path):
    t = stainlab.load(f"unet:{model}", device="cpu", batch_size=4)
    assert t.get_params()["batch_size"] == 4
    t.save(tmp_path / "u.json")
    saved = json.loads((tmp_path / "u.json").read_text())["params"]
    assert "device" not in saved and "batch_size" not in saved and saved["tile"] == 512
    loaded = stainlab.load(tmp_path / "u.json")
    assert (loaded.device, loaded.batch_size) == ("cpu", None)
    assert loaded.fingerprint() == t.fingerprint() == t.run_on("cpu", 1).fingerprint()
    with pytest.raises(InputError, match=r"^device cuda: (this torch is built without CUDA|no CUDA GPU is visible); "
                                         r"use --device cpu$"):
        stainlab.load(f"unet:{model}", device="cuda")
    with pytest.raises(InputError, match="batch_size must be a whole number from 1 to 1024, got 0"):
        stainlab.load(f"unet:{model}", batch_size=0)


def test_derestainer_batches_too(tmp_path):
    torch.manual_seed(0)
    path = save_model(tmp_path / "d.safetensors", DeReStainer(base_channels=4, n_blocks=1), "derestainer",
                      {"base_channels": 4, "n_blocks": 1})
    t = stainlab.load(f"derestainer:{path}", batch_size=2)
    windows = list(np.random.default_rng(2).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8))
    for got, want in zip(t.transform_many(windows), windows):
        np.testing.assert_array_equal(got, t(want))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cli_refuses_an_unavailable_device_in_one_line_before_any_work(model, slide, tmp_path, capsys):
    src = write_image(tmp_path / "s.png", slide)
    for command in (["slide", str(src), "-m", f"unet:{model}"], ["normalize", str(src), "-m", "reinhard", "-r", str(src)]):
        assert main([*command, "-o", str(tmp_path / "out"), "--device", "cuda"]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.endswith("error: argument --device: device cuda: this torch is built without CUDA; use --device cpu") \
            or error.endswith("no CUDA GPU is visible; use --device cpu")
    assert not (tmp_path / "out").exists()


def test_cli_slide_batch_size_and_a_classical_method(model, slide, tmp_path, capsys):
    src = write_image(tmp_path / "s.png", slide)
    common = ["--tile", "64", "--overlap", "16", "--format", "png"]
    assert main(["slide", str(src), "-m", f"unet:{model}", "-o", str(tmp_path / "a"), "--batch-size", "1", *common]) == 0
    assert main(["slide", str(src), "-m", f"unet:{model}", "-o", str(tmp_path / "b"), "--device", "cpu", *common]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "a" / "s.png")[0], read_image(tmp_path / "b" / "s.png")[0])
    capsys.readouterr()
    assert main(["slide", str(src), "-m", f"unet:{model}", "-o", str(tmp_path / "a"), "--batch-size", "3", *common]) == 0
    assert "1 output(s) exist already, made by this same run" in capsys.readouterr().err  # batch size: same identity
    assert main(["slide", str(src), "-m", "reinhard", "-r", str(src), "-o", str(tmp_path / "c"), "--device", "cpu",
                 "--batch-size", "4", *common]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "reinhard runs on the CPU (--batch-size 4: for networks only, ignored)" in err
