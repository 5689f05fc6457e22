"""The evaluation harness on a paired set with exact ground truth."""

import json

import numpy as np
import pytest
from PIL import Image

from stainlab import metrics
from stainlab.data.folders import PairedFolders, UnpairedFolders
from stainlab.errors import InputError
from stainlab.io.images import read_image
from stainlab.evaluate import Harness, write_report
from stainlab.evaluate import harness as harness_module
from synth import REFERENCE_STAINS, SOURCE_STAINS, render, separable_maps


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """A/ rendered under other stains and stronger haematoxylin, B/ the same tissue under the reference."""
    root = tmp_path_factory.mktemp("paired")
    for i in range(5):
        conc = separable_maps(seed=20 + i, shape=(96, 112))
        for folder, image in (("A", render(conc * [1.3, 0.8], SOURCE_STAINS)), ("B", render(conc, REFERENCE_STAINS))):
            (root / folder).mkdir(exist_ok=True)
            Image.fromarray(image).save(root / folder / f"t{i}.png")
    return PairedFolders.open(root)


def rows(results):
    return {row["method"]: row for row in results["table"]}


def test_methods_beat_the_baseline_and_failures_are_reported(paired, tmp_path):
    results = Harness(paired, tmp_path, progress=False).evaluate(["macenko", "reinhard", "nonsense"])
    table = rows(results)
    assert list(table) == ["unnormalized", "macenko", "reinhard", "nonsense"]
    assert results["images"] == 4  # the first pair's truth is the reference and is not scored
    assert table["macenko"]["ciede2000"] < 0.5 * table["unnormalized"]["ciede2000"]
    assert table["macenko"]["psnr"] > table["unnormalized"]["psnr"] + 5
    assert table["nonsense"]["error"].startswith("InputError") and table["nonsense"]["images"] == 0
    a, b = paired.read(1)
    assert results["per_image"]["unnormalized"]["t1"]["psnr"] == pytest.approx(metrics.psnr(a, b))
    assert results["per_image"]["unnormalized"]["t1"]["ssim"] == pytest.approx(metrics.ssim(a, b))


def test_report_files_are_written(paired, tmp_path):
    results = Harness(paired, tmp_path, progress=False).evaluate(["macenko"])
    files = write_report(results, tmp_path)
    assert json.loads(files["json"].read_text())["table"][1]["method"] == "macenko"
    csv_lines = files["csv"].read_text().splitlines()
    assert csv_lines[0].startswith("method,psnr,ssim,ciede2000,mae") and len(csv_lines) == 3
    assert "| macenko |" in files["markdown"].read_text()
    page = files["html"].read_text()
    assert "<svg" in page and "montage.png" in page and "macenko" in page
    montage = np.asarray(Image.open(files["montage"]))
    assert montage.shape[0] > 4 * 256 and montage.shape[1] > 3 * 256  # 4 rows; source, truth, macenko


def test_a_rerun_resumes_from_saved_results(paired, tmp_path, monkeypatch):
    first = Harness(paired, tmp_path, progress=False).evaluate(["reinhard"])

    def no_refit(name):
        raise AssertionError("a finished method must not be fitted again")

    monkeypatch.setattr(harness_module, "load", no_refit)
    again = Harness(paired, tmp_path, progress=False).evaluate(["reinhard"])
    assert again["per_image"] == first["per_image"]


def test_bad_arguments(paired, tmp_path):
    with pytest.raises(InputError, match="unknown metric"):
        Harness(paired, tmp_path, metric_names=["psnr", "accuracy"])
    single = PairedFolders(paired.root, paired.pairs[:1])
    with pytest.raises(InputError, match="one pair only"):
        Harness(single, tmp_path)


def test_distribution_distance_needs_no_pairing_and_tracks_colour(paired, tmp_path):
    results = Harness(paired, tmp_path, metric_names=["wasserstein"], progress=False).evaluate(["macenko"])
    table = rows(results)
    assert table["macenko"]["wasserstein"] < 0.5 * table["unnormalized"]["wasserstein"]


def test_unpaired_data_is_scored_against_the_target_domain(paired, tmp_path):
    data = UnpairedFolders.open(paired.root)
    results = Harness(data, tmp_path, progress=False).evaluate(["macenko"])
    table = rows(results)
    assert results["metrics"] == ["wasserstein"] and results["images"] == 5 and not results["paired"]
    # A perfect normalizer would output B itself: its distance to the pooled target is the floor.
    target = [read_image(p)[0] for p in data.b]
    pool = np.concatenate([t.reshape(-1, 3) for t in target])[:, None, :]
    floor = np.mean([metrics.channel_wasserstein(t, pool) for t in target])
    before, after = table["unnormalized"]["wasserstein"], table["macenko"]["wasserstein"]
    assert (before - after) / (before - floor) > 0.6  # closes most of the gap to the floor
    assert write_report(results, tmp_path)["montage"].is_file()
    with pytest.raises(InputError, match="need pairs"):
        Harness(data, tmp_path, metric_names=["psnr"])


def test_a_labelled_method_is_rescored_when_its_file_changes(paired, tmp_path):
    import os

    import stainlab

    saved = tmp_path / "method.json"
    stainlab.load("grayscale").save(saved)
    first = rows(Harness(paired, tmp_path / "report", progress=False).evaluate({"mine": str(saved)}))["mine"]
    again = rows(Harness(paired, tmp_path / "report", progress=False).evaluate({"mine": str(saved)}))["mine"]
    assert again["ciede2000"] == first["ciede2000"]  # same file: the saved run is reused
    stainlab.load("macenko").fit(paired.read(0)[1]).save(saved)
    os.utime(saved, ns=(1, 1))  # a different file, whatever the clock's resolution
    changed = rows(Harness(paired, tmp_path / "report", progress=False).evaluate({"mine": str(saved)}))["mine"]
    assert changed["ciede2000"] < 0.5 * first["ciede2000"]
    assert (tmp_path / "report" / "outputs" / "mine").is_dir()
