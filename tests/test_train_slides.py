"""Training tiles drawn straight from whole slides (issue 14): windows on tissue at a chosen level."""

import pickle

import numpy as np
import pytest
import tifffile

import stainlab.training.slide_tiles as slide_tiles
import stainlab.wsi.references as references
from stainlab.errors import InputError
from stainlab.training.data import TileSampler
from stainlab.training.slide_tiles import SlideDomain, slide_files
from stainlab.wsi.readers import open_slide
from stainlab.wsi.tiling import tissue_fraction

SIZE = 64


def half_glass(shape=(512, 768), seed=0):
    """Random tissue-dark pixels on the left half, random glass-bright ones on the right."""
    rng = np.random.default_rng(seed)
    image = rng.integers(225, 256, (*shape, 3), dtype=np.uint8)
    image[:, :shape[1] // 2] = rng.integers(40, 170, (shape[0], shape[1] // 2, 3), dtype=np.uint8)
    return image


def write_slide(path, image, mpp=0.5, levels=3, tile=64):
    """A tiled pyramidal OME-TIFF as the slide tests write them: level 0 and halved sub-IFDs."""
    metadata = {"axes": "YXS", **({"PhysicalSizeX": mpp, "PhysicalSizeY": mpp} if mpp else {})}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(image, tile=(tile, tile), photometric="rgb", subifds=levels - 1, compression="zlib",
                  metadata=metadata)
        for k in range(1, levels):
            tif.write(image[::2**k, ::2**k], tile=(tile, tile), photometric="rgb", subfiletype=1,
                      compression="zlib")
    return path


@pytest.fixture(scope="module")
def image():
    return half_glass()


@pytest.fixture(scope="module")
def slide_path(image, tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("slides") / "half.ome.tif", image)


def draws(domain, seed, count=40, index=0):
    rng = np.random.default_rng(seed)
    return [domain.window(rng, index, SIZE) for _ in range(count)]


def test_windows_land_on_tissue_and_crops_are_the_slides_pixels(slide_path, image):
    domain = SlideDomain([slide_path], "A", min_tissue=0.5)
    assert len(domain) == 1 and domain.shape(0) == (512, 768) and domain.label(0) == "half.ome.tif"
    windows = draws(domain, 0)
    fractions = []
    with open_slide(slide_path) as slide:
        for top, left in windows:
            crop = domain.crop(0, (top, left), SIZE)
            assert crop.dtype == np.uint8 and crop.shape == (SIZE, SIZE, 3)
            np.testing.assert_array_equal(crop, slide.read(0, top, left, SIZE, SIZE))
            np.testing.assert_array_equal(crop, image[top:top + SIZE, left:left + SIZE])
            fractions.append(tissue_fraction(crop))
    assert min(fractions) >= 0.35   # at least half tissue, less at most a grid step's shift (1/8 of a side)
    assert np.mean(fractions) >= 0.8 and tissue_fraction(image) == pytest.approx(0.5, abs=0.01)
    assert len(set(windows)) > 30


def test_the_same_seed_draws_the_same_windows(slide_path):
    one, other = SlideDomain([slide_path], "A"), SlideDomain([slide_path], "A")
    assert draws(one, 7) == draws(other, 7)
    assert draws(one, 7) != draws(one, 8)


@pytest.mark.parametrize("choice", [{"level": 1}, {"mpp": 1.0}, {"mpp": 1.3}])
def test_level_or_mpp_reads_that_level(slide_path, image, choice):
    domain = SlideDomain([slide_path], "A", **choice)
    assert domain.level_of(0) == 1 and domain.shape(0) == (256, 384)
    level1 = image[::2, ::2]
    for top, left in draws(domain, 1, count=10):
        np.testing.assert_array_equal(domain.crop(0, (top, left), SIZE), level1[top:top + SIZE, left:left + SIZE])
        assert tissue_fraction(level1[top:top + SIZE, left:left + SIZE]) >= 0.35


def test_a_target_mpp_on_a_slide_without_one_names_the_file(image, tmp_path):
    path = write_slide(tmp_path / "nompp.ome.tif", image, mpp=None)
    with pytest.raises(InputError, match="nompp.ome.tif.*microns per pixel"):
        SlideDomain([path], "A", mpp=0.5).shape(0)
    with pytest.raises(InputError, match="level 5 does not exist"):
        SlideDomain([path], "A", level=5).shape(0)


def test_the_domain_pickles_after_use_and_draws_the_same(slide_path):
    domain = SlideDomain([slide_path], "A")
    before = draws(domain, 3)
    domain.crop(0, before[0], SIZE)
    clone = pickle.loads(pickle.dumps(domain))
    assert draws(clone, 3) == before
    np.testing.assert_array_equal(clone.crop(0, before[0], SIZE), domain.crop(0, before[0], SIZE))
    fresh = pickle.loads(pickle.dumps(SlideDomain([slide_path], "A")))  # nothing opened yet
    assert draws(fresh, 3) == before


def test_a_slide_without_tissue_or_too_small_is_one_line_naming_the_file(tmp_path):
    glass = write_slide(tmp_path / "glass.ome.tif", np.full((256, 256, 3), 240, np.uint8))
    with pytest.raises(InputError, match="glass.ome.tif: no tissue") as caught:
        SlideDomain([glass], "A").window(np.random.default_rng(0), 0, SIZE)
    assert "\n" not in str(caught.value)
    small = write_slide(tmp_path / "small.ome.tif", half_glass((96, 128)), levels=2, tile=32)
    with pytest.raises(InputError, match=r"small.ome.tif: level 1 \(64x48\) is smaller than the training tile"):
        SlideDomain([small], "A", level=1).window(np.random.default_rng(0), 0, SIZE)
    with pytest.raises(InputError, match="no slides"):
        SlideDomain([], "A")


def test_a_slide_without_small_levels_is_scanned_in_strided_blocks(image, tmp_path, monkeypatch):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image, tile=(64, 64), photometric="rgb")
    monkeypatch.setattr(slide_tiles, "THUMBNAIL_SIDE", 100)      # read every 8th pixel
    monkeypatch.setattr(slide_tiles, "_BLOCK_PIXELS", 768 * 40)  # in blocks of 40 rows
    domain = SlideDomain([path], "A")
    for top, left in draws(domain, 0, count=20):
        assert tissue_fraction(domain.crop(0, (top, left), SIZE)) >= 0.35


