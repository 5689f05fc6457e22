"""Virtual staining end to end on tiny data (paper 002): BCI folders give level labels, the comparator,
DeReStainer and pix2pix recipes train, resume and export models that load through the shared face,
the semantic scores give known answers, and bad data fails clearly."""

import json
import warnings

import numpy as np
import pytest
import torch
from synth import he_image

import stainlab
from stainlab.cli import main
from stainlab.color import EOSIN, HEMATOXYLIN
from stainlab.data.benchmark import make_benchmark
from stainlab.errors import InputError
from stainlab.evaluate import Harness
from stainlab.evaluate.semantic import SemanticScorer, bci_pairs
from stainlab.io.images import write_image
from stainlab.nets.derestainer import DeReStainer
from stainlab.nets.files import load_model
from stainlab.nets.inference import from_net, to_net
from stainlab.training import TrainingData, train
from stainlab.training.data import Domain, TileSampler
from stainlab.training.recipes.steps import CALIBRATION_BATCHES, with_precise_batchnorm

SMALL = {"size": 32, "batch_size": 2, "log_every": 5, "checkpoint_every": 1000, "picture_every": 1000}
TINY_NETS = {**SMALL, "base_channels": 4, "n_blocks": 1, "ndf": 4, "disc_layers": 1}
LEVELS = [0, 1, 2, 3, 3, 2, 1, 0]
SYNTH_STAINS = np.array([HEMATOXYLIN, EOSIN])  # the stains synth.he_image renders with


@pytest.fixture(scope="module")
def bci(tmp_path_factory):
    """A BCI-layout folder: 8 H&E tiles of 48x48 with their simulated IHC at known levels."""
    images = [he_image((48, 48), seed=s) for s in range(len(LEVELS))]
    return make_benchmark(images, out=tmp_path_factory.mktemp("bci") / "data", mode="ihc", levels=LEVELS,
                          source_stains=SYNTH_STAINS)


@pytest.fixture(scope="module")
def data(bci):
    return TrainingData.from_folder(bci)


@pytest.fixture(scope="module")
def comparator(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("comparator")
    result = train("comparator", data, run, preset="tiny", overrides={**SMALL, "batch_size": 8, "steps": 40},
                   progress=False)
    return result


def _derestainer(data, run_dir, comparator_file="none", **settings):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "derestainer: no comparator")
        return train("derestainer", data, run_dir, preset="tiny", progress=False,
                     overrides={**TINY_NETS, "comparator": str(comparator_file), **settings})


def test_bci_folder_gives_paired_data_and_batches_carry_the_levels(data):
    assert data.paired and data.levels == LEVELS
    sampler = TileSampler(Domain(data.a, "A"), Domain(data.b, "B"), 48, True, False, data.levels)
    batch = sampler.draw(np.random.default_rng(0), 6)
    images = torch.cat([to_net(np.array(sampler.a[i])[None]) for i in range(len(LEVELS))])
    drawn = [int(torch.cdist(x.flatten()[None], images.flatten(1)).argmin()) for x in batch["A"]]
    assert batch["level"].dtype == torch.long and batch["level"].tolist() == [LEVELS[i] for i in drawn]


def test_comparator_learns_the_levels_and_exports_a_classifier(comparator):
    first, last = comparator.history[0], comparator.history[-1]
    assert last["ce"] < first["ce"]
    net, info = load_model(comparator.models["classifier.safetensors"])
    assert info["arch"] == "her2-classifier" and info["kwargs"] == {"arch": "resnet18", "levels": 4}
    assert net.fc.out_features == 4


def test_tiny_derestainer_lowers_its_loss_with_the_trained_comparator(data, comparator, tmp_path):
    result = _derestainer(data, tmp_path, comparator.models["classifier.safetensors"], steps=30)
    first, last = result.history[0], result.history[-1]
    assert last["total"] < 0.8 * first["total"] and last["mae"] < first["mae"]
    assert first["cmp"] > 0 and first["h"] > 0 and first["dab"] > 0 and first["level"] > 0
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert (config["lambda_stain"], config["lambda_content"], config["lambda_level"], config["lambda_cmp"]) == \
        (2.0, 13.0, 5.0, 2.0)


def test_ablations_switch_their_terms_off_and_no_comparator_warns(data, tmp_path):
    with pytest.warns(UserWarning, match="L_cmp is left out"):
        no_stain = train("derestainer", data, tmp_path / "a", preset="tiny", progress=False,
                         overrides={**TINY_NETS, "comparator": "none", "ablation": "no_stain", "steps": 1})
    row = no_stain.history[-1]
    assert row["h"] == row["dab"] == row["cmp"] == 0 and row["mae"] > 0
    no_dab = _derestainer(data, tmp_path / "b", ablation="no_dab", steps=1).history[-1]
    assert no_dab["dab"] == 0 and no_dab["h"] > 0


