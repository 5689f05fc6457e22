"""The tiler: exact reassembly, feather weights that sum to one, seams removed, background copied."""

import numpy as np
import pytest

from stainlab.color.tissue import tissue_mask
from stainlab.errors import InputError
from stainlab.wsi.tiling import TileGrid, run_tiled, tissue_fraction
from stainlab.metrics.consistency import border_differences, seam_score


def pull_to_tile_mean(tile):
    """A deliberately tile-dependent transform: contrast around the tile's own mean colour."""
    f = tile.astype(np.float32)
    return np.clip(1.5 * (f - f.mean(axis=(0, 1))) + 128, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape,tile,overlap", [((300, 410), 64, 0), ((300, 410), 64, 16), ((300, 410), 64, 32),
                                                ((129, 65), 64, 8), ((40, 50), 64, 16)])
def test_identity_reassembles_exactly(shape, tile, overlap):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = run_tiled(image, lambda t: t.copy(), tile, overlap)
    assert out.dtype == np.uint8 and np.array_equal(out, image)


def test_feather_weights_sum_to_one_everywhere():
    grid = TileGrid(300, 410, 64, 16)
    total = np.zeros((300, 410))
    for r in range(grid.rows):
        for c in range(grid.cols):
            box = grid.window(r, c)
            wy, wx = grid.weights(r, c)
            total[box.y0:box.y1, box.x0:box.x1] += np.outer(wy, wx)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    wy, _ = grid.weights(1, 1)  # an inner window ramps over 2 * overlap pixels on each side
    assert wy[0] == pytest.approx(1 / 64) and wy[31] == pytest.approx(63 / 64) and wy[32] == 1.0


def test_blending_removes_the_seams_of_a_tile_dependent_transform(ihc_image):
    naive = run_tiled(ihc_image, pull_to_tile_mean, 64, 0)
    blended = run_tiled(ihc_image, pull_to_tile_mean, 64, 16)
    assert seam_score(naive, 64) > 8                        # measured 11.2 grey levels of extra jump
    assert -2.0 < seam_score(blended, 64) < 0.5             # measured -1.3: borders no rougher than inside
    across, inside = border_differences(blended, 64)
    assert across < inside


def test_per_pixel_output_does_not_depend_on_the_tiling(ihc_image):
    invert = lambda t: 255 - t  # noqa: E731
    assert np.array_equal(run_tiled(ihc_image, invert, 64, 0), 255 - ihc_image)


def test_background_cores_are_not_transformed_but_get_the_transforms_glass_colour(ihc_image):
    image = ihc_image.copy()
    image[:, 128:] = 244  # glass on the right half
    calls = []

    def invert(tile):
        calls.append(tile)
        return 255 - tile

    out = run_tiled(image, invert, 64, 16, min_tissue=0.05)
    assert len(calls) == 8 + 1                        # 4 rows x 2 tissue columns, and one flat glass window
    assert [t.shape for t in calls if np.all(t == 244)] == [(96, 96, 3)]  # the probe: a full window of glass
    assert np.all(out[:, 128:] == 11)                 # glass is inverted everywhere: no band, no grid
    assert np.array_equal(out[:, :112], 255 - image[:, :112])  # tissue before the band: fully transformed


def test_background_the_transform_leaves_alone_is_copied_through(ihc_image):
    image = ihc_image.copy()
    image[:, 128:] = np.random.default_rng(0).integers(238, 248, (256, 128, 3))  # uneven glass
    calls = []

    def darken_tissue(tile):
        calls.append(tile.shape)
        return np.where(tile < 200, tile // 2, tile).astype(np.uint8)

    out = run_tiled(image, darken_tissue, 64, 16, min_tissue=0.05)
    assert len(calls) < 16                                      # background cores were not run
    assert np.array_equal(out[:, 144:], image[:, 144:])         # glass past the band: byte for byte


def test_tissue_fraction_follows_the_tissue_mask_rule(ihc_image):
    assert tissue_fraction(ihc_image) == pytest.approx(tissue_mask(ihc_image).mean())
    assert tissue_fraction(np.full((8, 8, 3), 250, np.uint8)) == 0.0


def test_bad_grids_and_bad_tile_outputs_are_clear_errors(ihc_image):
    with pytest.raises(InputError, match="overlap"):
        TileGrid(100, 100, 64, 40)
    with pytest.raises(InputError, match="tile size"):
        TileGrid(100, 100, 4, 0)
    with pytest.raises(InputError, match="same shape"):
        run_tiled(ihc_image, lambda t: t[:10], 64, 0)


def test_tissue_fraction_counts_the_tissue_pixels_of_any_view():
    from stainlab.wsi.tiling import tissue_fraction, tissue_pixels
    image = np.random.default_rng(5).integers(150, 256, (64, 80, 3), dtype=np.uint8)
    for view in (image, image[3:50:2, 7:70], image[:0]):
        dense = tissue_pixels(view)
        assert tissue_fraction(view) == (np.count_nonzero(dense) / dense.size if dense.size else 0.0)
    assert 0.0 < tissue_fraction(image) < 1.0
