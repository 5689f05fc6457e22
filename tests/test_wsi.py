"""Slides: readers, whole-slide statistics, pyramidal output, resuming, bad input, the command line."""

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import data

import stainlab
from stainlab.cli import main
from stainlab.errors import InputError, NoTissueError
from stainlab.io.images import read_image, write_image
from stainlab.wsi.pyramid import TileStore, work_folder
from stainlab.wsi.readers import SLIDES_EXTRA, ImageSlide, TiffSlide, open_slide
from stainlab.wsi.normalize import SlideColorMap, SlideOptions, normalize_slide
from stainlab.metrics.pixel import ciede2000
from stainlab.transforms.base import Transform


@pytest.fixture(scope="module")
def tissue():
    """Real IHC tissue, 400 x 500 (not a multiple of the tile sizes used here)."""
    return np.ascontiguousarray(data.immunohistochemistry()[:400, :500])


@pytest.fixture(scope="module")
def reinhard(tissue):
    return stainlab.load("reinhard").fit(np.ascontiguousarray(data.immunohistochemistry()[400:, 400:]))


def write_pyramid_source(path, image, mpp=0.5, tile=64):
    """A tiled pyramidal OME-TIFF as a scanner would write it: level 0 plus two halved sub-IFDs."""
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(image, tile=(tile, tile), photometric="rgb", subifds=2, compression="zlib",
                  metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp})
        for k in (2, 4):
            tif.write(image[::k, ::k], tile=(tile, tile), photometric="rgb", subfiletype=1, compression="zlib")
    return Path(path)


def read_levels(path):
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels], tif


class TileMean(Transform):
    """Context-aware test transform (its output depends on the whole tile); ``crash_at`` (not a
    parameter, so not part of the job's identity) simulates a crash at that tile."""

    name = "tile-mean"
    requires_fit = False

    def __init__(self) -> None:
        super().__init__()
        self.crash_at = -1
        self.calls = 0

    def _transform(self, image):
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("simulated crash")
        f = image.astype(np.float32)
        return np.clip(0.8 * f + 0.2 * f.mean(axis=(0, 1)), 0, 255).astype(np.uint8)


class GlassTint(Transform):
    """Context-aware as a network is (so background tiles are not run through it), deterministic, and it
    tints every colour, glass included, by ``TINT``."""

    name = "glass-tint"
    requires_fit = False
    TINT = np.array([-30, 0, 8], np.int16)

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _transform(self, image):
        self.calls += 1
        return np.clip(image + self.TINT, 0, 255).astype(np.uint8)


# -- readers ---------------------------------------------------------------------------------------------
def test_tiff_pyramid_levels_mpp_and_regions(tmp_path, tissue):
    path = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    with open_slide(path) as slide:
        assert isinstance(slide, TiffSlide) and slide.kind == "ome-tiff"
        assert [(lv.height, lv.width) for lv in slide.levels] == [(400, 500), (200, 250), (100, 125)]
        assert [lv.mpp for lv in slide.levels] == pytest.approx([0.5, 1.0, 2.0])
        assert np.array_equal(slide.read(0, 50, 30, 100, 170), tissue[50:150, 30:200])  # spans 3x4 tiles
        assert np.array_equal(slide.read(1, 0, 0, 200, 250), tissue[::2, ::2])
        assert slide.level_for(mpp=0.9) == 1 and slide.level_for(mpp=3.0) == 2 and slide.level_for() == 0
        with pytest.raises(InputError, match=r"level 3 does not exist; levels are 0: 500x400"):
            slide.level_for(level=3)
        with pytest.raises(InputError, match="outside level 1"):
            slide.read(1, 150, 0, 100, 10)
        one_tile = slide.read(0, 64, 128, 64, 64, shared=True)  # exactly one stored tile: no copy, read-only
        assert np.array_equal(one_tile, tissue[64:128, 128:192]) and not one_tile.flags.writeable
        assert slide.read(0, 64, 128, 64, 64).flags.writeable and slide.read(0, 60, 128, 64, 64, shared=True).flags.writeable


