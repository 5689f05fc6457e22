"""The small-image path (tiles of a training pipeline): its compiled kernels against the formulas they
replace, and its outputs against the exact per-pixel path."""

import warnings

import numpy as np
import pytest

import stainlab
from stainlab.color import lab_pixels as lp
from stainlab.color import pixels as px
from stainlab.color.lab import lab_to_rgb, rgb_to_lab
from stainlab.color.od import map_od_linear, rgb_to_od
from stainlab.color.tissue import tissue_mask
from stainlab.metrics.pixel import ciede2000
from stainlab.transforms import base, lut, small
from stainlab.transforms.channels import split_pixels
from stainlab.transforms.lut import to_uint8
from stainlab.transforms.reinhard_split import tissue_weight
from synth import he_image


@pytest.fixture(scope="module")
def random_pixels():
    return np.random.default_rng(0).integers(0, 256, (60_000, 3)).astype(np.uint8)


def off_by_one_at_most(got, expected, share):
    """Every value within one level of the formula's rounding, and at most ``share`` of them off."""
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1
    assert (diff > 0).mean() <= share


def test_od_linear_is_the_formula_rounded(random_pixels):
    """The kernel's factor tables reproduce the formula: off only where rounding ties (a few in a million)."""
    matrix = np.array([[1.1, 0.1, -0.05], [0.05, 0.9, 0.1], [0.0, 0.2, 1.2]])
    expected = to_uint8(map_od_linear(random_pixels.astype(float), matrix))
    off_by_one_at_most(px.od_linear(random_pixels, matrix), expected, 1e-4)
    light, light_out = np.array([230.0, 222.0, 240.0]), np.array([236.0, 229.0, 219.0])
    expected = to_uint8(map_od_linear(random_pixels.astype(float), matrix, light, light_out))
    off_by_one_at_most(px.od_linear(random_pixels, matrix, light, light_out), expected, 1e-4)


def test_od_tables_are_rgb_to_ods_values():
    """The per-light optical-density table (built in place, a tile's light being new each time) holds
    exactly :func:`rgb_to_od`'s values; one light value stands for all three channels."""
    rng = np.random.default_rng(4)
    for light in [*rng.uniform(1.0, 255.0, (20, 3)), np.array([255.0, 255.0, 255.0])]:
        for clip in (True, False):
            expected = rgb_to_od(np.arange(256.0)[:, None], light, clip).T
            np.testing.assert_array_equal(px.od_table(light, clip), expected)
        np.testing.assert_array_equal(px.tissue_limits(0.15, light),
                                      (rgb_to_od(np.arange(256.0)[:, None], light) > 0.15).sum(axis=0))
    np.testing.assert_array_equal(px.od_table(240.0), px.od_table([240.0, 240.0, 240.0]))


def test_lab_affine_is_the_formula_rounded_and_keeps_glass(random_pixels):
    gain, offset = np.array([1.1, 0.9, 1.2]), np.array([-3.0, 2.0, 5.0])
    lab = rgb_to_lab(random_pixels.astype(float))
    expected = to_uint8(lab_to_rgb(lab * gain + offset))
    off_by_one_at_most(lp.lab_affine(random_pixels, gain, offset), expected, 0.005)
    limit = px.tissue_limit(0.15)
    kept = lp.lab_affine(random_pixels, gain, offset, limit)
    glass = random_pixels.min(axis=1) >= limit
    assert glass.any() and (kept[glass] == random_pixels[glass]).all()
    assert (kept[~glass] == lp.lab_affine(random_pixels, gain, offset)[~glass]).all()


