"""The restaining simulator: exact round trips, exact ground truth, presets that move colour the way
their papers describe, H&E -> IHC pairs, and benchmark folders that are reproducible to the byte."""

import itertools
import json

import numpy as np
import pytest
from synth import SOURCE_STAINS, he_image, psnr, render, separable_maps

from stainlab.cli import main
from stainlab.color import EOSIN, HEMATOXYLIN, angle_degrees, rgb_to_od, tissue_mask
from stainlab.color.deconvolution import separate
from stainlab.data import PRESETS, Staining, he_to_ihc, make_benchmark, preset, restain
from stainlab.errors import InputError, NoTissueError
from stainlab.io.images import read_image, write_image
from stainlab.transforms.macenko import Macenko

LOSSLESS_PSNR = 10 * np.log10(255.0 ** 2 / (1 / 12))   # 58.9 dB: uniform 8-bit rounding error alone


@pytest.fixture(scope="module")
def he_tissue():
    return he_image(seed=1)


def mean_od(image):
    return float(rgb_to_od(image).mean())


def concentrations(image, stains):
    """Mean concentration per stain over the image, separated with ``stains``."""
    return separate(image, stains)[..., :2].mean(axis=(0, 1))


# -- round trips and exact ground truth --------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["ihc_image", "he_tissue"])
def test_identity_staining_gives_the_source_back_byte_for_byte(fixture, request):
    image = request.getfixturevalue(fixture)
    assert np.array_equal(restain(image, Staining()), image)
    fitted = Macenko().stain_matrix_of(image)
    assert np.array_equal(restain(image, Staining(stains=fitted), source_stains=fitted), image)


@pytest.mark.parametrize("rotation, scale", [((4.0, -3.0), (1.1, 0.95)), ((25.0, -20.0), (1.0, 1.0))])
def test_round_trip_through_another_staining_is_within_half_a_db_of_lossless(ihc_image, rotation, scale):
    """Re-stain real tissue under other stain vectors and amounts, then back with the known stains:
    only the 8-bit rounding of the intermediate image is lost (measured 61.7 and 59.8 dB)."""
    fitted = Macenko().stain_matrix_of(ihc_image)
    other = Staining(stains=fitted, rotation=rotation, scale=scale)
    shifted = restain(ihc_image, other, source_stains=fitted)
    assert psnr(shifted, ihc_image) < 40                                # the shift is real
    back = restain(shifted, Staining(stains=fitted, scale=tuple(1 / np.array(scale))),
                   source_stains=other.stain_rows(fitted))
    assert psnr(back, ihc_image) > LOSSLESS_PSNR - 0.5
    assert np.abs(back.astype(int) - ihc_image).max() <= 3


def test_restain_of_known_concentrations_equals_their_direct_render():
    """Tissue made from known concentrations under known stains, re-stained to Ruifrok's H&E, is the
    direct Beer-Lambert render of those concentrations: exact ground truth up to 8-bit rounding."""
    conc = separable_maps(2)
    source = render(conc, SOURCE_STAINS)
    rendered = restain(source, Staining(stains=(HEMATOXYLIN, EOSIN)), source_stains=np.array(SOURCE_STAINS))
    truth = render(conc, (HEMATOXYLIN, EOSIN))
    difference = np.abs(rendered.astype(int) - truth)
    assert difference.max() <= 1
    assert difference.mean() < 0.25
    assert psnr(rendered, truth) > 54.0


def test_concentration_scale_is_exact_in_optical_density():
    """Doubling the haematoxylin of synthetic tissue doubles its separated haematoxylin."""
    conc = separable_maps(2)
    source = render(conc, SOURCE_STAINS)
    doubled = restain(source, Staining(scale=(2.0, 1.0)), source_stains=np.array(SOURCE_STAINS))
    difference = np.abs(doubled.astype(int) - render(conc * [2.0, 1.0], SOURCE_STAINS))
    assert difference.max() <= 2 and difference.mean() < 0.2