def test_a_held_region_is_given_once_to_a_shared_read(tmp_path, tissue):
    path = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    with open_slide(path) as slide:
        held = np.zeros((100, 90, 3), np.uint8)
        slide.hold(0, 10, 20, held)
        private = slide.read(0, 10, 20, 100, 90)                      # a caller that may write: read anew
        assert np.array_equal(private, tissue[10:110, 20:110]) and private.flags.writeable
        assert not np.array_equal(slide.read(0, 10, 20, 100, 89, shared=True), held[:, :89])  # not the same box
        given = slide.read(0, 10, 20, 100, 90, shared=True)
        assert np.shares_memory(given, held) and not given.flags.writeable
        assert np.array_equal(slide.read(0, 10, 20, 100, 90, shared=True), tissue[10:110, 20:110])  # once only


def test_a_slide_reads_the_cores_sampled_for_its_statistics_once(tmp_path, tissue, reinhard, monkeypatch):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    reads = []
    original = TiffSlide._read
    monkeypatch.setattr(TiffSlide, "_read", lambda self, level, y, x, *rest: reads.append((level, y, x)) or
                        original(self, level, y, x, *rest))
    result = normalize_slide(src, tmp_path / "o.ome.tif", reinhard, SlideOptions(tile=128, min_tissue=0.0))
    cores = [(0, y, x) for y in range(0, 400, 128) for x in range(0, 500, 128)]
    level0 = [read for read in reads if read[0] == 0]  # besides, a band of level 2 shows where tissue is
    assert result.tiles == len(cores) == 16 and sorted(set(level0)) == cores and len(level0) == len(cores)


def test_an_empty_segment_reads_as_glass(tmp_path):
    path = tmp_path / "sparse.tif"
    tifffile.imwrite(path, np.full((128, 128, 3), 40, np.uint8), tile=(64, 64), photometric="rgb")
    with tifffile.TiffFile(path, mode="r+b") as tif:  # the first tile never written, as scanners leave glass
        tif.pages[0].tags["TileByteCounts"].overwrite((0, 12288, 12288, 12288))
    with open_slide(path) as slide:
        region = slide.read(0, 10, 20, 100, 90)
    assert (region[:54, :44] == 255).all() and (region[54:] == 40).all() and (region[:, 44:] == 40).all()


def test_strip_tiff_resolution_tags_and_plain_images(tmp_path, tissue):
    strips = tmp_path / "strips.tif"
    tifffile.imwrite(strips, tissue, photometric="rgb", rowsperstrip=37, resolution=(40000, 40000),
                     resolutionunit="CENTIMETER")
    with open_slide(strips) as slide:
        assert slide.mpp == pytest.approx(0.25)
        assert np.array_equal(slide.read(0, 30, 10, 90, 50), tissue[30:120, 10:60])
    png = write_image(tmp_path / "plain.png", tissue)
    with open_slide(png) as slide:
        assert isinstance(slide, ImageSlide) and slide.mpp is None and len(slide.levels) == 1
        with pytest.raises(InputError, match="gives no microns per pixel"):
            slide.level_for(mpp=0.5)


# -- whole-slide statistics ----------------------------------------------------------------------------------
def test_slide_color_map_equals_the_method_when_the_sample_is_the_image(tissue):
    t = stainlab.load("macenko", lut_bits=8).fit(np.ascontiguousarray(data.immunohistochemistry()[400:, 400:]))
    assert np.array_equal(SlideColorMap(t, [tissue])(tissue), t(tissue))


@pytest.mark.parametrize("name", ["macenko", "ruifrok", "linear-ot"])
def test_small_slides_map_linear_od_methods_by_the_kernel(tissue, name):
    """A small slide's map linear in optical density goes through the compiled per-pixel kernel (no
    table), within a level of the exact formula under the slide's statistics; a large slide's table
    agrees with it."""
    from stainlab.color.od import map_od_linear
    from stainlab.transforms.lut import to_uint8
    from stainlab.wsi.normalize import SMALL_SLIDE_TILES

    t = stainlab.load(name).fit(np.ascontiguousarray(data.immunohistochemistry()[400:, 400:]))
    kernel = SlideColorMap(t, [tissue], tiles=1)
    assert kernel.linear is not None and not hasattr(kernel, "table")
    out = kernel(tissue)
    exact = to_uint8(map_od_linear(tissue.reshape(-1, 3), *kernel.linear)).reshape(tissue.shape)
    assert np.abs(out.astype(int) - exact).max() <= 1 and (out != exact).mean() < 0.01
    table = SlideColorMap(t, [tissue], tiles=SMALL_SLIDE_TILES + 1)
    assert table.linear is None
    assert ciede2000(table(tissue), out) < 0.5


