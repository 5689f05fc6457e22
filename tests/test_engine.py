"""The colour-histogram LUT engine and the colour maths under every per-pixel method."""

import numpy as np
import pytest
from skimage import color as skcolor

import stainlab
from stainlab.color.lab import lab_to_rgb, rgb_to_lab
from stainlab.color.od import od_to_rgb, rgb_to_od
from stainlab.color.stats import weighted_mean_std, weighted_percentile
from stainlab.color.tissue import tissue_mask
from stainlab.transforms.lut import ColorHistogram, LatticeTable
from synth import he_image


def test_histogram_counts_every_pixel_in_its_cell():
    img = he_image(seed=3)
    for bits in (6, 7, 8):
        hist = ColorHistogram.of(img, bits)
        px = img.reshape(-1, 3).astype(np.int64) >> (8 - bits)
        cells = (px[:, 0] << (2 * bits)) | (px[:, 1] << bits) | px[:, 2]
        want_cells, want_counts = np.unique(cells, return_counts=True)
        order = np.argsort(hist.cells)
        np.testing.assert_array_equal(hist.cells[order], want_cells)
        np.testing.assert_array_equal(hist.counts[order], want_counts)
        assert hist.counts.sum() == img.shape[0] * img.shape[1]


def test_histogram_buffers_are_reset_between_images():
    a, b = he_image(seed=4), np.full((30, 40, 3), 200, np.uint8)
    ColorHistogram.of(a)
    hist = ColorHistogram.of(b)
    assert hist.counts.tolist() == [1200.0]


def test_histogram_colours_are_the_mean_colour_of_each_cell():
    img = he_image(seed=12)
    px = img.reshape(-1, 3).astype(np.int64)
    for bits in (6, 7, 8):
        hist = ColorHistogram.of(img, bits)
        q = px >> (8 - bits)
        cells = (q[:, 0] << (2 * bits)) | (q[:, 1] << bits) | q[:, 2]
        for k in range(0, len(hist.cells), 97):
            np.testing.assert_allclose(hist.colors[k], px[cells == hist.cells[k]].mean(axis=0), atol=1e-9)
    white = ColorHistogram.of(np.full((4, 5, 3), 255, np.uint8), 7)
    assert white.colors.tolist() == [[255.0, 255.0, 255.0]]


def test_coarsened_histogram_pools_cells():
    img = he_image(seed=13)
    fine, direct = ColorHistogram.of(img, 7).coarsened(5), ColorHistogram.of(img, 5)
    order_a, order_b = np.argsort(fine.cells), np.argsort(direct.cells)
    np.testing.assert_array_equal(fine.cells[order_a], direct.cells[order_b])
    np.testing.assert_array_equal(fine.counts[order_a], direct.counts[order_b])
    np.testing.assert_allclose(fine.colors[order_a], direct.colors[order_b], atol=1e-9)


def test_large_images_are_counted_in_blocks(monkeypatch):
    from stainlab.transforms import lut
    img = he_image(seed=14)
    whole = ColorHistogram.of(img)
    monkeypatch.setattr(lut, "_MAX_PASS_PIXELS", 5000)
    blocks = ColorHistogram.of(img)
    order_a, order_b = np.argsort(whole.cells), np.argsort(blocks.cells)
    np.testing.assert_array_equal(whole.cells[order_a], blocks.cells[order_b])
    np.testing.assert_array_equal(whole.counts[order_a], blocks.counts[order_b])
    np.testing.assert_allclose(whole.colors[order_a], blocks.colors[order_b], atol=1e-9)


def test_merge_pools_counts():
    a, b = he_image(seed=5), he_image(seed=6)
    merged = ColorHistogram.merge([ColorHistogram.of(a, 8), ColorHistogram.of(b, 8)])
    both = ColorHistogram.of(np.concatenate([a, b], axis=0), 8)
    order = np.argsort(both.cells)
    np.testing.assert_array_equal(merged.cells, both.cells[order])
    np.testing.assert_array_equal(merged.counts, both.counts[order])