def test_resumed_derestainer_equals_the_uninterrupted_run(data, comparator, tmp_path):
    cmp_file = comparator.models["classifier.safetensors"]
    straight = _derestainer(data, tmp_path / "straight", cmp_file, steps=4, checkpoint_every=2)
    _derestainer(data, tmp_path / "cut", cmp_file, steps=2, checkpoint_every=2)
    with warnings.catch_warnings():
        resumed = train("derestainer", data, tmp_path / "cut", preset="tiny", progress=False, resume=True,
                        overrides={**TINY_NETS, "comparator": str(cmp_file), "steps": 4, "checkpoint_every": 2})
    a = load_model(straight.models["derestainer.safetensors"])[0].state_dict()
    b = load_model(resumed.models["derestainer.safetensors"])[0].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_exported_derestainer_loads_through_the_shared_face_with_identical_output(data, tmp_path):
    result = _derestainer(data, tmp_path, steps=3)
    path = result.models["derestainer.safetensors"]
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["networks"]["G"]
    net, info = load_model(path)
    assert isinstance(net, DeReStainer) and info["kwargs"] == net.config and not net.training
    for key, value in net.state_dict().items():   # the trained weights; BatchNorm statistics recalibrated
        if "running" not in key and "num_batches" not in key:
            torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
    image = he_image((40, 56), seed=9)
    with torch.no_grad():
        expected = from_net(net.generate(to_net(image[None])))[0]
    transform = stainlab.load(f"derestainer:{path}")
    np.testing.assert_array_equal(transform(image), expected)
    transform.save(tmp_path / "fitted.json")
    np.testing.assert_array_equal(stainlab.load(tmp_path / "fitted.json")(image), expected)
    with pytest.raises(InputError, match="not a DeReStainer"):
        stainlab.load(f"derestainer:{_pix2pix(data, tmp_path / 'p2p', 1).models['G.safetensors']}")


def test_exported_batchnorm_statistics_are_the_plain_average_of_the_calibration_batches():
    class Constant:   # a sampler whose i-th draw is all i (in channel 0) for a batch of 2
        def __init__(self):
            self.count = 0

        def draw(self, rng, batch_size):
            self.count += 1
            return {"A": torch.zeros(batch_size, 3, 4, 4).index_fill_(1, torch.tensor([0]), float(self.count))}

    norm = torch.nn.BatchNorm2d(3)
    calibrated = with_precise_batchnorm(norm, Constant(), "A", 2, torch.device("cpu"))
    assert calibrated.running_mean.tolist() == pytest.approx([np.mean(range(1, CALIBRATION_BATCHES + 1)), 0, 0])
    assert calibrated.running_var.tolist() == pytest.approx([0, 0, 0]) and not calibrated.training
    assert norm.running_mean.tolist() == [0, 0, 0] and norm.momentum == calibrated.momentum == 0.1


def _pix2pix(data, run_dir, steps):
    return train("pix2pix", data, run_dir, preset="tiny", progress=False,
                 overrides={**SMALL, "steps": steps, "ngf": 4, "depth": 3, "ndf": 4, "n_layers": 1})


def test_pix2pix_lowers_its_l1_and_loads_as_pix2pix(data, tmp_path):
    result = _pix2pix(data, tmp_path, 30)
    assert result.history[-1]["l1"] < result.history[0]["l1"]
    net, info = load_model(result.models["G.safetensors"])
    assert info["arch"] == "unet-generator" and info["kwargs"] == {"ngf": 4, "depth": 3, "max_channels": 64}
    image = he_image((48, 48), seed=5)
    with torch.no_grad():
        expected = from_net(net(to_net(image[None])))[0]
    np.testing.assert_array_equal(stainlab.load(f"pix2pix:{result.models['G.safetensors']}")(image), expected)


def test_missing_levels_unpaired_data_and_missing_comparator_fail_clearly(data, tmp_path):
    unlabelled = TrainingData(data.a, data.b, True, "A/B folders")
    with pytest.raises(InputError, match="no HER2 level labels.*BCI layout.*lambda_level=0"):
        _derestainer(unlabelled, tmp_path / "a", steps=1)
    assert _derestainer(unlabelled, tmp_path / "b", steps=1, lambda_level=0.0).history[-1]["level"] == 0
    partly = TrainingData(data.a, data.b, True, "mixed", [0, None] + LEVELS[2:])
    with pytest.raises(InputError, match="1 image.*no HER2 level"):
        _derestainer(partly, tmp_path / "c", steps=1)
    with pytest.raises(InputError, match="comparator.*no HER2 level labels"):
        train("comparator", unlabelled, tmp_path / "d", preset="tiny", overrides={"steps": 1}, progress=False)
    with pytest.raises(InputError, match="derestainer trains on paired data"):
        _derestainer(TrainingData(data.a, data.b, False, "unpaired", LEVELS), tmp_path / "e", steps=1)
    with pytest.raises(InputError, match="needs a comparator.*stainlab train comparator"):
        train("derestainer", data, tmp_path / "f", preset="tiny", overrides={"steps": 1}, progress=False)
    with pytest.raises(InputError, match="2 level labels for 8 images"):
        TileSampler(Domain(data.a, "A"), Domain(data.b, "B"), 32, True, False, [0, 1])