def test_per_pixel_output_is_independent_of_the_tile_size(tmp_path, tissue, reinhard):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    outs = [normalize_slide(src, tmp_path / f"o{tile}.ome.tif", reinhard,
                            SlideOptions(tile=tile, min_tissue=0.0, compression="zlib")) for tile in (64, 128)]
    a, b = (read_levels(o.output)[0][0] for o in outs)
    assert np.array_equal(a, b) and not np.array_equal(a, tissue)
    # one colour map for the whole slide: a core gets the same output as if mapped on its own
    assert np.array_equal(a[64:128, 64:128], SlideColorMap(reinhard, _sample_of(src))(tissue[64:128, 64:128]))


def _sample_of(src):
    from stainlab.wsi.tiling import TileGrid
    from stainlab.wsi.normalize import sample_tissue

    with open_slide(src) as slide:
        return sample_tissue(slide, 0, TileGrid(400, 500, 64, 0), 64)


# -- pyramidal output ------------------------------------------------------------------------------------------
def test_pyramidal_output_opens_with_the_right_levels_and_resolution(tmp_path, tissue, reinhard):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue, mpp=0.25)
    result = normalize_slide(src, tmp_path / "out" / "s.ome.tif", reinhard, SlideOptions(tile=64, level=1))
    assert (result.level, result.width, result.height, result.tiles) == (1, 250, 200, 16)
    levels, _ = read_levels(result.output)
    assert [lv.shape for lv in levels] == [(200, 250, 3), (100, 125, 3), (50, 63, 3)]
    with tifffile.TiffFile(result.output) as tif:
        assert tif.is_ome and tif.pages[0].is_tiled and tif.pages[0].tilewidth == 64
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata            # level 1 of a 0.25 um/px source
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 0.5)                  # pixels per centimetre
        assert len(tif.series) == 1 and len(tif.pages[0].subifds) == 2  # OME: one image, levels in SubIFDs
    with tifffile.TiffFile(result.output) as tif:                        # generic TIFF: levels in the chain
        tif.pages.useframes = False  # full pages, with their tags
        chain = [tif.pages[i] for i in range(len(tif.pages))]
        assert [(p.imagelength, p.is_tiled, p.subfiletype) for p in chain] == [(200, True, 0), (100, True, 1),
                                                                                (50, True, 1)]
        assert all(np.array_equal(p.asarray(), lv) for p, lv in zip(chain, levels))
    with open_slide(result.output) as back:
        assert back.mpp == pytest.approx(0.5) and len(back.levels) == 3
    assert not work_folder(result.output).exists()
    assert [p.name for p in result.output.parent.iterdir()] == ["s.ome.tif"]


def test_jpeg_tiles_are_encoded_once_in_the_layout_viewers_expect(tmp_path, tissue, reinhard):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    lossless = normalize_slide(src, tmp_path / "z.ome.tif", reinhard, SlideOptions(tile=64, compression="zlib"))
    jpeg = normalize_slide(src, tmp_path / "j.ome.tif", reinhard, SlideOptions(tile=64, quality=90))
    with tifffile.TiffFile(jpeg.output) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.YCBCR and tif.pages[0].compression == 7
        assert tif.pages[0].tags["YCbCrSubSampling"].value == (2, 2)
    for level, (z, j) in enumerate(zip(read_levels(lossless.output)[0], read_levels(jpeg.output)[0])):
        error = np.abs(z.astype(int) - j).mean()  # JPEG 90 (4:2:0) of the same pixels; finer texture below
        assert z.shape == j.shape and error < (2.0 if level == 0 else 4.0)


