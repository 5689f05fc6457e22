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


def test_parameters_change_the_scores_and_invalidate_the_saved_run(paired, tmp_path, monkeypatch):
    from stainlab.evaluate.harness import labelled

    out = tmp_path / "report"
    plain = rows(Harness(paired, out, progress=False).evaluate(["reinhard"]))["reinhard"]
    methods = labelled(["reinhard", "masked=reinhard"])  # one method twice, under two labels
    results = Harness(paired, out, progress=False).evaluate(methods, {"masked": {"mask": True}})
    table = rows(results)
    assert table["reinhard"]["ciede2000"] == plain["ciede2000"]  # the unchanged method is reused
    assert table["masked"]["ciede2000"] < table["reinhard"]["ciede2000"] - 0.2  # the parameter reached it
    assert results["methods"]["masked"] == {"spec": "reinhard", "params": {"mask": True}}
    saved = json.loads((out / "runs" / "masked.json").read_text())
    assert saved["identity"]["params"] == {"mask": True}

    # The same label with another parameter is scored again, not taken from the saved run.
    loads = []
    real_load = harness_module.load
    monkeypatch.setattr(harness_module, "load", lambda spec, **kw: loads.append(kw) or real_load(spec, **kw))
    again = rows(Harness(paired, out, progress=False).evaluate(["reinhard"], {"reinhard": {"mask": True}}))
    assert again["reinhard"]["ciede2000"] == pytest.approx(table["masked"]["ciede2000"])
    assert loads == [{"mask": True}, {"mask": True}]  # checked, then fitted: the saved run was stale
    loads.clear()
    Harness(paired, out, progress=False).evaluate(["reinhard"], {"reinhard": {"mask": True}})
    assert loads == [{"mask": True}]  # checked only: the same parameters reuse the saved run


def test_bad_parameters_stop_the_run_before_any_work(paired, tmp_path):
    with pytest.raises(InputError, match=r"reinhard\.nope=1: reinhard has no parameter nope \(its parameters: mask"):
        Harness(paired, tmp_path, progress=False).evaluate(["reinhard"], {"reinhard": {"nope": 1}})
    with pytest.raises(InputError, match=r"macenko\.alpha=2: no method labelled 'macenko' \(methods: reinhard\)"):
        Harness(paired, tmp_path, progress=False).evaluate(["reinhard"], {"macenko": {"alpha": 2}})
    with pytest.raises(InputError, match="the report's own 'truth' column"):
        Harness(paired, tmp_path, progress=False).evaluate({"truth": "reinhard"})
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "runs").exists()


def test_labels_are_short_and_unambiguous():
    from stainlab.evaluate.harness import labelled

    assert labelled(["macenko", "fitted/vahadane.json", "unet:runs/a/student.safetensors", "mine=reinhard"]) == {
        "macenko": "macenko", "vahadane.json": "fitted/vahadane.json",
        "unet:student": "unet:runs/a/student.safetensors", "mine": "reinhard"}
    # two short labels that would read the same keep their whole specs
    assert list(labelled(["unet:a/student.safetensors", "unet:b/student.safetensors"])) == [
        "unet:a/student.safetensors", "unet:b/student.safetensors"]
    with pytest.raises(InputError, match="given twice"):
        labelled(["macenko", "macenko"])
    with pytest.raises(InputError, match="neither part empty"):
        labelled(["=macenko"])


def test_a_fitted_file_is_scored_with_its_own_target(paired, tmp_path):
    import stainlab

    off_target = tmp_path / "fitted" / "reinhard.json"
    off_target.parent.mkdir()
    stainlab.load("reinhard").fit(paired.read(2)[0]).save(off_target)  # fitted on a source, not the truth
    results = Harness(paired, tmp_path / "report", progress=False).evaluate(["reinhard", str(off_target)])
    table, scored = rows(results), results["per_image"]["unnormalized"]
    saved = stainlab.load(off_target)
    as_saved = np.mean([metrics.ciede2000(saved(a), b) for i, (a, b) in enumerate(map(paired.read, range(5)))
                        if paired.pairs[i][0].stem in scored])
    assert table["reinhard.json"]["ciede2000"] == pytest.approx(as_saved)  # not refitted to the reference
    assert table["reinhard.json"]["ciede2000"] > table["reinhard"]["ciede2000"] + 0.5