# -- semantic scores (paper 002, Sec. 3.2) -----------------------------------------------------------------------
RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def _flat(color, jitter=0):
    return np.full((8, 8, 3), np.clip(np.array(color) + jitter, 0, 255), np.uint8)


def _library():
    """12 ground truths: 6 red of level 0, 4 green of level 1, 2 blue of level 2."""
    colors = [(RED, 0)] * 6 + [(GREEN, 1)] * 4 + [(BLUE, 2)] * 2
    truths = {f"k{i:02d}": _flat(c, i) for i, (c, _) in enumerate(colors)}
    levels = {f"k{i:02d}": level for i, (_, level) in enumerate(colors)}
    return truths, levels


def _scorer():
    truths, levels = _library()
    return SemanticScorer(truths, levels, embed=lambda im: im.reshape(-1, 3).mean(0),
                          hasher=lambda im: im.reshape(-1, 3).mean(0) > 100)


def test_semantic_scores_of_a_hand_made_library_have_known_answers():
    scorer = _scorer()
    # a red output for a level-0 image: its 10 neighbours are the 6 reds and 4 others
    assert scorer.score("k00", _flat(RED)) == {"top1": 1, "top3": 1, "top5": 1, "knn10": 1, "phash": 1}
    # a red output for a level-1 (green) image: every neighbour up to 5 is red, so is the vote
    wrong = scorer.score("k06", _flat(RED))
    assert [wrong[m] for m in ("top1", "top3", "top5", "knn10")] == [0, 0, 0, 0]
    assert wrong["phash"] == pytest.approx(1 / 3)
    # a blue output for the level-2 image: the nearest is right, but 2 blues lose the vote of 10
    right_but_outvoted = scorer.score("k10", _flat(BLUE))
    assert [right_but_outvoted[m] for m in ("top1", "top3", "top5", "knn10")] == [1, 1, 1, 0]
    with pytest.raises(InputError, match="at least 10"):
        SemanticScorer({"a": _flat(RED)}, {"a": 0}, embed=lambda im: im.mean((0, 1)), hasher=lambda im: im)


def test_harness_averages_the_semantic_scores_into_the_paper_accuracies(tmp_path):
    truths, _ = _library()
    outputs = {"k00": RED, "k06": RED, "k10": BLUE}   # the three cases above; the others get their truth
    for key, truth in truths.items():
        write_image(tmp_path / "A" / f"{key}.png", _flat(outputs[key]) if key in outputs else truth)
        write_image(tmp_path / "B" / f"{key}.png", truth)
    from stainlab.data.folders import PairedFolders

    results = Harness(PairedFolders.open(tmp_path), tmp_path / "out", reference=truths["k00"],
                      metric_names=["psnr"], progress=False, semantic=_scorer()).evaluate([])
    row = results["table"][0]
    assert results["metrics"] == ["psnr", "top1", "top3", "top5", "knn10", "phash"]
    assert results["higher_is_better"]["knn10"] is True
    # 12 images: k06 misses everything; among the 11 others only the two blues lose their kNN vote
    assert row["top1"] == pytest.approx(11 / 12) and row["knn10"] == pytest.approx(9 / 12)


def test_cli_trains_and_evaluates_a_virtual_stainer_on_bci_data(bci, comparator, tmp_path, capsys):
    images = [he_image((32, 32), seed=20 + s) for s in range(10)]
    test_root = make_benchmark(images, out=tmp_path / "test", mode="ihc", levels=[0, 1, 2, 3, 0, 1, 2, 3, 0, 1],
                               split="test", source_stains=SYNTH_STAINS)
    run = tmp_path / "run"
    settings = ["--set", "size=32", "--set", "base_channels=4", "--set", "n_blocks=1", "--set", "ndf=4",
                "--set", "disc_layers=1"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "derestainer: no comparator")
        assert main(["train", "derestainer", "--data", str(bci), "-o", str(run), "--preset", "tiny", "--steps", "2",
                     "--ablation", "no_dab", "--comparator", "none", *settings]) == 0
    assert json.loads((run / "config.json").read_text())["config"]["ablation"] == "no_dab"
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(test_root), "--methods", f"derestainer:{run / 'derestainer.safetensors'}",
                 "--metrics", "ssim", "--classifier", str(comparator.models["classifier.safetensors"]),
                 "-o", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == ["ssim", "top1", "top3", "top5", "knn10", "phash"]
    assert results["images"] == len(bci_pairs(test_root).pairs) - 1   # the first pair is the reference
    for row in results["table"]:
        assert row["error"] is None and 0 <= row["top1"] <= row["top3"] <= row["top5"] <= 1