@pytest.mark.parametrize("shape", [(64, 64), (63, 37), (1, 1), (2, 7), (9, 2)])
def test_halving_is_the_rounded_mean_of_two_by_two_pixels_repeating_an_odd_edge(shape):
    from stainlab.wsi.pyramid import halve

    image = np.random.default_rng(3).integers(0, 256, (*shape, 3), dtype=np.uint8)
    padded = np.pad(image, ((0, shape[0] % 2), (0, shape[1] % 2), (0, 0)), mode="edge").astype(int)
    four = padded[0::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 0::2] + padded[1::2, 1::2]
    assert np.array_equal(halve(image), (four + 2) // 4)


def test_lower_levels_are_the_halved_levels_above_even_after_a_crash(tmp_path, tissue):
    from stainlab.wsi.pyramid import halve

    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0, compression="zlib")
    whole = read_levels(normalize_slide(src, tmp_path / "whole.ome.tif", TileMean(), options).output)[0]
    assert [lv.shape[:2] for lv in whole] == [(400, 500), (200, 250), (100, 125), (50, 63)]
    for above, below in zip(whole, whole[1:]):
        assert np.array_equal(below, halve(above))       # made from the rows above as they finished
    out = tmp_path / "o.ome.tif"
    for crash_at in (24, 33):  # in row 2 (its pair row 3 not done) and in row 3 (level 1 row 1 stored)
        crashing = TileMean()
        crashing.crash_at = crash_at
        with pytest.raises(RuntimeError):
            normalize_slide(src, out, crashing, options)
    resumed = read_levels(normalize_slide(src, out, TileMean(), options).output)[0]
    assert all(np.array_equal(a, b) for a, b in zip(resumed, whole))


def test_a_resumed_jpeg_pyramid_matches_an_uninterrupted_one(tmp_path, tissue):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0)  # JPEG tiles: rows a run did not see are decoded
    whole = read_levels(normalize_slide(src, tmp_path / "whole.ome.tif", TileMean(), options).output)[0]
    out = tmp_path / "o.ome.tif"
    crashing = TileMean()
    crashing.crash_at = 33  # in row 3: rows 0-2 stored, level 1 row 0 too, row 2 waits for its pair
    with pytest.raises(RuntimeError):
        normalize_slide(src, out, crashing, options)
    resumed = read_levels(normalize_slide(src, out, TileMean(), options).output)[0]
    assert np.array_equal(resumed[0], whole[0])        # the same tiles, encoded alike
    assert np.array_equal(resumed[1][:64], whole[1][:64])  # level 1's first row was stored before the crash
    for a, b in zip(resumed[1:], whole[1:]):  # rows made from a decoded JPEG row: within JPEG 90's error
        assert np.abs(a.astype(int) - b).mean() < 1.5


def test_threads_and_tiles_that_straddle_segments_change_nothing(tmp_path, tissue, reinhard, monkeypatch):
    import numba

    src = tmp_path / "s.tif"  # 48 px segments under 64 px tiles: most segments lie under several tiles
    tifffile.imwrite(src, tissue, tile=(48, 48), photometric="rgb", compression="zlib")
    decoded = []
    original = TiffSlide._decode
    monkeypatch.setattr(TiffSlide, "_decode", lambda self, page, index: decoded.append(index) or original(self, page, index))
    outs = []
    for threads in (1, 3):
        monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
        decoded.clear()
        result = normalize_slide(src, tmp_path / f"o{threads}.ome.tif", reinhard, SlideOptions(tile=64, compression="zlib"))
        outs.append(read_levels(result.output)[0][0])
        assert sorted(set(decoded)) == list(range(9 * 11)) and len(decoded) < 1.1 * 9 * 11  # each about once
    assert np.array_equal(outs[0], outs[1])
    assert np.array_equal(outs[0], SlideColorMap(reinhard, _sample_of(src))(tissue))


