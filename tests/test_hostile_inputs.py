"""Hostile files and degenerate inputs (issue: nothing lost, nothing silently wrong): each ends in one
clear line naming the file, in bounded time and memory, or in a warning and a correct pass-through."""

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from hostile import png_bomb, tiff_bomb
from stainlab.errors import InputError
from stainlab.io.images import MAX_PIXELS_VARIABLE, read_image, write_image
from synth import he_image


@pytest.mark.parametrize("make", [lambda p: png_bomb(p / "b8.png"), lambda p: png_bomb(p / "b16.png", depth=16),
                                  lambda p: tiff_bomb(p / "b.tif")], ids=["png8", "png16", "tiff"])
def test_decompression_bombs_are_refused_from_the_header(tmp_path, make):
    path = make(tmp_path)
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        read_image(path)
    assert time.perf_counter() - start < 1.0  # nothing was decoded
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "pixels, over the limit of 268,435,456" in message and "\n" not in message


def _write_all_formats(folder, image):
    paths = []
    for name, options in [("a.png", {}), ("a.jpg", {"quality": 95}), ("a.bmp", {})]:
        Image.fromarray(image).save(folder / name, **options)
        paths.append(folder / name)
    for compression in (None, "zlib", "jpeg", "lzw"):
        path = folder / f"a-{compression}.tif"
        tifffile.imwrite(path, image, photometric="rgb", compression=compression)
        paths.append(path)
    path = folder / "a16.png"
    import imagecodecs
    path.write_bytes(imagecodecs.png_encode(image.astype(np.uint16) * 257))
    return paths + [path]


def test_the_pixel_limit_holds_for_every_decoder_and_can_be_raised(tmp_path, monkeypatch):
    image = he_image((40, 50), seed=2)
    paths = _write_all_formats(tmp_path, image)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, str(40 * 50 - 1))
    for path in paths:
        with pytest.raises(InputError, match="50x40 is 2,000 pixels, over the limit of 1,999 for one image"):
            read_image(path)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, str(40 * 50))
    for path in paths:
        assert read_image(path)[0].shape == (40, 50, 3)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(InputError, match="STAINLAB_MAX_PIXELS='lots': expected a positive whole number"):
        read_image(paths[0])


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_and_tiff_orientation_are_applied_with_a_note(tmp_path, orientation):
    image = he_image((30, 44), seed=4)
    exif = Image.Image.getexif(Image.fromarray(image))
    exif[274] = orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=100, subsampling=0, exif=exif.tobytes())
    (tmp_path / "o.jpg").write_bytes(buffer.getvalue())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg")))
    out, notes = read_image(tmp_path / "o.jpg")
    assert np.array_equal(out, shown) and out.shape[:2] == ((44, 30) if orientation >= 5 else (30, 44))
    assert notes == [f"EXIF orientation {orientation} ({notes[0].split('(')[1]}"]
    tifffile.imwrite(tmp_path / "o.tif", image, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    out, notes = read_image(tmp_path / "o.tif")
    shown = np.asarray(ImageOps.exif_transpose(Image.open(_with_exif(tmp_path, image, orientation))))
    assert np.array_equal(out, shown) and notes[0].startswith(f"TIFF orientation {orientation} (")


def _with_exif(folder, image, orientation):
    exif = Image.Image.getexif(Image.fromarray(image))
    exif[274] = orientation
    Image.fromarray(image).save(folder / "o.png", exif=exif.tobytes())
    return folder / "o.png"


def test_weight_files_with_pickled_objects_or_cut_short_get_one_plain_line(tmp_path):
    import torch

    from stainlab.nets.weights import _read_state_dict

    torch.save({"w": torch.zeros(2), "code": Path("not a tensor")}, tmp_path / "pickled.pth")
    with pytest.raises(InputError) as err:
        _read_state_dict(tmp_path / "pickled.pth")
    message = str(err.value)
    assert message == (f"weight file {tmp_path / 'pickled.pth'}: holds pickled Python objects besides tensors; "
                       "stainlab reads plain state dicts only, so that no code from the file runs")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "pickled.pth").read_bytes()[:60])
    with pytest.raises(InputError) as err:
        _read_state_dict(tmp_path / "cut.pth")
    message = str(err.value)
    assert message.startswith(f"weight file {tmp_path / 'cut.pth'} could not be read as a PyTorch state dict (")
    assert "\n" not in message and "trust" not in message


