"""Reading and writing image files: every bad input a clear error, every conversion exact and noted."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from stainlab.errors import InputError
from stainlab.io import list_images, read_image, write_image


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _truncated_png(path, rgb):
    Image.fromarray(rgb).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_tiff(path, rgb):
    tifffile.imwrite(path, rgb, photometric="rgb")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "truncated.png": (_truncated_png, "truncated"),
    "truncated.tif": (_truncated_tiff, "truncated"),
    "notes.png": (lambda p, rgb: p.write_text("sample 12, stained 2024-01-03\n"), "not an image"),
    "empty.png": (lambda p, rgb: p.write_bytes(b""), "empty file"),
    "missing.png": (lambda p, rgb: None, "no such file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_raises_input_error_naming_file_and_writes_nothing(tmp_path, rgb, name):
    make, reason = BAD_FILES[name]
    path = tmp_path / name
    make(path, rgb)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(InputError) as err:
        read_image(path)
    assert str(path) in str(err.value) and reason in str(err.value)
    assert sorted(tmp_path.iterdir()) == before


def test_folder_and_unsupported_samples_are_refused(tmp_path, rgb):
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)
    five = tmp_path / "five-channel.tif"
    tifffile.imwrite(five, np.zeros((8, 8, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    with pytest.raises(InputError, match="unsupported image shape"):
        read_image(five)
    outside = tmp_path / "float.tif"
    tifffile.imwrite(outside, rgb.astype(np.float32), photometric="rgb")  # 0..255: ambiguous scale
    with pytest.raises(InputError, match=r"values from 0 to 255; expected \[0, 1\]"):
        read_image(outside)


def test_grayscale_is_replicated(tmp_path, rgb):
    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    image, notes = read_image(tmp_path / "g.png")
    assert image.shape == (24, 32, 3)
    assert all(np.array_equal(image[..., c], grey) for c in range(3))
    assert notes == ["grayscale, replicated to RGB"]


# 16-bit values and their 8-bit results with rounding x / 257: 128/257 = 0.498 -> 0, 129 -> 0.502 -> 1
SIXTEEN = np.array([0, 128, 129, 257, 32896, 65535], dtype=np.uint16)
EIGHT = np.array([0, 0, 1, 1, 128, 255], dtype=np.uint8)


def test_16bit_grey_png_is_scaled_with_rounding(tmp_path):
    values = np.tile(SIXTEEN, (4, 1))
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    image, notes = read_image(tmp_path / "g16.png")
    assert np.array_equal(image[..., 1], np.tile(EIGHT, (4, 1)))
    assert notes[0].startswith("16-bit, scaled to 8-bit") and notes[1] == "grayscale, replicated to RGB"


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_16bit_rgb_is_scaled_with_rounding(tmp_path, suffix):
    values = np.stack([SIXTEEN, SIXTEEN[::-1], np.full(6, 4000, np.uint16)], axis=-1)[None].repeat(3, 0)
    path = tmp_path / f"rgb16{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, values, photometric="rgb")
    else:
        import imagecodecs
        path.write_bytes(imagecodecs.png_encode(values))
    image, notes = read_image(path)
    assert np.array_equal(image[0, :, 0], EIGHT) and np.array_equal(image[0, :, 1], EIGHT[::-1])
    assert (image[..., 2] == 16).all()  # 4000 / 257 = 15.56
    assert notes == ["16-bit, scaled to 8-bit"]


def test_rgba_opaque_drops_alpha(tmp_path, rgb):
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image, notes = read_image(tmp_path / "a.png")
    assert np.array_equal(image, rgb)
    assert notes == ["alpha channel fully opaque, dropped"]


def test_rgba_transparent_is_composited_on_white(tmp_path):
    color = np.array([[[0, 0, 0], [200, 100, 50], [10, 20, 30]]], np.uint8)
    alpha = np.array([[0, 128, 255]], np.uint8)
    Image.fromarray(np.dstack([color, alpha])).save(tmp_path / "t.png")
    image, notes = read_image(tmp_path / "t.png")
    # c * a + 255 * (1 - a) with a = 128/255: 200 -> 227.39, 100 -> 177.20, 50 -> 152.10
    expected = np.array([[[255, 255, 255], [227, 177, 152], [10, 20, 30]]], np.uint8)
    assert np.array_equal(image, expected)
    assert notes == ["transparent pixels (66.7%), composited on white"]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_palette_image_gets_palette_colours(tmp_path, rgb, suffix):
    palette_image = Image.fromarray(rgb).quantize(colors=16)
    palette_image.save(tmp_path / f"p{suffix}")
    expected = np.asarray(palette_image.convert("RGB"))
    image, notes = read_image(tmp_path / f"p{suffix}")
    assert np.array_equal(image, expected) and len(np.unique(image.reshape(-1, 3), axis=0)) <= 16
    assert notes == ["palette image, converted to RGB"]


def test_min_is_white_tiff_is_inverted_back(tmp_path, rgb):
    tifffile.imwrite(tmp_path / "mw.tif", 255 - rgb[..., 0], photometric="miniswhite")
    image, notes = read_image(tmp_path / "mw.tif")
    assert np.array_equal(image[..., 0], rgb[..., 0]) and notes[0].startswith("inverted grey")


def test_float_tiff_in_unit_range_is_scaled(tmp_path, rgb):
    tifffile.imwrite(tmp_path / "f.tif", rgb.astype(np.float32) / 255, photometric="rgb")
    image, notes = read_image(tmp_path / "f.tif")
    assert np.array_equal(image, rgb)
    assert notes == ["float image in [0, 1], scaled to 8-bit"]


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_write_read_round_trip_is_exact(tmp_path, rgb, suffix):
    path = write_image(tmp_path / f"x{suffix}", rgb)
    image, notes = read_image(path)
    assert np.array_equal(image, rgb) and notes == []


def test_jpeg_round_trip_is_close(tmp_path):
    smooth = np.zeros((64, 64, 3), np.uint8)
    smooth[..., 0], smooth[..., 1], smooth[..., 2] = 200, np.arange(64)[:, None] * 2, 90
    image, _ = read_image(write_image(tmp_path / "x.jpg", smooth))
    assert np.abs(image.astype(int) - smooth).max() <= 3


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_channel_order_is_rgb_for_other_readers(tmp_path, suffix):
    """StainTools #6 saved BGR: a red patch must read back red with Pillow/tifffile themselves."""
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :8] = (220, 30, 30)
    image[:, 8:] = (30, 30, 220)
    path = write_image(tmp_path / f"x{suffix}", image)
    back = tifffile.imread(path) if suffix == ".tif" else np.asarray(Image.open(path).convert("RGB"))
    assert back[8, 2, 0] > 200 and back[8, 2, 2] < 50
    assert back[8, 13, 2] > 200 and back[8, 13, 0] < 50