def test_weighted_statistics_equal_unweighted_of_repeated_values():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200)
    weights = rng.integers(1, 6, size=200)
    repeated = np.repeat(values, weights)
    q = [0, 1, 37.5, 50, 99, 100]
    np.testing.assert_allclose(weighted_percentile(values, q, weights), np.percentile(repeated, q), atol=1e-12)
    mean, std = weighted_mean_std(values[:, None], weights)
    np.testing.assert_allclose([mean[0], std[0]], [repeated.mean(), repeated.std()], atol=1e-12)


def test_lab_matches_scikit_image_and_round_trips():
    rgb = np.random.default_rng(1).uniform(0, 255, (5000, 3))
    lab = rgb_to_lab(rgb)
    np.testing.assert_allclose(lab, skcolor.rgb2lab(rgb[:, None] / 255)[:, 0], atol=1e-3)
    np.testing.assert_allclose(lab_to_rgb(lab), rgb, atol=1e-6)


def test_optical_density_is_finite_non_negative_and_inverts():
    rgb = np.array([[0, 0, 0], [255, 255, 255], [12, 130, 250]], dtype=np.uint8)
    od = rgb_to_od(rgb)
    assert np.isfinite(od).all() and (od >= 0).all()
    assert od[1].tolist() == [0, 0, 0]
    np.testing.assert_allclose(od_to_rgb(od), rgb, atol=1e-9)


@pytest.mark.parametrize("bits, bound", [(7, 0.5), (6, 1.0)])
def test_lut_path_close_to_exact_path(bits, bound):
    """The issue's bound: mean CIEDE2000 between the LUT and exact paths under 0.5 at the default
    lattice, for H&E normalized to H&E of another staining (the error grows with the map's gain)."""
    ref = he_image(shape=(200, 200), seed=7)
    src = he_image(shape=(200, 200), seed=11, stains=([0.55, 0.75, 0.37], [0.15, 0.95, 0.25]), scale=(1.5, 0.7))
    t = stainlab.load("reinhard", lut_bits=bits).fit(ref)
    fast, exact = t(src), t.transform(src, exact=True)
    de = skcolor.deltaE_ciede2000(skcolor.rgb2lab(fast), skcolor.rgb2lab(exact))
    assert de.mean() < bound


def test_lut_at_8_bits_equals_exact_path(ihc_image):
    t = stainlab.load("reinhard", lut_bits=8).fit(he_image(seed=8))
    np.testing.assert_array_equal(t(ihc_image), t.transform(ihc_image, exact=True))


@pytest.mark.parametrize("bits", [5, 8])
def test_lattice_table_maps_each_cell_at_its_centre_and_keeps_flagged_cells(bits):
    img = he_image(seed=6)
    shift = 8 - bits
    table = LatticeTable(bits, lambda colors: (np.clip(255 - colors, 0, 255).astype(np.uint8), colors[:, 0] > 200))
    out = table(img)
    centre = (img.astype(np.int64) >> shift << shift) + ((1 << shift) - 1) / 2.0
    want = np.clip(255 - centre, 0, 255).astype(np.uint8)
    keep = centre[..., 0] > 200
    want[keep] = img[keep]
    assert keep.any() and (~keep).any()
    np.testing.assert_array_equal(out, want)


def test_lattice_table_evaluates_only_the_cells_images_need_each_once_from_any_thread():
    from concurrent.futures import ThreadPoolExecutor

    asked = []

    def rows(colors):
        asked.append(len(colors))
        return np.clip(255 - colors, 0, 255).astype(np.uint8), None

    table = LatticeTable(7, rows)
    images = [he_image(seed=s) for s in (6, 7, 8, 9)]
    with ThreadPoolExecutor(4) as pool:  # cells are filled under a lock while other threads gather
        outs = list(pool.map(lambda image: table(image, parallel=False), images))
    cells = np.unique(np.concatenate([(im.reshape(-1, 3).astype(np.int64) >> 1) @ [1 << 14, 1 << 7, 1] for im in images]))
    assert sum(asked) == len(cells) < len(table.table) // 10   # each cell needed once, not the whole lattice
    eager = LatticeTable(7, rows)
    eager.prepare(np.arange(len(eager.table)))
    for image, out in zip(images, outs):
        np.testing.assert_array_equal(out, eager(image))        # the map the whole lattice gives
    assert table(images[0]) is not None and sum(asked) == len(cells) + len(eager.table)  # nothing new to evaluate