def test_openslide_reads_every_level_and_the_mpp(tmp_path, tissue, reinhard):
    try:
        import openslide
    except (ImportError, OSError) as err:  # OSError: the Python package without the OpenSlide library
        pytest.skip(f"OpenSlide is not installed ({err}); pip install openslide-python openslide-bin")
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue, mpp=0.25)
    result = normalize_slide(src, tmp_path / "out" / "s.ome.tif", reinhard, SlideOptions(tile=64))
    levels, _ = read_levels(result.output)
    with openslide.OpenSlide(str(result.output)) as slide:
        assert slide.level_dimensions == ((500, 400), (250, 200), (125, 100), (63, 50))
        assert slide.level_downsamples[:3] == pytest.approx((1, 2, 4))
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.25)
        for level, expected in enumerate(levels):  # the same pixels as the OME reader's levels
            rgba = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))
            assert np.array_equal(rgba[..., :3], expected)


# -- glass next to tissue -----------------------------------------------------------------------------------
def test_a_network_that_tints_glass_leaves_no_grid(tmp_path, tissue):
    image = tissue.copy()
    image[:, 200:] = np.random.default_rng(0).integers(236, 246, (400, 300, 3))  # uneven glass, right half
    src = write_image(tmp_path / "g.png", image)
    tint = GlassTint()
    result = normalize_slide(src, tmp_path / "g.ome.tif", tint, SlideOptions(tile=64, overlap=16, compression="zlib"))
    assert result.transformed == 7 * 4 and tint.calls < 7 * 8  # the glass columns 4-7 were not run through it
    out = read_levels(result.output)[0][0]
    assert np.array_equal(out, np.clip(image + GlassTint.TINT, 0, 255))  # tinted glass everywhere: no grid


# -- resuming ------------------------------------------------------------------------------------------------------
def test_a_crashed_run_resumes_from_the_rows_already_done(tmp_path, tissue):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0, compression="zlib")
    whole = normalize_slide(src, tmp_path / "whole.ome.tif", TileMean(), options)
    out = tmp_path / "resumed.ome.tif"
    crashing = TileMean()
    crashing.crash_at = 40                            # 7 rows x 8 columns: the 40th tile is in row 4
    with pytest.raises(RuntimeError, match="simulated crash"):
        normalize_slide(src, out, crashing, options)
    assert not out.exists() and work_folder(out).is_dir()
    again = TileMean()
    result = normalize_slide(src, out, again, options)
    assert result.resumed == 3 * 8                    # rows 0-2 were finished before the crash
    assert again.calls == 5 * 8                       # rows 2 (context for row 3) to 6, not all 56 tiles
    assert np.array_equal(read_levels(out)[0][0], read_levels(whole.output)[0][0])
    assert not work_folder(out).exists()


def test_a_store_of_another_job_is_not_reused(tmp_path, tissue, reinhard):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    out = tmp_path / "o.ome.tif"
    crashing = TileMean()
    crashing.crash_at = 20
    with pytest.raises(RuntimeError):
        normalize_slide(src, out, crashing, SlideOptions(tile=64, overlap=16, min_tissue=0.0))
    result = normalize_slide(src, out, reinhard, SlideOptions(tile=64, min_tissue=0.0))
    assert result.resumed == 0


def test_a_damaged_work_folder_is_detected_and_computed_again(tmp_path, tissue):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0, compression="zlib")
    whole = read_levels(normalize_slide(src, tmp_path / "whole.ome.tif", TileMean(), options).output)[0][0]
    out = tmp_path / "o.ome.tif"

    def crash():
        crashing = TileMean()
        crashing.crash_at = 40  # rows 0-2 are stored
        with pytest.raises(RuntimeError, match="simulated crash"):
            normalize_slide(src, out, crashing, options)

    crash()
    rows = sorted((work_folder(out) / "L0").glob("*.tiles"))
    assert len(rows) == 3
    rows[1].write_bytes(rows[1].read_bytes()[:100])  # cut short, as by a full disk or a lost write
    assert normalize_slide(src, out, TileMean(), options).resumed == 2 * 8  # rows 0 and 2 kept, row 1 redone
    assert np.array_equal(read_levels(out)[0][0], whole)
    out.unlink()
    crash()
    (work_folder(out) / "job.json").write_bytes(b'{"stainlab": "0.\xff')  # cut short, not even UTF-8
    assert normalize_slide(src, out, TileMean(), options).resumed == 0      # a store of no known job: emptied
    assert np.array_equal(read_levels(out)[0][0], whole)