# -- presets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 7])
def test_stain_amount_presets_move_optical_density_in_their_direction(he_tissue, seed):
    fitted = Macenko().stain_matrix_of(he_tissue)
    before = concentrations(he_tissue, fitted)
    long_he, pale, faded = (restain(he_tissue, preset(name, seed)) for name in ("long-he", "understained", "faded"))
    assert mean_od(long_he) > 1.25 * mean_od(he_tissue)            # paper 000: Long HE is darker
    assert (concentrations(long_he, fitted) > 1.25 * before).all()
    assert mean_od(pale) < 0.7 * mean_od(he_tissue)                 # paper 001: lab B is pale
    assert (concentrations(pale, fitted) < 0.75 * before).all()
    ratio_faded, ratio_before = np.divide(*concentrations(faded, fitted)), np.divide(*before)
    assert ratio_faded > 1.4 * ratio_before                          # eosin fades more than haematoxylin


def test_scanner_presets_tint_the_way_their_lamps_do(he_tissue):
    """Paper 004: LED light is cool (blue over red), halogen warm (red over blue); glass shows it."""
    glass = ~tissue_mask(he_tissue)
    led, halogen = restain(he_tissue, preset("scanner-led", 0)), restain(he_tissue, preset("scanner-halogen", 0))
    led_glass, halogen_glass = led[glass].mean(axis=0), halogen[glass].mean(axis=0)
    assert led_glass[2] - led_glass[0] > 10
    assert halogen_glass[0] - halogen_glass[2] > 20
    tissue = ~glass
    source_blue_red = np.log(he_tissue[tissue][:, 2].mean() / he_tissue[tissue][:, 0].mean())
    assert np.log(led[tissue][:, 2].mean() / led[tissue][:, 0].mean()) > source_blue_red
    assert np.log(halogen[tissue][:, 2].mean() / halogen[tissue][:, 0].mean()) < source_blue_red


def test_stain_rotation_changes_the_stain_vectors_not_the_amount(ihc_image):
    fitted = Macenko().stain_matrix_of(ihc_image)
    turned = restain(ihc_image, preset("stain-rotation", 0), source_stains=fitted)
    refit = Macenko().stain_matrix_of(turned)
    assert min(angle_degrees(fitted[i], refit[i]) for i in range(2)) > 2.0
    assert abs(mean_od(turned) - mean_od(ihc_image)) < 0.05 * mean_od(ihc_image)


def test_presets_are_reproducible_and_vary_with_the_seed(ihc_image):
    for name in PRESETS:
        assert preset(name, 3) == preset(name, 3)
        assert preset(name, 3) != preset(name, 4)
    led = preset("scanner-led", 1)
    assert np.array_equal(restain(ihc_image, led, seed=5), restain(ihc_image, led, seed=5))
    assert not np.array_equal(restain(ihc_image, led, seed=5), restain(ihc_image, led, seed=6))
    jittered = [preset("long-he", s).scale for s in range(20)]
    assert np.ptp(jittered, axis=0).min() > 0.02 and np.all(np.abs(np.array(jittered) / [1.6, 1.35] - 1) <= 0.05)


def test_staining_parameters_survive_json():
    staining = preset("scanner-halogen", 2).with_stains(Macenko().stain_matrix_of(he_image(seed=1)))
    assert Staining.from_dict(json.loads(json.dumps(staining.to_dict()))) == staining


# -- H&E -> IHC --------------------------------------------------------------------------------------
def test_he_to_ihc_keeps_haematoxylin_and_adds_more_dab_per_level(he_tissue):
    fitted = Macenko().stain_matrix_of(he_tissue)
    hematoxylin = np.maximum(separate(he_tissue, fitted)[..., 0], 0)
    dab_means = []
    for level in ("0", "1+", "2+", "3+"):
        ihc = he_to_ihc(he_tissue, level, seed=0)
        conc = separate(ihc, "hdab")
        assert np.abs(conc[..., 0] - hematoxylin).max() < 0.02       # OD units; 8-bit rounding only
        dab_means.append(conc[..., 1].mean())
    assert dab_means[0] < 0.001
    assert all(b > 1.5 * a for a, b in itertools.pairwise(dab_means[1:]))
    assert dab_means[1] > 0.005


