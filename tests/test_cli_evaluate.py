"""`stainlab evaluate` and `stainlab data make-benchmark` from the command line."""

import json

from PIL import Image

from stainlab.cli import main
from synth import he_image


def test_make_benchmark_then_evaluate(tmp_path, capsys):
    src = tmp_path / "tissue"
    src.mkdir()
    for i in range(3):
        Image.fromarray(he_image((96, 96), seed=30 + i, glass=0.1)).save(src / f"t{i}.png")
    bench = tmp_path / "bench"
    assert main(["data", "make-benchmark", "--preset", "long-he", "--source", str(src), "--out", str(bench)]) == 0
    assert len(list((bench / "A").iterdir())) == 2 and (bench / "reference.png").is_file()  # one tile held out
    report = tmp_path / "report"
    code = main(["evaluate", "--methods", "macenko,nonsense", "--data", str(bench), "-o", str(report)])
    assert code == 1  # the unknown method is reported, the others scored
    out = capsys.readouterr()
    assert "| macenko |" in out.out and "nonsense" in out.err
    results = json.loads((report / "results.json").read_text())
    rows = {r["method"]: r for r in results["table"]}
    assert rows["macenko"]["images"] == 2 and rows["macenko"]["error"] is None
    assert (report / "report.html").is_file() and (report / "montage.png").is_file()


def test_evaluate_on_a_preset_uses_real_tissue_and_resumes(tmp_path, capsys):
    report = tmp_path / "report"
    args = ["evaluate", "--methods", "reinhard", "--data", "understained", "-o", str(report)]
    assert main(args) == 0
    first = json.loads((report / "results.json").read_text())
    assert first["images"] == 3 and len(list((report / "data" / "A").iterdir())) == 3  # 4 quarters, 1 the reference
    assert first["reference"].startswith("reference.png of the benchmark: held out of the scored pairs")
    assert main(args) == 0  # resumes: same data, same numbers
    assert json.loads((report / "results.json").read_text())["per_image"] == first["per_image"]
    assert main(["evaluate", "--data", "long-he", "-o", str(report)]) == 1  # another preset, same folder
    assert "holds preset 'understained'" in capsys.readouterr().err


def test_unknown_data_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--data", "no-such-thing", "-o", str(tmp_path / "r")]) == 1
    assert "neither a folder" in capsys.readouterr().err
    assert not (tmp_path / "r" / "results.json").exists()


def test_evaluate_recognises_the_hev_layout(tmp_path, capsys):
    for folder, scale in (("HE", (1.0, 1.0)), ("Long HE", (1.6, 1.4))):
        (tmp_path / "hev" / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(he_image((64, 64), seed=40 + i, scale=scale)).save(tmp_path / "hev" / folder / f"{i}.png")
    assert main(["evaluate", "--methods", "reinhard", "--data", str(tmp_path / "hev"), "-o", str(tmp_path / "r")]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["paired"] is False and results["metrics"] == ["wasserstein"]
    rows = {r["method"]: r for r in results["table"]}
    assert rows["reinhard"]["wasserstein"] < rows["unnormalized"]["wasserstein"]


def _bench(root):
    """Three pairs: A/ over-stained, B/ the same tissue as the truth."""
    for folder, scale in (("A", (1.5, 1.3)), ("B", (1.0, 1.0))):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(he_image((80, 80), seed=50 + i, scale=scale)).save(root / folder / f"t{i}.png")
    return root


def test_evaluate_takes_method_parameters_and_fitted_files(tmp_path, capsys):
    bench, report = _bench(tmp_path / "bench"), tmp_path / "report"
    fitted = tmp_path / "fitted" / "reinhard.json"
    assert main(["fit", "-m", "reinhard", "-r", str(bench / "A" / "t2.png"), "-o", str(fitted)]) == 0
    methods = ["--methods", f"reinhard,masked=reinhard,{fitted}"]
    assert main(["evaluate", *methods, "--param", "masked.mask=true", "--data", str(bench), "-o", str(report)]) == 0
    results = json.loads((report / "results.json").read_text())
    assert results["methods"] == {"reinhard": {"spec": "reinhard", "params": {}},
                                  "masked": {"spec": "reinhard", "params": {"mask": True}},
                                  "reinhard.json": {"spec": str(fitted), "params": {}}}
    rows = {r["method"]: r for r in results["table"]}
    assert rows["masked"]["ciede2000"] != rows["reinhard"]["ciede2000"] != rows["reinhard.json"]["ciede2000"]
    assert "masked: reinhard, mask=True" in (report / "report.html").read_text().replace("</b>", "")
    capsys.readouterr()

    bad = {"masked.nope=1": "masked.nope=1: reinhard has no parameter nope (its parameters: mask, lut_bits)",
           "other.mask=true": "other.mask=True: no method labelled 'other' (methods: reinhard, masked, reinhard.json)",
           "reinhard.json.mask=true": "fitted/reinhard.json: parameters are stored in the file"}
    for param, message in bad.items():
        assert main(["evaluate", *methods, "--param", param, "--data", str(bench), "-o", str(tmp_path / "r2")]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()  # refused before any work
    assert main(["evaluate", "--param", "mask=true", "--data", str(bench), "-o", str(tmp_path / "r2")]) == 2
    assert "expected METHOD.KEY=VALUE, e.g. macenko.alpha=2" in capsys.readouterr().err


def test_a_rerun_with_fewer_methods_shows_only_those(tmp_path):
    bench, report = _bench(tmp_path / "bench"), tmp_path / "report"
    assert main(["evaluate", "--methods", "reinhard,grayscale", "--data", str(bench), "-o", str(report)]) == 0
    assert (report / "outputs" / "grayscale").is_dir()
    assert main(["evaluate", "--methods", "reinhard", "--data", str(bench), "-o", str(report)]) == 0
    assert "grayscale" not in (report / "report.html").read_text() + (report / "results.csv").read_text()
    assert not (report / "outputs" / "grayscale").exists() and not (report / "runs" / "grayscale.json").exists()


def test_evaluate_refuses_a_folder_that_is_not_a_report(tmp_path, capsys):
    (tmp_path / "thesis.docx").write_text("months of work")
    assert main(["evaluate", "--methods", "reinhard", "--data", "understained", "-o", str(tmp_path)]) == 1
    assert "not a stainlab report folder (it holds thesis.docx)" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.docx"]  # no preset rendered into it either


def test_evaluate_cuts_a_preset_source_as_make_benchmark_does(tmp_path):
    """One large image given to `evaluate --data PRESET` is cut into make-benchmark's tiles, so it is
    not a single pair (which could only serve as the reference)."""
    from stainlab.cli import build_parser
    from stainlab.data.benchmark import MIN_TISSUE, TILE
    from stainlab.io.images import write_image

    defaults = build_parser().parse_args(["data", "make-benchmark", "--source", "x", "--out", "y"])
    assert (defaults.tile, defaults.min_tissue) == (TILE, MIN_TISSUE)
    region = write_image(tmp_path / "region.png", he_image((512, 512), seed=60, glass=0.05))
    report = tmp_path / "report"
    assert main(["evaluate", "--methods", "reinhard", "--data", "faded", "--source", str(region), "-o", str(report)]) == 0
    results = json.loads((report / "results.json").read_text())
    assert results["images"] == 3 and "region_y" in results["reference"]  # 4 tiles of 256, one the reference