def test_a_slide_whose_size_tags_lie_is_refused_on_opening(tmp_path):
    from stainlab.wsi.readers import open_slide

    path = tiff_bomb(tmp_path / "lying.tif")
    with pytest.raises(InputError) as err:
        open_slide(path)
    assert str(err.value) == (f"{path}: truncated or corrupt TIFF slide (60000x60000 in 60000x16 segments needs "
                              "3750, the file lists 1)")


@pytest.fixture
def unet_file(tmp_path):
    from stainlab.nets.files import save_model
    from stainlab.nets.unet import UNet

    return save_model(tmp_path / "unet.safetensors", UNet(base_channels=4), "unet", {"base_channels": 4})


@pytest.mark.parametrize("changes, match", [
    ({"kwargs": {"base_channels": 10**9}}, "base_channels=1000000000 is out of bounds"),
    ({"kwargs": {"base_channels": 8}}, "does not fit this network"),
    ({"kwargs": {"base_channels": 4, "rocket": True}}, "architecture unet: .*rocket"),
    ({"kwargs": {"base_channels": "x" * 1000}}, "text of 1,000 characters"),
    ({"kwargs": {"a": [[[[[1]]]]]}}, "nests deeper than 4"),
    ({"arch": "warp-drive"}, "unknown architecture 'warp-drive'"),
    ({"arch": 3}, "corrupt architecture header"),
])
def test_model_headers_are_checked_before_any_network_is_built(tmp_path, unet_file, changes, match):
    from hostile import with_header
    from stainlab.nets.files import load_model

    path = with_header(tmp_path / "lying.safetensors", unet_file, **changes)
    start = time.perf_counter()
    with pytest.raises(InputError, match=match) as err:
        load_model(path)
    assert time.perf_counter() - start < 2.0 and "\n" not in str(err.value)


def test_nan_weights_and_foreign_files_are_refused(tmp_path, unet_file):
    import torch
    from safetensors.torch import load_file, save_file

    import stainlab
    from stainlab.nets.files import METADATA_KEY, read_model_info

    state = load_file(str(unet_file))
    first = next(key for key, value in state.items() if value.is_floating_point())
    state[first][0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"), metadata={METADATA_KEY: json.dumps(read_model_info(unet_file))})
    with pytest.raises(InputError, match=f"NaN or infinite weights in {first}"):
        stainlab.load(f"unet:{tmp_path / 'nan.safetensors'}")
    (tmp_path / "cut.safetensors").write_bytes(unet_file.read_bytes()[:100])
    with pytest.raises(InputError, match="could not be read as safetensors"):
        stainlab.load(f"unet:{tmp_path / 'cut.safetensors'}")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(InputError, match="without stainlab's architecture header"):
        stainlab.load(f"unet:{tmp_path / 'foreign.safetensors'}")


@pytest.mark.parametrize("name, match", [("cuda", "device cuda: this torch is built without CUDA; use --device cpu|"
                                                  "device cuda: no CUDA GPU is visible"),
                                         ("warp", "device 'warp': not a torch device name"),
                                         ("mps", "device mps: not available on this machine")])
def test_unusable_devices_get_a_plain_reason(name, match):
    import torch

    from stainlab.nets.devices import torch_device

    if torch.cuda.is_available() and name == "cuda":
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match=match):
        torch_device(name)


def test_training_on_a_missing_gpu_is_one_line_from_the_command_line(tmp_path, capsys):
    import torch

    from stainlab.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for side in "AB":
        write_image(tmp_path / "data" / side / "x.png", he_image((64, 64), seed=1))
    assert main(["train", "cyclegan", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "run"), "--preset",
                 "tiny", "--device", "cuda"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stainlab: error: device cuda: ") and "--device cpu" in err[0]