def test_dab_lies_on_rings_around_nuclei_not_inside_them(he_tissue):
    fitted = Macenko().stain_matrix_of(he_tissue)
    hematoxylin = separate(he_tissue, fitted)[..., 0]
    dab = separate(he_to_ihc(he_tissue, 3, seed=1), "hdab")[..., 1]
    nuclei = hematoxylin > np.percentile(hematoxylin, 95)
    assert dab[nuclei].mean() < 0.3 * dab[dab > 0.3].mean()
    assert not np.array_equal(dab, separate(he_to_ihc(he_tissue, 3, seed=2), "hdab")[..., 1])


@pytest.mark.parametrize("level", [4, "4+", -1, "2-", 1.5, None, True])
def test_bad_her2_levels_are_named(he_tissue, level):
    with pytest.raises(InputError, match="HER2 level"):
        he_to_ihc(he_tissue, level)


# -- benchmark folders -----------------------------------------------------------------------------
def test_make_benchmark_writes_pairs_and_meta_byte_identically(tmp_path, ihc_image, he_tissue):
    sources = tmp_path / "src"
    write_image(sources / "ihc.png", ihc_image)
    write_image(sources / "he.png", he_tissue)
    first, second = tmp_path / "run1", tmp_path / "run2"
    make_benchmark(sources, "scanner-led", first, seed=4)
    make_benchmark(sources, "scanner-led", second, seed=4)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    # the IHC crop, all tissue, is the representative: held out, its truth the reference
    assert [str(p) for p in files] == ["A/he.png", "B/he.png", "meta.json", "reference.png"]
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes()
    assert np.array_equal(read_image(first / "reference.png")[0], ihc_image)
    assert np.array_equal(read_image(first / "B" / "he.png")[0], he_tissue)
    meta = json.loads((first / "meta.json").read_text())
    assert meta["preset"] == "scanner-led" and meta["seed"] == 4 and len(meta["images"]) == meta["pairs"] == 1
    assert meta["reference_image"]["held_out"] == "ihc" and "100% tissue" in meta["reference_image"]["why"]
    entry = meta["images"][0]
    assert entry["name"] == "he" and entry["source_light"] == [255.0, 255.0, 255.0]
    staining = Staining.from_dict(entry["staining"])
    regenerated = restain(he_tissue, staining, np.array(entry["source_stains"]), seed=entry["noise_seed"],
                          light=entry["source_light"])
    assert np.array_equal(regenerated, read_image(first / "A" / "he.png")[0])     # meta says it all
    other = tmp_path / "run3"
    make_benchmark(sources, "scanner-led", other, seed=5)
    assert (other / "A" / "he.png").read_bytes() != (first / "A" / "he.png").read_bytes()
    assert not list(tmp_path.glob(".*part"))


