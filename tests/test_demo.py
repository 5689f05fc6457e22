"""``stainlab demo``: re-staining gives exact ground truth, and the run writes what it promises."""

import json

import numpy as np
import pytest
from skimage import data

from stainlab import demo
from stainlab.cli import main
from stainlab.color.deconvolution import separate
from stainlab.io import read_image
from stainlab.io.montage import GAP, HEADER
from stainlab.threads import free_cores, limit_threads
from stainlab.transforms import normalizers


@pytest.fixture(scope="module")
def tissue():
    return data.immunohistochemistry()


def test_restain_with_unit_factors_returns_the_tissue_exactly(tissue):
    crop = demo.crop(tissue, (0, 0))
    assert np.array_equal(demo.restain(crop, demo.Restain("same", "same", (0, 0))), crop)


def test_restain_scales_the_haematoxylin_concentration(tissue):
    crop = demo.crop(tissue, (256, 256))
    doubled = demo.restain(crop, demo.Restain("h2", "h2", (256, 256), hematoxylin=2.0))
    before, after = separate(crop, "hdab"), separate(doubled, "hdab")
    clear = (before[..., 0] > 0.1) & (doubled < 250).all(-1) & (doubled > 5).all(-1)  # no clipping
    ratio = after[..., 0][clear] / before[..., 0][clear]
    assert clear.mean() > 0.3 and abs(np.median(ratio) - 2.0) < 0.05
    assert np.abs(after[..., 1] - before[..., 1])[clear].mean() < 0.03  # DAB left as it was


def test_run_writes_outputs_montage_and_summary(tmp_path, capsys):
    summary = demo.run(tmp_path, methods=["reinhard", "no-such-method"])
    names = [s.name for s in demo.SOURCES]
    for folder in ["inputs", "truth", "reinhard"]:
        assert all((tmp_path / folder / f"{n}.png").is_file() for n in names)
    assert (tmp_path / "inputs" / "reference.png").is_file()
    assert not (tmp_path / "no-such-method").exists()

    montage, _ = read_image(tmp_path / "montage.png")
    columns = 4  # source, reference, truth, reinhard
    step = demo.CROP + GAP
    assert montage.shape == (HEADER + len(names) * step, GAP + columns * step, 3)
    top, left = HEADER + step, GAP + 3 * step  # second row, reinhard column, above the caption
    reinhard_out = read_image(tmp_path / "reinhard" / f"{names[1]}.png")[0]
    assert np.array_equal(montage[top:top + 200, left:left + demo.CROP], reinhard_out[:200])

    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "no-such-method" in summary["skipped"]
    assert "skipped no-such-method" in capsys.readouterr().out
    raw, fixed = summary["unnormalized"]["delta_e2000"], summary["methods"]["reinhard"]["delta_e2000"]
    assert all(value > 5 for value in raw.values())  # the re-staining is a visible change
    assert fixed["yellow-light"] < raw["yellow-light"] - 3  # a global colour cast is what Reinhard fixes
    assert summary["methods"]["reinhard"]["seconds_per_image"] > 0  # timed, but speed is benchmarks' to judge


def test_demo_command_runs_every_method_or_says_why_not(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert set(summary["methods"]) | set(summary["skipped"]) == set(normalizers())  # no silent skips
    assert "reinhard" in summary["methods"] and summary["seconds"] > 0  # speed: benchmarks, not tests
    for method in summary["methods"]:
        assert len(list((tmp_path / "d" / method).glob("*.png"))) == len(demo.SOURCES)
    montage, _ = read_image(tmp_path / "d" / "montage.png")
    assert montage.shape[1] == GAP + (3 + len(summary["methods"])) * (demo.CROP + GAP)
    assert f"montage:  {tmp_path / 'd' / 'montage.png'}" in capsys.readouterr().out


def test_learned_stainnet_learns_each_look_from_other_tissue_and_beats_the_input(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "STAINNET_STEPS", 150)  # cheap: the demo's 400 steps reach about 1.5
    limit_threads(free_cores())  # as the command line does: torch's spinning threads on busy cores crawl
    summary = demo.run(tmp_path, methods=["reinhard"], learned=True)
    raw, stainnet = summary["unnormalized"]["delta_e2000"], summary["methods"]["stainnet"]
    assert all(stainnet["delta_e2000"][name] < raw[name] / 2 for name in raw)  # 11.7 -> about 2 at 150 steps
    assert stainnet["delta_e2000_mean"] < summary["methods"]["reinhard"]["delta_e2000_mean"]
    assert "held-out" in stainnet["trained"]["how"] and "150 SGD steps" in stainnet["trained"]["how"]
    for source in demo.SOURCES:
        assert (tmp_path / "runs" / "stainnet" / f"{source.name}.safetensors").is_file()
    montage, _ = read_image(tmp_path / "montage.png")
    assert montage.shape[1] == GAP + 5 * (demo.CROP + GAP)  # source, reference, truth, reinhard, stainnet
    assert not (tmp_path / "montage-teacher-student.png").exists() and "teacher_student" not in summary