def test_only_a_few_slides_stay_open(image, tmp_path):
    paths = [write_slide(tmp_path / f"s{k}.ome.tif", half_glass(seed=k), levels=1) for k in range(3)]
    domain = SlideDomain(paths, "A", open_slides=2)
    rng = np.random.default_rng(0)
    crops = [domain.crop(i, domain.window(rng, i, SIZE), SIZE) for i in (0, 1, 2, 0)]
    assert len(domain._open) == 2 and sorted(domain._open) == [0, 2]
    np.testing.assert_array_equal(crops[0], domain.crop(0, domain.window(np.random.default_rng(0), 0, SIZE), SIZE))
    domain.close()
    assert not domain._open


def test_slide_domains_feed_the_tile_sampler(slide_path, image, tmp_path):
    other = write_slide(tmp_path / "b.ome.tif", half_glass(seed=5))
    sampler = TileSampler(SlideDomain([slide_path], "A", level=1), SlideDomain([other, slide_path], "B"), SIZE,
                          paired=False)
    batch = sampler.draw(np.random.default_rng(0), 4)
    for key in "AB":
        assert batch[key].shape == (4, 3, SIZE, SIZE) and batch[key].dtype.is_floating_point
        assert -1.0 <= float(batch[key].min()) and float(batch[key].max()) <= 1.0
    again = pickle.loads(pickle.dumps(sampler)).draw(np.random.default_rng(0), 4)
    assert all((again[key] == batch[key]).all() for key in "AB")


def test_slide_files_tells_the_whole_slides_in_a_folder(image, tmp_path, monkeypatch):
    monkeypatch.setattr(references, "REFERENCE_SAMPLE_SIDE", 300)  # a TIFF larger than this is a slide
    write_slide(tmp_path / "big.ome.tif", image)
    tifffile.imwrite(tmp_path / "tile.tif", image[:200, :200], photometric="rgb")
    (tmp_path / "scan.ndpi").write_bytes(b"II*\x00")
    (tmp_path / "notes.txt").write_text("not a slide")
    (tmp_path / ".partial.svs").write_bytes(b"")
    assert [p.name for p in slide_files(tmp_path)] == ["big.ome.tif", "scan.ndpi"]