def test_make_benchmark_reference_staining_and_overwrite(tmp_path, he_tissue):
    out = tmp_path / "bench"
    make_benchmark([he_tissue, he_tissue[::-1]], "long-he", out, reference=Staining(scale=(0.8, 0.8)))
    kept = json.loads((out / "meta.json").read_text())["images"][0]["name"]
    truth = read_image(out / "B" / f"{kept}.png")[0]
    assert mean_od(truth) < mean_od(he_tissue) < mean_od(read_image(out / "A" / f"{kept}.png")[0])
    assert mean_od(read_image(out / "reference.png")[0]) == pytest.approx(mean_od(truth))  # the same look
    with pytest.raises(FileExistsError):
        make_benchmark(he_tissue, "faded", out)
    make_benchmark(he_tissue, "faded", out, overwrite=True)
    assert json.loads((out / "meta.json").read_text())["preset"] == "faded"
    assert sorted(p.name for p in (out / "A").iterdir()) == ["00000.png"]
    stranger = tmp_path / "mine"
    (stranger / "keep.txt").parent.mkdir()
    (stranger / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not a benchmark folder"):
        make_benchmark(he_tissue, "faded", stranger, overwrite=True)


def test_make_benchmark_ihc_mode_writes_the_bci_layout(tmp_path, he_tissue):
    out = tmp_path / "bci"
    make_benchmark([he_tissue, he_tissue[:, ::-1]], None, out, mode="ihc", levels=["2+", 0])
    assert sorted(p.name for p in (out / "HE" / "train").iterdir()) == ["00001_train_2+.png", "00002_train_0.png"]
    assert sorted(p.name for p in (out / "IHC" / "train").iterdir()) == ["00001_train_2+.png", "00002_train_0.png"]
    assert np.array_equal(read_image(out / "HE" / "train" / "00001_train_2+.png")[0], he_tissue)
    meta = json.loads((out / "meta_train.json").read_text())
    assert [m["level"] for m in meta["images"]] == ["2+", "0"] and meta["pairs"] == 2


def tissue_and_glass(seed=3):
    """512x768: H&E tissue on the left 512 columns, bare glass on the right 256."""
    image = np.full((512, 768, 3), 255, np.uint8)
    image[:, :512] = he_image((512, 512), seed=seed, glass=0.0)
    return image


def test_make_benchmark_tiles_sources_and_skips_glass_with_a_note(tmp_path, capsys):
    sources = tmp_path / "src"
    image = tissue_and_glass()
    write_image(sources / "slide.png", image)
    write_image(sources / "white.png", np.full((256, 256, 3), 255, np.uint8))
    out = tmp_path / "bench"
    assert main(["data", "make-benchmark", "--source", str(sources), "--out", str(out)]) == 0
    tissue_tiles = ["slide_y0_x0", "slide_y0_x256", "slide_y256_x0", "slide_y256_x256"]
    meta = json.loads((out / "meta.json").read_text())
    held_out = meta["reference_image"]["held_out"]
    scored = sorted(p.stem for p in (out / "A").iterdir())
    assert sorted(scored + [held_out]) == tissue_tiles  # 2 glass tiles and white.png left out, one is the reference
    def tile(name):
        y, x = (int(part[1:]) for part in name.split("_")[1:])
        return image[y:y + 256, x:x + 256]

    assert np.array_equal(read_image(out / "reference.png")[0], tile(held_out))   # the truth: the source as it is
    assert all(np.array_equal(read_image(out / "B" / f"{name}.png")[0], tile(name)) for name in scored)
    assert meta["pairs"] == 3 and meta["skipped"] == {"background": 3, "unseparable": 0}
    assert meta["tile"] == 256 and [m["at"] for m in meta["images"]][1] == [0, 256]
    captured = capsys.readouterr()
    assert "white: no tissue" in captured.err
    assert "wrote 3 pairs" in captured.out and "skipped 3 tile(s): 3 with under 50% tissue" in captured.out
    assert f"reference {out / 'reference.png'}: held out of the scored pairs, the truth of {held_out}" in captured.out


def test_make_benchmark_keeps_whole_images_and_skips_unseparable_ones(tmp_path, he_tissue):
    flat = np.full((64, 64, 3), (200, 120, 160), np.uint8)  # all "tissue", one colour: no stains to separate
    with pytest.warns(UserWarning, match="00001: cannot separate its stains"):
        make_benchmark([he_tissue, flat], "faded", tmp_path / "whole")
    assert sorted(p.name for p in (tmp_path / "whole" / "A").iterdir()) == ["00000.png"]
    meta = json.loads((tmp_path / "whole" / "meta.json").read_text())
    assert meta["skipped"] == {"background": 0, "unseparable": 1} and meta["images"][0]["at"] is None
    small = make_benchmark(he_tissue, "faded", tmp_path / "small", tile=256, min_tissue=0.5)  # 160x192
    assert [p.name for p in (small / "A").iterdir()] == ["00000.png"]  # smaller than the tile: used whole


def test_make_benchmark_adds_a_split_to_a_bci_folder_and_leaves_the_rest_alone(tmp_path, he_tissue):
    out = tmp_path / "bci"
    make_benchmark([he_tissue, he_tissue[::-1]], None, out, mode="ihc", levels=0)
    (out / "README.txt").write_text("the user's own file")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["data", "make-benchmark", "--mode", "ihc", "--split", "test", "--level", "3+", "--tile", "64",
                 "--source", str(write_image(tmp_path / "he.png", he_tissue)), "--out", str(out)]) == 0
    assert all(p.read_bytes() == data for p, data in before.items())  # train split and meta byte-identical
    tests = sorted(p.name for p in (out / "HE" / "test").iterdir())
    assert tests == sorted(p.name for p in (out / "IHC" / "test").iterdir()) == [
        f"0000{i}_test_3+.png" for i in range(1, 8)]  # 160x192 in 64-pixel tiles: 3 x 3, 7 with tissue
    meta = json.loads((out / "meta_test.json").read_text())
    assert meta["split"] == "test" and meta["pairs"] == 7 and meta["skipped"]["background"] == 2

    with pytest.raises(FileExistsError, match="split 'test' exists already"):
        make_benchmark(he_tissue, None, out, mode="ihc", split="test")
    make_benchmark(he_tissue, None, out, mode="ihc", split="test", overwrite=True)
    assert [p.name for p in (out / "HE" / "test").iterdir()] == ["00001_test_" + json.loads(
        (out / "meta_test.json").read_text())["images"][0]["level"] + ".png"]
    assert all(p.read_bytes() == data for p, data in before.items())

    (out / "meta_test.json").unlink()  # a split of someone else's: never replaced
    with pytest.raises(InputError, match="not made by make-benchmark"):
        make_benchmark(he_tissue, None, out, mode="ihc", split="test", overwrite=True)
    with pytest.raises(InputError, match="neither empty nor a BCI folder"):
        make_benchmark(he_tissue, None, tmp_path, mode="ihc", split="test")