def test_lab_affine_blends_toward_the_glass_shift_by_tissue_weight(random_pixels):
    """reinhard-split's kernel: ``w (lab gain + offset) + (1 - w) (lab + shift)``, ``w`` the smoothstep of
    the largest optical density against the light from beta / 2 to 1.5 beta."""
    gain, offset, shift = np.array([1.1, 0.9, 1.2]), np.array([-3.0, 2.0, 5.0]), np.array([2.0, -1.5, 3.0])
    light, beta = np.array([236.0, 229.0, 242.0]), 0.15
    lab = rgb_to_lab(random_pixels.astype(float))
    weight = tissue_weight(rgb_to_od(random_pixels, light), beta)[:, None]
    expected = to_uint8(lab_to_rgb(lab + shift + weight * (lab * gain + offset - lab - shift)))
    off_by_one_at_most(lp.lab_affine(random_pixels, gain, offset, glass=(shift, light, beta)), expected, 0.005)


def test_grayscale_kernel_is_the_luminance_rounded(random_pixels):
    """Grayscale maps by one integer pass: BT.601 luminance in thousandths, rounded half up; the exact
    path's float luminance differs only where the value lies exactly halfway between two levels."""
    image = random_pixels.reshape(200, 300, 3)
    t = stainlab.load("grayscale")
    out = t(image)
    thousandths = image.astype(np.int64) @ np.array([299, 587, 114])
    np.testing.assert_array_equal(out, np.repeat(((thousandths + 500) // 1000)[..., None], 3, axis=2))
    differ = (out != t.transform(image, exact=True)).any(axis=2)
    assert (thousandths[differ] % 1000 == 500).all()


def test_tissue_limit_is_the_tissue_rule(random_pixels):
    for beta in (0.05, 0.15, 0.6):
        limit = px.tissue_limit(beta)
        np.testing.assert_array_equal(random_pixels.min(axis=1) < limit, tissue_mask(random_pixels.astype(float), beta))


def test_moments_and_projections_equal_numpy(random_pixels):
    limit = px.tissue_limit(0.15)
    tissue = random_pixels.min(axis=1) < limit
    od = rgb_to_od(random_pixels[tissue].astype(float))
    moments = px.od_moments(random_pixels, limit)
    assert moments.count == tissue.sum() == moments.counts.sum()
    np.testing.assert_allclose(moments.mean, od.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.covariance, np.cov(od.T, bias=True), atol=1e-12)
    np.testing.assert_allclose(moments.rgb_std, random_pixels.std(axis=0), rtol=1e-9)
    matrix = np.array([[0.3, -1.0], [0.5, 2.0], [0.2, 0.1]])
    np.testing.assert_allclose(px.od_projections(random_pixels, limit, matrix), (od @ matrix).T, atol=1e-12)
    np.testing.assert_allclose(px.od_projections(random_pixels, limit, matrix, moments.counts), (od @ matrix).T,
                               atol=1e-12)
    count, rgb_std, mean, std = lp.lab_moments(random_pixels, limit)
    lab = rgb_to_lab(random_pixels[tissue].astype(float))
    assert count == tissue.sum()
    np.testing.assert_allclose(mean, lab.mean(axis=0), atol=1e-4)   # L* to a ten-thousandth
    np.testing.assert_allclose(std, lab.std(axis=0), atol=1e-4)
    np.testing.assert_allclose(rgb_std, random_pixels[tissue].std(axis=0), rtol=1e-9)


def test_moments_of_a_strided_sample_equal_those_of_its_copy(random_pixels):
    """Contiguous pixels are read as flat bytes, a strided sample (``small.stats_sample``) row by row:
    the same moments (up to the order of the sums)."""
    limit = px.tissue_limits(0.15, [236.0, 231.0, 240.0])
    sample = random_pixels[::3]
    assert not sample.flags.c_contiguous
    strided, copied = px.od_moments(sample, limit), px.od_moments(sample.copy(), limit)
    assert strided.count == copied.count > 0
    np.testing.assert_array_equal(strided.counts, copied.counts)
    for name in ("mean", "covariance", "rgb_std"):
        np.testing.assert_allclose(getattr(strided, name), getattr(copied, name), rtol=1e-12, atol=1e-13)
    strided, copied = lp.lab_moments(sample, limit), lp.lab_moments(sample.copy(), limit)
    assert strided[0] == copied[0] > 0
    for a, b in zip(strided[1:], copied[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("values", [
    np.random.default_rng(1).normal(size=50_001),
    np.round(np.random.default_rng(2).normal(size=3000), 1),        # many ties
    np.full(100, 2.5), np.array([7.0]), np.array([3.0, -1.0]),
])
def test_percentiles_are_numpys(values):
    q = [0, 1, 37.3, 50, 99, 100]
    np.testing.assert_array_equal(px.percentiles(values, q), np.percentile(values, q))
    np.testing.assert_allclose(px.percentiles(values, q, np.arctan), np.percentile(np.arctan(values), q),
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [1025, 2040, 2480, 40_000, 65_536, 299_733, 1 << 20])
def test_selection_samples_spread_over_all_values(n):
    """The sample that brackets an order statistic takes distinct positions spread evenly over all
    ``n`` values, for the ``n`` a fixed multiplier nearly divides too (2,040: all in the first half)."""
    step = px._spread_step(n)
    positions = np.array([k * step % n for k in range(px.SAMPLE)])
    assert len(np.unique(positions)) == px.SAMPLE
    per_tenth = np.bincount(positions * 10 // n, minlength=10)
    assert per_tenth.min() >= 0.08 * px.SAMPLE and per_tenth.max() <= 0.12 * px.SAMPLE


def test_plane_angles_and_combination_percentiles_equal_numpy(random_pixels):
    """Macenko's fused passes: the projections, the angles' percentiles (by ``y / x`` where every ``x`` is
    positive, by ``atan2`` otherwise) and the percentiles of a 2x2 combination of the projections."""
    limit = px.tissue_limit(0.15)
    od = rgb_to_od(random_pixels[random_pixels.min(axis=1) < limit].astype(float))
    e1 = od.mean(axis=0) / np.linalg.norm(od.mean(axis=0))
    e2 = np.cross(e1, [0.0, 0.0, 1.0])
    for plane in (np.stack([e1, e2 / np.linalg.norm(e2)], axis=1),             # all x > 0
                  np.array([[0.6, 0.0], [-0.8, 0.0], [0.0, 1.0]])):             # x of both signs
        angles, xy = px.plane_angles(random_pixels, limit, plane, len(od), [1.0, 99.0])
        np.testing.assert_allclose(xy, (od @ plane).T, atol=1e-12)
        np.testing.assert_allclose(angles, np.percentile(np.arctan2(xy[1], xy[0]), [1.0, 99.0]), rtol=0, atol=1e-15)
        matrix = np.array([[1.3, -0.4], [0.2, 0.9]])
        np.testing.assert_allclose(px.combination_percentiles(xy, matrix, 99.0), np.percentile(matrix @ xy, 99.0, axis=1),
                                   rtol=1e-14)


def test_threaded_kernels_agree_with_serial(random_pixels, monkeypatch):
    """Kernels run as one slice on a few pixels and in numba's threads on more: the same results."""
    matrix = np.array([[1.1, 0.1, -0.05], [0.05, 0.9, 0.1], [0.0, 0.2, 1.2]])
    limit = px.tissue_limit(0.15)
    monkeypatch.setattr(px, "PARALLEL_PIXELS", len(random_pixels) + 1)
    serial = (px.od_linear(random_pixels, matrix), px.od_moments(random_pixels, limit),
              lp.lab_affine(random_pixels, [1.1, 0.9, 1.2], [-3.0, 2.0, 5.0]), px.channel_counts(random_pixels, limit))
    monkeypatch.setattr(px, "PARALLEL_PIXELS", 0)
    threaded = (px.od_linear(random_pixels, matrix), px.od_moments(random_pixels, limit),
                lp.lab_affine(random_pixels, [1.1, 0.9, 1.2], [-3.0, 2.0, 5.0]), px.channel_counts(random_pixels, limit))
    np.testing.assert_array_equal(threaded[0], serial[0])
    np.testing.assert_allclose(threaded[1].covariance, serial[1].covariance, atol=1e-12)
    assert threaded[1].count == serial[1].count
    np.testing.assert_array_equal(threaded[2], serial[2])
    np.testing.assert_array_equal(threaded[3], serial[3])


@pytest.fixture(scope="module")
def tile():
    """A small H&E tile with glass, unlike the reference."""
    return he_image(seed=5, scale=(0.7, 1.3))


# (method, parameters, mean CIEDE2000 to the exact path at most): compiled kernels are exact up to a
# level here and there; separable maps go through exact tables; Vahadane's statistics come from the
# colour lattice, as on the large path.
SMALL_PATHS = [("macenko", {}, 0.02), ("ruifrok", {}, 0.02), ("reinhard", {}, 0.02),
               ("reinhard", {"mask": True}, 0.02), ("reinhard-split", {}, 0.02), ("vahadane", {}, 0.15),
               ("histogram", {}, 0.0),
               ("histogram", {"mask": True}, 0.0), ("colorbalance", {}, 0.0), ("background", {}, 0.0),
               ("grayscale", {}, 0.02)]


@pytest.mark.parametrize("name,params,bound", SMALL_PATHS)
def test_small_path_agrees_with_the_exact_path(he_reference, tile, name, params, bound):
    t = stainlab.load(name, **params).fit(he_reference)
    assert tile.shape[0] * tile.shape[1] <= small.SMALL_IMAGE_PIXELS
    assert ciede2000(t(tile), t.transform(tile, exact=True)) <= bound


@pytest.mark.parametrize("name", ["reinhard", "histogram"])
def test_masked_small_path_keeps_glass_bytes(he_reference, tile, name):
    t = stainlab.load(name, mask=True).fit(he_reference)
    glass = ~tissue_mask(tile.astype(float))
    assert glass.mean() > 0.1
    np.testing.assert_array_equal(t(tile)[glass], tile[glass])


def test_tetrahedral_interpolation_reproduces_an_affine_map(tile):
    """A map that is affine in RGB is exact on every tetrahedron: only the final rounding differs."""

    class Affine(stainlab.transforms.PixelTransform):
        name = "affine-test"
        requires_fit = False

        def _map(self, colors, source):
            return colors @ np.array([[0.8, 0.1, 0.0], [0.1, 0.7, 0.2], [0.0, 0.1, 0.75]]) + 10.0

    t = Affine()
    assert np.abs(t(tile).astype(int) - t.transform(tile, exact=True)).max() <= 1


def test_small_and_large_paths_agree(he_reference, monkeypatch):
    """The same image through the small path and, with the thresholds lowered, as a large image (its
    statistics from a strided sample of a third of its pixels)."""
    image = he_image(seed=9, shape=(256, 320))
    t = stainlab.load("macenko").fit(he_reference)
    small_out = t(image)
    monkeypatch.setattr(small, "SMALL_IMAGE_PIXELS", 1 << 15)
    monkeypatch.setattr(small, "LARGE_IMAGE_SAMPLE", 1 << 15)
    assert ciede2000(small_out, t(image)) < 0.05


@pytest.fixture
def table_calls(monkeypatch):
    """The calls of the lookup-table path (``apply_table``) made while a test runs, each still made."""
    calls = []
    monkeypatch.setattr(base, "apply_table", lambda *args: calls.append(args) or lut.apply_table(*args))
    return calls


@pytest.mark.parametrize("name,params,bound", [("macenko", {}, 0.05), ("ruifrok", {}, 0.05), ("linear-ot", {}, 0.05),
                                               ("reinhard", {}, 0.02), ("reinhard", {"mask": True}, 0.02),
                                               ("vahadane", {}, 0.15), ("grayscale", {}, 0.02),
                                               ("reinhard-split", {}, 0.05)])
def test_large_images_map_through_the_compiled_kernels(he_reference, monkeypatch, table_calls, name, params, bound):
    """Methods with a compiled per-pixel kernel map a large image through it (statistics from a
    sample), never through a colour lattice; with ``lut_bits=8`` (an exact table) or without a kernel
    (torchstain's convention) the lookup table still serves."""
    image = he_image(seed=9, shape=(256, 320))
    t = stainlab.load(name, **params).fit(he_reference)
    monkeypatch.setattr(small, "SMALL_IMAGE_PIXELS", 1 << 15)  # the image is large, its sample a third of it
    monkeypatch.setattr(small, "LARGE_IMAGE_SAMPLE", 1 << 15)
    assert t.kernel_maps
    assert ciede2000(t(image), t.transform(image, exact=True)) <= bound and not table_calls
    exact_table = stainlab.load(name, **params, lut_bits=8).fit(he_reference)
    exact_table(image)
    assert len(table_calls) == 1


def test_large_reinhard_split_images_take_every_pixels_light(he_reference, monkeypatch):
    """reinhard-split's statistics of a large image come from a sample, its light from every pixel (the
    exact path's light; a strided one moves all of the glass by a fraction of a level)."""
    from stainlab.color import light
    image = he_image(seed=9, shape=(256, 320), glass=0.25)
    glass = image.min(axis=2) == 255
    noise = np.random.default_rng(2).integers(-5, 6, (int(glass.sum()), 3))
    image[glass] = np.clip(np.array([236, 231, 222]) + noise, 0, 255)        # beige glass, as scanned
    t = stainlab.load("reinhard-split").fit(he_reference)
    monkeypatch.setattr(small, "LARGE_IMAGE_SAMPLE", 1 << 15)
    monkeypatch.setattr(light, "SAMPLE", 1 << 12)
    exact = t._source(image.reshape(-1, 3).astype(np.float64), None)
    np.testing.assert_allclose(t._sampled_source(image).light, exact.light, rtol=0, atol=1e-9)
    assert np.abs(t.light_of(image.reshape(-1, 3)) - exact.light).max() > 1e-6  # strided, it differs


@pytest.mark.parametrize("name,params", [("histogram", {}), ("histogram", {"mask": True}), ("colorbalance", {}),
                                         ("background", {})])
def test_large_images_of_separable_methods_equal_the_exact_path(he_reference, monkeypatch, name, params):
    """Per-channel methods take a large image's statistics from the level counts of every pixel and map
    it through three exact tables: byte for byte the exact path, with no colour lattice."""
    image = he_image(seed=9, shape=(256, 320), glass=0.25)
    t = stainlab.load(name, **params).fit(he_reference)
    monkeypatch.setattr(small, "SMALL_IMAGE_PIXELS", 1 << 15)
    monkeypatch.setattr(base, "apply_table", lambda *args: pytest.fail("a lattice was built"))
    np.testing.assert_array_equal(t(image), t.transform(image, exact=True))


def test_the_byte_keep_rule_of_masked_histogram_matching_is_its_colour_rule():
    """``_keep_below`` (darkest channel at least the tissue limit) keeps exactly the colours ``_keep`` keeps."""
    t = stainlab.load("histogram", mask=True)
    rng = np.random.default_rng(0)
    colors = np.concatenate([rng.integers(0, 256, (200_000, 3)),
                             np.stack(np.meshgrid(*[np.arange(200, 256)] * 3), axis=-1).reshape(-1, 3)])
    np.testing.assert_array_equal(t._keep(colors.astype(float)), colors.min(axis=1) >= t._keep_below)
    assert stainlab.load("histogram")._keep_below == 256


def test_methods_without_a_kernel_for_their_convention_use_the_table(he_reference, monkeypatch, table_calls):
    image = he_image(seed=9, shape=(256, 320))
    monkeypatch.setattr(small, "SMALL_IMAGE_PIXELS", 0)
    t = stainlab.load("macenko", convention="torchstain").fit(he_reference)
    assert not t.kernel_maps
    t(image)
    assert len(table_calls) == 1


def test_a_sampled_tile_gives_statistics_near_the_full_ones(he_reference, monkeypatch):
    """Above ``STATS_SAMPLE`` pixels the statistics come from a strided sample: a third of a 256 px tile."""
    image = he_image(seed=4, shape=(256, 256))
    assert len(small.stats_sample(image.reshape(-1, 3))) == -(-image.size // 9)
    t = stainlab.load("macenko").fit(he_reference)
    rows, maxima, _ = t._small_source(image)
    monkeypatch.setattr(small, "STATS_SAMPLE", image.size)
    full = t._small_source(image)
    assert not np.array_equal(maxima, full[1])  # not the same pixels
    assert np.degrees(np.arccos(np.clip(np.sum(rows * full[0], axis=1), -1, 1))).max() < 1.0
    np.testing.assert_allclose(maxima, full[1], rtol=0.05)


def test_no_tissue_tile_passes_through(he_reference):
    t = stainlab.load("macenko").fit(he_reference)
    glass = np.full((128, 128, 3), 246, np.uint8)
    with pytest.warns(stainlab.errors.NoTissueWarning):
        np.testing.assert_array_equal(t(glass), glass)


@pytest.mark.parametrize("name,params", [("histogram", {}), ("histogram", {"mask": True}), ("colorbalance", {}),
                                         ("background", {})])
@pytest.mark.parametrize("glass", [0.25, 0.0])
def test_per_level_counts_give_the_statistics_of_the_colours(he_reference, name, params, glass):
    """Separable methods take a small image's statistics from per-level counts: the same numbers as from
    its colours, with and without glass (the background method then falls back, with its warning)."""
    image = he_image(seed=7, glass=glass)
    t = stainlab.load(name, **params)
    if t.requires_fit:
        t.fit(he_reference)
    pixels = image.reshape(-1, 3)
    with warnings.catch_warnings(record=True) as from_colors_warnings:
        warnings.simplefilter("always")
        expected = t._source(pixels.astype(float), None)
    with warnings.catch_warnings(record=True) as from_counts_warnings:
        warnings.simplefilter("always")
        got = t._channel_source(*split_pixels(pixels))
    assert [str(w.message) for w in from_counts_warnings] == [str(w.message) for w in from_colors_warnings]
    np.testing.assert_allclose(numbers(got), numbers(expected), rtol=1e-12)


def numbers(x):
    """Every number of a nested tuple or list of arrays, in order."""
    if isinstance(x, (list, tuple)):
        return np.concatenate([numbers(v) for v in x])
    return np.ravel(np.asarray(x, dtype=float))


def test_a_stats_sample_is_a_view_of_a_tile_and_a_compact_copy_of_a_strided_sample():
    """A tile's sample is read in place; a large image's strided sample is sampled again into a compact
    copy of exactly the pixels the view would give."""
    pixels = np.random.default_rng(3).integers(0, 256, (600 * 600, 3), dtype=np.uint8)
    tile_sample = small.stats_sample(pixels[:256 * 256])
    assert np.shares_memory(tile_sample, pixels) and len(tile_sample) == -(-256 * 256 // 3)
    large = small.strided(pixels, 1 << 17)
    assert not large.flags.c_contiguous
    compact = small.stats_sample(large)
    step = min(small.odd_step(len(large), small.STATS_SAMPLE), small.MAX_STRIDE)
    assert step > 1 and compact.flags.c_contiguous and not np.shares_memory(compact, pixels)
    np.testing.assert_array_equal(compact, large[::step])


def test_strided_samples_take_every_column_of_an_even_width_image():
    """Even steps over an image of even width take the same columns in every row (JPEG's chroma and block
    grid make those differ): every step is odd, so even and odd columns are sampled alike."""
    image = np.zeros((512, 512, 3), np.uint8)
    image[:, 0::2] = (200, 120, 150)
    image[:, 1::2] = (120, 60, 140)
    pixels = image.reshape(-1, 3)
    for sample in (small.stats_sample(pixels), small.strided(pixels, 1 << 12), small.strided(pixels, 1 << 16)):
        assert len(sample) < len(pixels)
        share = np.mean(sample[:, 0] == 200)
        assert abs(share - 0.5) < 0.01, share
    assert small.odd_step(100, 100) == 1 and small.odd_step(101, 100) == 3 and small.odd_step(400, 100) == 5