def test_write_refuses_to_overwrite_unless_asked(tmp_path, rgb):
    path = write_image(tmp_path / "x.png", rgb)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="x.png: exists"):
        write_image(path, 255 - rgb)
    assert path.read_bytes() == before
    write_image(path, 255 - rgb, overwrite=True)
    assert np.array_equal(read_image(path)[0], 255 - rgb)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary files left behind


def test_write_suffix_rules(tmp_path, rgb):
    assert write_image(tmp_path / "plain", rgb) == tmp_path / "plain.png"
    with pytest.raises(InputError, match=r"cannot write '\.gif'"):
        write_image(tmp_path / "x.gif", rgb)
    with pytest.raises(InputError, match="expected uint8"):
        write_image(tmp_path / "f.png", rgb.astype(float))
    assert [p.name for p in tmp_path.iterdir()] == ["plain.png"]


def test_list_images(tmp_path, rgb):
    for name in ["b.png", "a.TIF", "c.jpeg", "notes.txt", ".x.png.part.png", "sub/d.bmp"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images([tmp_path])] == ["a.TIF", "b.png", "c.jpeg"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.TIF", "b.png", "c.jpeg", "d.bmp"]
    # explicit files are kept whatever their suffix (reading them says what is wrong), duplicates once
    assert list_images([tmp_path / "notes.txt", tmp_path / "b.png", tmp_path]) == sorted(
        [tmp_path / "notes.txt", tmp_path / "a.TIF", tmp_path / "b.png", tmp_path / "c.jpeg"])
    with pytest.raises(InputError, match="nowhere: no such file or folder"):
        list_images([tmp_path, tmp_path / "nowhere"])