def test_a_rerun_with_fewer_methods_leaves_no_stale_files(paired, tmp_path):
    from stainlab.evaluate import folder

    first = write_report(Harness(paired, tmp_path, progress=False).evaluate(["reinhard", "grayscale", "histogram"]),
                         tmp_path)
    wide = Image.open(first["montage"]).size[0]
    assert (tmp_path / "runs" / "histogram.json").is_file() and (tmp_path / "outputs" / "histogram").is_dir()
    files = write_report(Harness(paired, tmp_path, progress=False).evaluate(["reinhard", "grayscale"]), tmp_path)
    for name in ("json", "csv", "markdown", "html"):
        assert "histogram" not in files[name].read_text(), name
    assert not (tmp_path / "runs" / "histogram.json").exists() and not (tmp_path / "outputs" / "histogram").exists()
    assert Image.open(files["montage"]).size[0] < wide  # one column fewer
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["grayscale.json", "reinhard.json",
                                                                     "unnormalized.json"]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["grayscale", "reinhard", "source", "truth"]
    assert {p.name for p in tmp_path.iterdir()} <= set(folder.ENTRIES)

    # A method that fails adds no column; the montage shows the inputs alone.
    narrow = Image.open(files["montage"]).size[0]
    files = write_report(Harness(paired, tmp_path, progress=False).evaluate(["nonsense"]), tmp_path)
    assert Image.open(files["montage"]).size[0] < narrow and not (tmp_path / "outputs" / "reinhard").exists()


def test_a_folder_that_is_not_a_report_is_refused_untouched(paired, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not a stainlab report folder \(it holds notes.txt\)"):
        Harness(paired, tmp_path, progress=False)
    unmarked = tmp_path / "project"
    (unmarked / "outputs" / "figures").mkdir(parents=True)
    with pytest.raises(InputError, match="no .stainlab-report.json"):
        Harness(paired, unmarked, progress=False)
    (tmp_path / "study" / "data").mkdir(parents=True)  # the user's data, not a preset rendered for a report
    with pytest.raises(InputError, match=r"\(it holds data\)"):
        Harness(paired, tmp_path / "study", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "project", "study"]
    assert list((unmarked / "outputs").iterdir()) == [unmarked / "outputs" / "figures"]


def test_a_report_from_before_the_mark_is_still_used(paired, tmp_path):
    from stainlab.evaluate import folder

    Harness(paired, tmp_path, progress=False).evaluate(["reinhard"])
    (tmp_path / folder.MARK).unlink()
    results = Harness(paired, tmp_path, progress=False).evaluate(["reinhard"])
    assert rows(results)["reinhard"]["images"] == 4 and (tmp_path / folder.MARK).is_file()


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0.0, "0.0 ms"), (0.0042, "4.2 ms"), (0.012, "12 ms"), (0.9999, "1.0 s"), (1.44, "1.4 s"),
    (9.97, "10 s"), (42.3, "42 s"), (59.6, "1 min 0 s"), (125, "2 min 5 s"), (3900, "1 h 5 min")])
def test_times_read_in_units_people_use(seconds, text):
    from stainlab.evaluate.report import format_seconds

    assert format_seconds(seconds) == text


def _table(metric: str, up: bool) -> dict:
    values = {"unnormalized": 5.0, "a": 1.0, "b": None, "c": 9.0}
    return {"metrics": [metric, "mae"], "higher_is_better": {metric: up, "mae": False}, "table": [
        {"method": name, metric: value, "mae": 0.0, "seconds_per_image": 0.5, "fit_seconds": 2.0, "images": 3,
         "error": None if value is not None else "failed"} for name, value in values.items()]}


def test_the_table_is_ranked_best_first_in_the_metric_direction():
    from stainlab.evaluate.report import markdown_table, ranked

    assert [r["method"] for r in ranked(_table("psnr", True))] == ["c", "unnormalized", "a", "b"]
    assert [r["method"] for r in ranked(_table("ciede2000", False))] == ["a", "unnormalized", "c", "b"]
    lines = markdown_table(_table("ciede2000", False)).splitlines()[2:]
    assert [line.split(" | ")[0] for line in lines] == ["| a", "| unnormalized", "| c", "| b"]
    assert lines[0].split(" | ")[3] == "0.5"  # machine-readable seconds in Markdown


def test_the_html_report_ranks_shows_times_and_the_reference(paired, tmp_path):
    import re

    results = Harness(paired, tmp_path, progress=False).evaluate(["grayscale", "reinhard", "macenko"])
    page = write_report(results, tmp_path)["html"].read_text()
    table = page[page.index("<table>"):page.index("</table>")]
    order = re.findall(r"<tr(?: class=\"baseline\")?><td>([^<]+)</td>", table)
    by_ciede = sorted(results["table"], key=lambda r: r["ciede2000"])  # first metric: psnr, higher is better
    assert order == [r["method"] for r in sorted(results["table"], key=lambda r: -r["psnr"])]
    assert order[0] != "unnormalized" and order[-1] == by_ciede[-1]["method"] == "grayscale"
    assert re.search(r"<td>[\d.]+ (ms|s)</td>", table)  # times in units, not bare seconds
    held_out = [i for i, (a, _) in enumerate(paired.pairs) if a.stem not in results["per_image"]["unnormalized"]]
    name = paired.pairs[held_out[0]][0].stem
    assert '<img src="reference.png"' in page and f"the ground truths&#x27; representative, not scored: {name}: " in page
    reference, _ = read_image(tmp_path / "reference.png")
    np.testing.assert_array_equal(reference, paired.read(held_out[0])[1])