def test_a_damaged_row_counts_as_missing_and_reading_it_names_the_file(tmp_path):
    store = TileStore(tmp_path / "work", {"job": 1})
    path = tmp_path / "work" / "L1" / "000000.tiles"
    for check in ("get", "has"):
        store.put(1, 0, [b"first tile", b"", b"third"])
        assert store.has(1, 0) and store.get(1, 0) == [b"first tile", b"", b"third"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte
        path.write_bytes(bytes(data))
        if check == "get":
            with pytest.raises(InputError, match=r"000000.tiles: damaged work file.*run again"):
                store.get(1, 0)
        else:
            assert not store.has(1, 0)
        assert not path.exists()  # removed, so the next run computes it again


# -- bad input -------------------------------------------------------------------------------------------------------
def test_truncated_slide_is_a_clear_error(tmp_path, tissue, reinhard, capfd):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    cut = tmp_path / "cut.tif"
    raw = src.read_bytes()
    cut.write_bytes(raw[:len(raw) // 3])
    with open_slide(cut) as slide:  # what tifffile logs about the damage becomes notes, not stderr lines
        assert any(note.startswith("tifffile: ") for note in slide.notes)
    with pytest.raises(InputError, match="cut.tif: truncated or corrupt"):
        normalize_slide(cut, tmp_path / "o.ome.tif", reinhard, SlideOptions(tile=64))
    assert capfd.readouterr().err == ""
    garbage = tmp_path / "bad.svs"
    garbage.write_bytes(b"II*\x00" + b"\xff" * 100)
    with pytest.raises(InputError, match="bad.svs: truncated or corrupt"):
        open_slide(garbage)


def test_vendor_format_without_openslide_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openslide", None)  # as if the extra were not installed
    mrxs = tmp_path / "case.mrxs"
    mrxs.write_bytes(b"not a tiff")
    with pytest.raises(InputError, match=r"case.mrxs: reading .mrxs slides needs OpenSlide.*stainlab\[slides\]"):
        open_slide(mrxs)
    other = tmp_path / "case.xyz"
    other.write_bytes(b"\x00\x01 vendor bytes")
    with pytest.raises(InputError, match="unsupported slide format") as err:
        open_slide(other)
    assert SLIDES_EXTRA in str(err.value)


def test_missing_level_no_tissue_and_unwritable_output(tmp_path, tissue, reinhard):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    with pytest.raises(InputError, match="level 5 does not exist"):
        normalize_slide(src, tmp_path / "a.ome.tif", reinhard, SlideOptions(tile=64, level=5))
    with pytest.raises(InputError, match="s.ome.tif: would replace its own input"):
        normalize_slide(src, src, reinhard, SlideOptions(tile=64))  # not "exists (use --overwrite...)"
    glass = write_image(tmp_path / "glass.png", np.full((200, 300, 3), 243, np.uint8))
    with pytest.raises(NoTissueError, match="glass.png: no tissue found at level 0"):
        normalize_slide(glass, tmp_path / "g.ome.tif", reinhard, SlideOptions(tile=64))
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(InputError, match="cannot write the work folder"):
        normalize_slide(src, blocker / "o.ome.tif", reinhard, SlideOptions(tile=64))
    with pytest.raises(InputError, match="multiple of 16"):
        SlideOptions(tile=100)


# -- command line ------------------------------------------------------------------------------------------------
def test_cli_normalizes_slides_and_reports_bad_ones(tmp_path, tissue, capsys):
    (tmp_path / "in").mkdir()
    src = write_pyramid_source(tmp_path / "in" / "a.ome.tif", tissue)
    write_image(tmp_path / "in" / "b.png", tissue[:200, :300])
    ref = write_image(tmp_path / "ref.png", np.ascontiguousarray(data.immunohistochemistry()[400:, 400:]))
    args = ["slide", str(tmp_path / "in"), "-m", "macenko", "-r", str(ref), "-o", str(tmp_path / "out"),
            "--tile", "64", "--workers", "1"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["a.ome.tif", "b.ome.tif"]
    assert "normalized 2 of 2 slides with macenko" in capsys.readouterr().out
    assert main(args) == 0 and "2 output(s) exist already" in capsys.readouterr().err
    (tmp_path / "in" / "c.tif").write_bytes(src.read_bytes()[:5000])
    assert main(args + ["--overwrite"]) == 1
    captured = capsys.readouterr()
    assert "c.tif: truncated or corrupt" in captured.err and "normalized 2 of 3 slides" in captured.out
    assert sum("c.tif" in line for line in captured.err.splitlines()) == 1  # one line, no tifffile log
    assert main(["slide", str(src), "-o", str(tmp_path / "x")]) == 1
    assert "choose the method" in capsys.readouterr().err
    plain = ["slide", str(src), "-m", "reinhard", "-r", str(ref), "-o", str(tmp_path / "plain"), "--format", "png",
             "--mpp", "1.1", "--tile", "64", "--compression", "zlib"]
    assert main(plain) == 0
    out, _ = read_image(tmp_path / "plain" / "a.png")
    assert out.shape == (200, 250, 3) and not np.array_equal(out, tissue[::2, ::2])  # level 1 (1.0 um/px)


def test_the_output_written_as_rows_finish_equals_one_written_from_the_store(tmp_path, tissue):
    src = write_pyramid_source(tmp_path / "s.ome.tif", tissue)
    options = SlideOptions(tile=64, overlap=16, min_tissue=0.0, compression="zlib")
    streamed = read_levels(normalize_slide(src, tmp_path / "a.ome.tif", TileMean(), options).output)[0]
    out = tmp_path / "b.ome.tif"
    crashing = TileMean()
    crashing.crash_at = 7 * 8  # the very last tile: the streamed file is abandoned
    with pytest.raises(RuntimeError, match="simulated crash"):
        normalize_slide(src, out, crashing, options)
    assert not list(tmp_path.glob(".b.ome.tif.*.part*"))  # no half-written output left behind
    resumed = normalize_slide(src, out, TileMean(), options)  # one row computed, the file written from the store
    levels = read_levels(resumed.output)[0]
    assert len(levels) == len(streamed) == 4 and all(np.array_equal(a, b) for a, b in zip(levels, streamed))


def test_a_streamed_output_holds_few_rows_in_memory_and_reads_the_rest_back(tmp_path):
    from stainlab.wsi.pyramid import StreamedPyramid, TileCodec

    codec = TileCodec("zlib", 16, 90)
    rows = [np.full((16, 16, 3), 10 * k, np.uint8) for k in range(20)]
    store = TileStore(tmp_path / "work", {"job": 1})
    stream = StreamedPyramid(tmp_path / "out.ome.tif", store, [(16 * 20, 16)], codec, None)
    try:
        for k in range(1, 20):  # the writer waits for row 0 meanwhile
            tiles = [codec.encode(rows[k])]
            store.put(0, k, tiles)
            stream.stored(0, k, tiles)
        held = [tiles for tiles in stream._handed.values() if tiles is not None]
        assert len(stream._handed) == 19 and len(held) == 8  # level-0 rows kept in memory
        store.put(0, 0, [codec.encode(rows[0])])
        stream.stored(0, 0, [codec.encode(rows[0])])
    except BaseException:
        stream.stop()
        raise
    stream.finish()
    assert np.array_equal(tifffile.imread(tmp_path / "out.ome.tif"), np.concatenate(rows))


def test_the_sample_is_strided_over_its_tiles_as_if_they_were_joined():
    from stainlab.transforms.small import strided_pixels
    from stainlab.wsi.normalize import tile_pool

    rng = np.random.default_rng(1)
    tiles = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in [(5, 7), (3, 3), (10, 2), (1, 1)]]
    joined = np.concatenate([tile.reshape(-1, 3) for tile in tiles])
    with tile_pool(2) as pool:
        for most, step in ((1, 65), (7, 11), (20, 5), (40, 3), (1000, 1)):  # 65 pixels: odd steps, at most `most`
            got = strided_pixels(tiles, most)
            assert np.array_equal(got[:, 0], joined[::step]) and got.flags.c_contiguous
            assert len(got) <= most
            assert np.array_equal(strided_pixels(tiles, most, pool), got)  # picked image by image in threads


def test_cores_a_small_level_shows_as_glass_are_not_sampled(tmp_path, tissue):
    from stainlab.wsi.normalize import _likely_tissue
    from stainlab.wsi.tiling import TileGrid, tissue_fraction

    image = tissue.copy()
    image[:, 260:] = 255  # glass on the right
    image[150:170, 300:330] = tissue[150:170, 300:330]  # and a speck of tissue in it
    with open_slide(write_pyramid_source(tmp_path / "s.ome.tif", image)) as slide:
        grid = TileGrid(400, 500, 64, 0)
        order = np.random.default_rng(0).permutation(len(grid))
        thumb = slide.read(2, 0, 0, 100, 125)  # the smallest level, a quarter of the size

        def fraction(index):  # of the core's pixels on that level, one at least
            core = grid.core(*divmod(int(index), grid.cols))
            return tissue_fraction(thumb[core.y0 // 4:max(core.y1 // 4, core.y0 // 4 + 1),
                                         core.x0 // 4:max(core.x1 // 4, core.x0 // 4 + 1)])

        for min_tissue in (0.05, 0.3):
            want = [i for i in order if fraction(i) >= min_tissue]
            kept = _likely_tissue(slide, 0, grid, order, min_tissue)
            assert list(kept) == want and 0 < len(kept) < len(order)


def test_a_slides_decoders_are_made_when_it_is_opened(tmp_path, tissue):
    """tifffile makes a page's decoder on first use, peeking at a JPEG file without its lock: made by the
    reading threads at once, it moved the file position under another thread's read, which then failed
    as corrupt data now and then. The decoders are made before any thread reads."""
    path = tmp_path / "s.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(tissue, tile=(64, 64), photometric="rgb", subifds=1, compression="jpeg")
        tif.write(tissue[::2, ::2], tile=(64, 64), photometric="rgb", subfiletype=1, compression="jpeg")
    with open_slide(path) as slide:
        assert len(slide._pages) == 2 and all("decode" in vars(page) for page in slide._pages)


def test_occupied_cells_are_the_cells_of_every_pixel():
    from stainlab.transforms.lut import occupied_cells
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (40, 50 + k, 3), dtype=np.uint8) for k in range(5)]
    for bits in (5, 7):
        shift = 8 - bits
        expected = np.unique(np.concatenate([((im[..., 0].astype(np.int64) >> shift) << (2 * bits))
                                             | ((im[..., 1].astype(np.int64) >> shift) << bits)
                                             | (im[..., 2].astype(np.int64) >> shift) for im in images], axis=None))
        assert np.array_equal(occupied_cells(images, bits), expected)


def test_a_segment_asked_by_several_threads_at_once_is_decoded_once():
    """Neighbouring tiles share the segments under their border: threads that ask for one at once wait
    for the first thread's decoding; a decoder error reaches every one of them."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from stainlab.wsi.readers import RecentSegments

    recent, calls, lock = RecentSegments(), [], threading.Lock()

    def decode():
        with lock:
            calls.append(1)
        time.sleep(0.05)
        return np.zeros((4, 4, 3), np.uint8), "box"

    with ThreadPoolExecutor(4) as pool:
        values = list(pool.map(lambda _: recent.fetch(("L0", 7), decode), range(4)))
    assert len(calls) == 1 and all(value is values[0] for value in values)
    assert recent.fetch(("L0", 7), decode) is values[0] and len(calls) == 1   # then kept

    def broken():
        time.sleep(0.05)
        raise InputError("segment 8 is corrupt")

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(recent.fetch, ("L0", 8), broken) for _ in range(3)]
    for future in futures:
        with pytest.raises(InputError, match="segment 8 is corrupt"):
            future.result()
    recent.fetch(("L0", 8), decode)   # a failure is not kept: the next ask decodes anew
    assert len(calls) == 2
