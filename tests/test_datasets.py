"""Folder datasets (unpaired, paired, HEV, BCI) and tile extraction."""

import numpy as np
import pytest
from PIL import Image

from stainlab.data.folders import BCIDataset, PairedFolders, UnpairedFolders, level_from_name, hev
from stainlab.data.tiles import extract_tiles, grid_starts
from stainlab.errors import InputError
from synth import he_image


def save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def test_unpaired_folders_list_both_domains(tmp_path):
    for i in range(3):
        save(tmp_path / "A" / f"a{i}.png", he_image((20, 24), seed=i))
    save(tmp_path / "B" / "b0.png", he_image((20, 24), seed=9))
    data = UnpairedFolders.open(tmp_path)
    assert [p.name for p in data.a] == ["a0.png", "a1.png", "a2.png"] and len(data.b) == 1
    np.testing.assert_array_equal(data.read_b(0), he_image((20, 24), seed=9))


def test_missing_or_empty_domain_is_an_error(tmp_path):
    save(tmp_path / "A" / "a.png", he_image((20, 24)))
    with pytest.raises(InputError, match="'B'"):
        UnpairedFolders.open(tmp_path)
    (tmp_path / "B").mkdir()
    with pytest.raises(InputError, match="no images"):
        UnpairedFolders.open(tmp_path)


def test_paired_folders_match_by_stem_and_refuse_orphans(tmp_path):
    for name in ("x", "y"):
        save(tmp_path / "A" / f"{name}.png", he_image((20, 24), seed=1))
        save(tmp_path / "B" / f"{name}.png", he_image((20, 24), seed=2))
    pairs = PairedFolders.open(tmp_path)
    assert len(pairs) == 2 and [a.stem for a, _ in pairs.pairs] == ["x", "y"]
    a, b = pairs.read(1)
    np.testing.assert_array_equal(b, he_image((20, 24), seed=2))
    save(tmp_path / "A" / "z.png", he_image((20, 24)))
    with pytest.raises(InputError, match="z \\(only in A\\)"):
        PairedFolders.open(tmp_path)


def test_pair_of_different_sizes_is_an_error(tmp_path):
    save(tmp_path / "A" / "x.png", he_image((20, 24)))
    save(tmp_path / "B" / "x.png", he_image((20, 30)))
    with pytest.raises(InputError, match="one size"):
        PairedFolders.open(tmp_path).read(0)


def test_unreadable_file_is_named_when_read(tmp_path):
    save(tmp_path / "A" / "x.png", he_image((20, 24)))
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="x.png"):
        PairedFolders.open(tmp_path).read(0)


def test_hev_layout_accepts_name_variants(tmp_path):
    save(tmp_path / "HE" / "t1.png", he_image((20, 24)))
    save(tmp_path / "long_he" / "t2.png", he_image((20, 24), scale=(1.5, 1.5)))
    data = hev(tmp_path)
    assert data.a[0].name == "t1.png" and data.b[0].name == "t2.png"
    with pytest.raises(InputError, match="Long HE"):
        hev(tmp_path / "HE")


@pytest.mark.parametrize("name, level", [("00001_train_0.png", 0), ("00002_train_1+.png", 1),
                                         ("00003_test_2+.png", 2), ("00004_test_3+.png", 3)])
def test_level_from_name_from_bci_names(name, level):
    assert level_from_name(name) == level


@pytest.mark.parametrize("name", ["00001_train.png", "00001_train_4+.png", "00001_train_2.png"])
def test_name_without_level_is_an_error(name):
    with pytest.raises(InputError, match="HER2 level"):
        level_from_name(name)


def test_bci_layout_pairs_he_with_ihc_and_levels(tmp_path):
    for i, level in enumerate(["0", "3+"]):
        save(tmp_path / "HE" / "test" / f"0000{i}_test_{level}.png", he_image((16, 16), seed=i))
        save(tmp_path / "IHC" / "test" / f"0000{i}_test_{level}.png", he_image((16, 16), seed=10 + i))
    data = BCIDataset.open(tmp_path, "test")
    assert len(data) == 2 and data.levels == [0, 3]
    he, ihc, level = data.read(1)
    np.testing.assert_array_equal(ihc, he_image((16, 16), seed=11))
    assert level == 3
    with pytest.raises(InputError, match="'train'"):
        BCIDataset.open(tmp_path, "train")
    with pytest.raises(InputError, match="split"):
        BCIDataset.open(tmp_path, "val")


def test_grid_covers_every_pixel_with_whole_tiles():
    starts = grid_starts(1000, 288, 144)
    assert starts[0] == 0 and starts[-1] == 1000 - 288
    covered = np.zeros(1000, bool)
    for s in starts:
        covered[s:s + 288] = True
    assert covered.all() and np.diff(starts).max() <= 144
    with pytest.raises(InputError, match="does not fit"):
        grid_starts(100, 288, 144)


def test_tiles_skip_glass_and_rotate():
    image = he_image((300, 600), seed=4, glass=0.0)
    image[:, 300:] = 255  # right half is glass
    tiles = list(extract_tiles(image, tile=100, overlap=50, min_tissue=0.5, rotations=(0, 90, 180, 270)))
    assert tiles and all(t.x + 100 <= 350 for t in tiles)  # no tile that is mostly glass
    by_rotation = {t.rotation: t.image for t in tiles if (t.y, t.x) == (tiles[0].y, tiles[0].x)}
    np.testing.assert_array_equal(by_rotation[90], np.rot90(by_rotation[0]))
    np.testing.assert_array_equal(by_rotation[180], by_rotation[0][::-1, ::-1])


def test_tile_arguments_are_checked():
    image = he_image((100, 100))
    for kwargs in ({"tile": 50, "overlap": 50}, {"tile": 50, "min_tissue": 1.5}, {"tile": 50, "rotations": (45,)}):
        with pytest.raises(InputError):
            list(extract_tiles(image, **kwargs))