def test_make_benchmark_errors_are_clear(tmp_path, he_tissue):
    with pytest.raises(InputError, match="unknown preset 'dark'"):
        make_benchmark(he_tissue, "dark", tmp_path / "x")
    with pytest.raises(InputError, match="unknown preset 'dark'"):
        preset("dark")
    with pytest.raises(InputError, match="HER2 level"):
        make_benchmark(he_tissue, None, tmp_path / "x", mode="ihc", levels="5+")
    with pytest.raises(InputError, match="2 HER2 levels given for 1"):
        make_benchmark(he_tissue, None, tmp_path / "x", mode="ihc", levels=[0, 1])
    with pytest.raises(InputError, match="no such file"):
        make_benchmark(tmp_path / "missing", "faded", tmp_path / "x")
    with pytest.raises(InputError, match="tile must be a positive"):
        make_benchmark(he_tissue, "faded", tmp_path / "x", tile=0)
    with pytest.warns(UserWarning, match="no tissue"), pytest.raises(InputError, match="no pairs made"):
        make_benchmark(np.full((32, 32, 3), 255, np.uint8), "faded", tmp_path / "x", min_tissue=0.5)
    with pytest.warns(UserWarning, match="cannot separate"), pytest.raises(InputError, match="no pairs made"):
        make_benchmark(np.full((32, 32, 3), 255, np.uint8), "faded", tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".*"))


def test_restain_errors_are_clear(he_tissue):
    with pytest.raises(NoTissueError):
        restain(np.full((16, 16, 3), 255, np.uint8), preset("faded"))
    with pytest.raises(InputError, match="3 stains but the concentrations have 2"):
        restain(he_tissue, Staining(stains=np.eye(3) + 0.1))
    with pytest.raises(InputError, match="scale"):
        Staining(scale=(1.0, -1.0))
    with pytest.raises(InputError, match="gamma"):
        Staining(gamma=0.0)
    with pytest.raises(InputError, match="expected uint8"):
        restain(he_tissue.astype(float), Staining())
