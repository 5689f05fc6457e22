"""`stainlab evaluate --device --batch-size` and the harness's device/batch_size (issue 14): networks run
where asked, in batches of images, with the same scores; classical methods ignore both."""

import json

import pytest
import torch
from PIL import Image
from torch import nn

from stainlab.cli import main
from stainlab.data.folders import PairedFolders
from stainlab.errors import InputError
from stainlab.evaluate import Harness
from stainlab.transforms.learned import NetworkTransform
from synth import he_image

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Four pairs (A/ over-stained, B/ the truth); one becomes the reference, three are scored."""
    root = tmp_path_factory.mktemp("bench")
    for folder, scale in (("A", (1.5, 1.3)), ("B", (1.0, 1.0))):
        (root / folder).mkdir()
        for i in range(4):
            Image.fromarray(he_image((72, 80), seed=60 + i, scale=scale)).save(root / folder / f"t{i}.png")
    return root


@pytest.fixture
def calls(monkeypatch):
    """(device, batch size, images) of each batched network call."""
    seen = []
    many = NetworkTransform.transform_many

    def spy(self, images, windows=False):
        seen.append((self.device, self.batch_size, len(images)))
        return many(self, images, windows)

    monkeypatch.setattr(NetworkTransform, "transform_many", spy)
    return seen


def _evaluate(bench, out, model, *extra):
    assert main(["evaluate", "--methods", f"reinhard,unet:{model}", "--data", str(bench), "-o", str(out),
                 *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_device_and_batch_size_give_the_same_scores(bench, model, tmp_path, calls, capsys):
    plain = _evaluate(bench, tmp_path / "plain", model)
    assert calls == []  # on the CPU by default: one image a call
    batched = _evaluate(bench, tmp_path / "batched", model, "--device", "cpu", "--batch-size", "2")
    assert calls == [("cpu", 2, 2)]  # three images: two in one call, the last alone
    for label, scores in plain["per_image"].items():
        assert batched["per_image"][label].keys() == scores.keys()
        for key, values in scores.items():
            # equal here; a batched network call may round a grey level differently elsewhere
            assert batched["per_image"][label][key] == pytest.approx(values, rel=1e-3, abs=1e-6)
    assert "reinhard" not in batched["warnings"]  # a classical method ignores the device, silently
    assert "warning" not in capsys.readouterr().err


@no_gpu
def test_an_unavailable_device_is_one_line_and_exit_status_2(bench, model, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--methods", f"unet:{model}", "--data", str(bench), "-o", str(out),
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("stainlab evaluate: error: argument --device: device cuda: ")
    assert err[-1].endswith("use --device cpu")
    assert not out.exists()


def test_the_harness_keywords_reach_the_network(bench, model, tmp_path, calls):
    results = Harness(PairedFolders.open(bench), tmp_path, progress=False, device="cpu", batch_size=3).evaluate(
        {"unet": f"unet:{model}", "reinhard": "reinhard"})
    assert calls == [("cpu", 3, 3)]
    assert all(row["error"] is None and row["images"] == 3 for row in results["table"])


def test_the_harness_refuses_bad_run_options_before_any_work(bench, tmp_path):
    with pytest.raises(InputError, match="batch_size must be a whole number from 1 to 1024, got 0"):
        Harness(PairedFolders.open(bench), tmp_path / "a", progress=False, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="^device cuda: "):
            Harness(PairedFolders.open(bench), tmp_path / "b", progress=False, device="cuda")
        assert not (tmp_path / "b").exists()


@no_gpu
def test_the_classifier_moves_to_the_device(monkeypatch):
    from stainlab.evaluate.semantic import SemanticScorer
    from stainlab.training.recipes import comparator

    monkeypatch.setattr(comparator, "load_classifier", lambda path: nn.Conv2d(3, 3, 1))
    with pytest.raises(InputError, match="^device cuda: "):
        SemanticScorer.from_classifier("c.safetensors", None, device="cuda")