@pytest.mark.parametrize("name", ["linear-ot", "macenko", "ruifrok"])
@pytest.mark.parametrize("bits", [6, 7, 8])
def test_a_table_linear_in_optical_density_is_filled_with_the_values_of_the_generic_map(name, bits):
    """The compiled fill of maps that are one matrix in optical density gives every cell the bytes the
    generic evaluation gives (under a beige light, so the light terms are not all zero), lazily too."""
    reference, image = he_image(seed=11), he_image(seed=12)
    image = np.minimum(image.astype(np.int64) * [236, 228, 214] // 255, 255).astype(np.uint8)  # beige glass
    t = stainlab.load(name, lut_bits=bits).fit(reference)
    source = t.source_of(ColorHistogram.of(image, bits))
    assert t.linear_od_map(source) is not None
    generic = LatticeTable(bits, lambda colors: t.color_table(colors, source))
    generic.prepare()
    linear = LatticeTable(bits, linear=t.linear_od_map(source))
    lazy = linear(image)  # only the image's cells so far
    linear.prepare()
    np.testing.assert_array_equal(linear.table, generic.table)
    np.testing.assert_array_equal(lazy, generic(image))


@pytest.mark.parametrize("mask", [False, True])
def test_a_whole_table_gathers_without_testing_flags_only_when_no_cell_keeps_its_pixels(mask):
    """A table evaluated whole with no cell that keeps its pixels is gathered by the plain kernel, with
    the bytes the flag-testing gather gives; with kept cells (masked glass) the flags are still tested."""
    from stainlab.transforms.lut import _gather_range

    reference, image = he_image(seed=11), he_image(seed=12)
    t = stainlab.load("reinhard", mask=mask, lut_bits=6).fit(reference)
    source = t.source_of(ColorHistogram.of(image, 6))
    table = LatticeTable(6, lambda colors: t.color_table(colors, source))
    table.prepare()
    assert table._plain is not mask
    careful = np.empty_like(image)
    assert _gather_range(image.reshape(-1), 0, image.size // 3, 6, table.table, careful.reshape(-1)) == -1
    np.testing.assert_array_equal(table(image), careful)
    np.testing.assert_array_equal(table(image, parallel=False), careful)
    if mask:
        glass = ~tissue_mask(image.astype(float))
        assert glass.any() and np.array_equal(careful[glass], image[glass])


@pytest.mark.parametrize("bits", [4, 7, 8])
def test_the_gathers_find_each_pixels_cell_across_chunks_and_stop_at_the_first_cell_not_ready(bits):
    """The gathers work cells out by shifts a chunk at a time: every pixel of a range that starts and ends
    inside chunks gets the word of its ``cell_index`` cell, and the flag-testing gather stops at the
    first pixel (from its start) whose cell is not evaluated."""
    from stainlab.transforms.lut import _GATHER_CHUNK, _NOT_READY, _gather_range, cell_index

    pixels = np.random.default_rng(bits).integers(0, 256, (3 * _GATHER_CHUNK + 77, 3), dtype=np.uint8)
    index = cell_index(bits)
    cells = index[0, pixels[:, 0]] | index[1, pixels[:, 1]] | index[2, pixels[:, 2]]
    table = np.arange(1 << (3 * bits), dtype=np.uint32) & 0xFFFFFF  # each cell's word spells its own index
    start, stop = 5, len(pixels) - 3
    for plain in (False, True):
        out = np.zeros_like(pixels)
        assert _gather_range(pixels.reshape(-1), start, stop, bits, table, out.reshape(-1), plain) == -1
        found = out[:, 0].astype(np.int64) | out[:, 1].astype(np.int64) << 8 | out[:, 2].astype(np.int64) << 16
        np.testing.assert_array_equal(found[start:stop], cells[start:stop])
        assert not out[:start].any() and not out[stop:].any()
    table[cells[2 * _GATHER_CHUNK + 9]] |= np.uint32(_NOT_READY << 24)
    first = start + int(np.argmax(cells[start:stop] == cells[2 * _GATHER_CHUNK + 9]))
    assert _gather_range(pixels.reshape(-1), start, stop, bits, table, np.zeros(pixels.size, np.uint8)) == first


def test_bad_lut_bits_rejected():
    with pytest.raises(ValueError, match="lut_bits"):
        stainlab.load("reinhard", lut_bits=9)
