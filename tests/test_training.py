"""The training loop and its recipes on tiny data: losses fall, runs resume to identical weights, model
files reload to identical outputs and load through the shared face, bad settings and data fail clearly."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import stainlab
from stainlab.cli import main
from stainlab.errors import InputError
from stainlab.io.images import read_image, write_image
from stainlab.nets.files import build_network, load_model
from stainlab.nets.inference import apply_network
from stainlab.nets.weights import WeightsNotFoundError
from stainlab.training import TrainingData, make_config, resume_run, train
from stainlab.training.loop import learning_rate_factor
from stainlab.training.recipes.generators import generator_spec
from synth import SOURCE_STAINS, concentration_maps, render

LR = 0.01  # paper 000's initial learning rate
SMALL = {"size": 48, "batch_size": 2, "log_every": 2, "checkpoint_every": 1000, "picture_every": 1000}
CYCLEGAN = {**SMALL, "skips": True, "ssim_cycle": True, "ngf": 4, "n_blocks": 1, "ndf": 4, "pool_size": 4}


@pytest.fixture(scope="module")
def pairs():
    """Four 64x64 H&E tiles (A) and the same tissue under other stains and stronger eosin (B)."""
    maps = [concentration_maps((64, 64), seed=s, glass=0.1) for s in range(4)]
    return TrainingData([render(c) for c in maps], [render(c * [1.0, 1.4], SOURCE_STAINS) for c in maps], True)


@pytest.fixture(scope="module")
def teacher(pairs, tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher")
    train("cyclegan", pairs, run, preset="tiny", overrides={**CYCLEGAN, "steps": 4}, progress=False)
    return run


def test_settings_layer_paper_defaults_variants_preset_and_overrides():
    paper = make_config("cyclegan")
    assert (paper.generator, paper.lambda_cycle, paper.lambda_identity, paper.lambda_ssim) == \
        ("resnet-generator", 10.0, 5.0, 0.0)
    variant = make_config("cyclegan", overrides={"skips": True, "ssim_cycle": True})
    assert (variant.generator, variant.ngf, variant.n_blocks) == ("skip-resnet-generator", 32, 10)  # paper 003
    assert (variant.lambda_cycle, variant.lambda_ssim, variant.lambda_identity, variant.schedule) == \
        (5.0, 5.0, 0.0, "step")
    resize = make_config("cyclegan", overrides={"skips": True, "upsampling": "resize"})
    assert generator_spec(resize) == ("skip-resnet-generator", {"ngf": 32, "n_blocks": 10, "upsampling": "resize"})
    tiny = make_config("cyclegan", "tiny", {"skips": True, "ngf": 6})
    assert (tiny.generator, tiny.ngf, tiny.n_blocks, tiny.size) == ("skip-resnet-generator", 6, 2, 128)
    ccgan = make_config("ccgan")
    assert (ccgan.lambda_adv, ccgan.lambda_cycle, ccgan.lambda_identity, ccgan.lambda_paired) == (1, 10, 10, 10)
    pcnet = make_config("pcnet")
    assert (pcnet.lambda_cycle, pcnet.lambda_identity, pcnet.lambda_paired, pcnet.lambda_feat) == (10,) * 4
    distill = make_config("distill")
    assert (distill.lr, distill.schedule, distill.student) == (0.01, "cosine", "unet")
    with pytest.raises(InputError, match="unknown setting.*learning_rate"):
        make_config("cyclegan", overrides={"learning_rate": 1})
    with pytest.raises(InputError, match="unknown recipe"):
        make_config("stargan")


def test_learning_rate_schedules():
    step = make_config("cyclegan", overrides={"ssim_cycle": True})
    factors = [learning_rate_factor(step, s, epoch_steps=10) for s in (0, 19, 20, 39, 40, 60)]
    np.testing.assert_allclose(factors, [1, 1, 0.9, 0.9, 0.81, 0.729])  # x0.9 every 2 epochs (paper 003)
    cosine = make_config("distill", overrides={"steps": 100})
    assert learning_rate_factor(cosine, 0, 1) == 1.0
    assert learning_rate_factor(cosine, 50, 1) == pytest.approx(0.5)
    assert learning_rate_factor(cosine, 99, 1) < 1e-3  # annealed towards 0 (paper 000)


def test_distilled_student_lowers_its_loss_and_reloads_identically(pairs, teacher, tmp_path):
    result = train("distill", pairs, tmp_path / "student", preset="tiny",
                   overrides={**SMALL, "steps": 100, "teacher": str(teacher), "log_every": 10, "lr": LR,
                              "base_channels": 8},
                   progress=False)
    assert len(list((tmp_path / "student" / "teacher" / "target_fake").glob("*.png"))) == 4  # A -> fake B
    assert len(list((tmp_path / "student" / "teacher" / "input_fake").glob("*.png"))) == 4  # B -> fake A
    model = result.models["student.safetensors"]
    net, info = load_model(model)
    torch.manual_seed(0)  # the run's seed: the student as it started
    untrained = build_network("unet", {"base_channels": 8}).eval()
    # over every training pair (the rows of log.csv are 20 crops each, too few to compare)
    assert _pairs_l1(net, tmp_path / "student", pairs) < 0.8 * _pairs_l1(untrained, tmp_path / "student", pairs)
    assert (info["arch"], info["recipe"], info["step"]) == ("unet", "distill", 100)
    t = stainlab.load(f"unet:{model}")
    image = pairs.a[0]
    np.testing.assert_array_equal(t(image), apply_network(net, image))
    t.save(tmp_path / "unet.json")
    np.testing.assert_array_equal(stainlab.load(tmp_path / "unet.json")(image), t(image))
    for name in ("config.json", "log.csv", "losses.png", "checkpoint.pt"):
        assert (tmp_path / "student" / name).is_file()
    assert json.loads((tmp_path / "student" / "config.json").read_text())["config"]["teacher"] == str(teacher)


def _pairs_l1(net, run: Path, pairs) -> float:
    """Mean L1 (network units) of ``net`` over the distillation pairs of ``run``: A -> teacher's B,
    teacher's A -> B, A -> B."""
    fakes = {name: [read_image(p)[0] for p in sorted((run / "teacher" / name).glob("*.png"))]
             for name in ("target_fake", "input_fake")}
    inputs = [*pairs.a, *fakes["input_fake"], *pairs.a]
    targets = [*fakes["target_fake"], *pairs.b, *pairs.b]
    return float(np.mean([np.abs(apply_network(net, x) / 127.5 - y / 127.5).mean() for x, y in zip(inputs, targets)]))


def test_resumed_run_equals_the_uninterrupted_run(pairs, tmp_path):
    settings = {**CYCLEGAN, "checkpoint_every": 3}
    straight = train("cyclegan", pairs, tmp_path / "straight", overrides={**settings, "steps": 6}, seed=3,
                     progress=False)
    train("cyclegan", pairs, tmp_path / "cut", overrides={**settings, "steps": 3}, seed=3, progress=False)
    resumed = train("cyclegan", pairs, tmp_path / "cut", overrides={**settings, "steps": 6}, seed=3,
                    resume=True, progress=False)
    assert resumed.step == 6 and [r["step"] for r in resumed.history] == [r["step"] for r in straight.history]
    for name in ("G_AB.safetensors", "G_BA.safetensors"):
        a, b = load_model(straight.models[name])[0], load_model(resumed.models[name])[0]
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=key)


def test_a_run_folder_is_not_silently_replaced_or_resumed_with_other_settings(pairs, tmp_path):
    train("cyclegan", pairs, tmp_path, overrides={**CYCLEGAN, "steps": 1}, progress=False)
    with pytest.raises(InputError, match="--resume.*--overwrite"):
        train("cyclegan", pairs, tmp_path, overrides={**CYCLEGAN, "steps": 1}, progress=False)
    with pytest.raises(InputError, match="other settings"):
        train("cyclegan", pairs, tmp_path, overrides={**CYCLEGAN, "steps": 2, "lr": 1e-3}, resume=True,
              progress=False)
    with pytest.raises(InputError, match="nothing to resume|no checkpoint.pt"):
        train("cyclegan", pairs, tmp_path / "new", overrides={**CYCLEGAN, "steps": 1}, resume=True,
              progress=False)
    with pytest.raises(InputError, match="trained on data in memory, not read from a folder"):
        resume_run(tmp_path, overrides={"steps": 2}, progress=False)


def test_paired_recipes_refuse_unpaired_data(pairs, tmp_path):
    unpaired = TrainingData(pairs.a, pairs.b[:3], paired=False, description="A/B folders")
    with pytest.raises(InputError, match="ccgan trains on paired data"):
        train("ccgan", unpaired, tmp_path, overrides={**SMALL, "steps": 1}, progress=False)


def test_ccgan_and_pcnet_train_and_export_generators(pairs, tmp_path):
    ccgan = train("ccgan", pairs, tmp_path / "ccgan", preset="tiny",
                  overrides={**SMALL, "steps": 2, "size": 32, "depth": 3, "ngf": 4, "ndf": 4}, progress=False)
    assert {r for r in ccgan.history[-1]} >= {"adv", "cycle", "identity", "paired", "D"}
    pcnet = train("pcnet", pairs, tmp_path / "pcnet", preset="tiny",
                  overrides={**SMALL, "steps": 2, "size": 32, "depth": 3, "ngf": 4, "features": "random"},
                  progress=False)
    assert set(pcnet.history[-1]) >= {"cycle", "identity", "paired", "feat"}
    for result, kind in ((ccgan, "ccgan"), (pcnet, "pcnet")):
        out = stainlab.load(f"{kind}:{result.models['G_AB.safetensors']}")(pairs.a[1])
        assert out.shape == pairs.a[1].shape and out.dtype == np.uint8


def test_pcnet_without_the_vgg16_file_names_it(pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsNotFoundError, match="vgg16-397923af.pth"):
        train("pcnet", pairs, tmp_path / "run", overrides={**SMALL, "steps": 1}, progress=False)


def test_stainnet_student_loads_as_stainnet(pairs, teacher, tmp_path):
    result = train("distill", pairs, tmp_path, preset="tiny",
                   overrides={**SMALL, "steps": 2, "teacher": str(teacher), "student": "stainnet"}, progress=False)
    model = result.models["student.safetensors"]
    t = stainlab.load(f"stainnet:{model}")
    exact = t.transform(pairs.a[0], exact=True)
    np.testing.assert_array_equal(exact, apply_network(load_model(model)[0].double(), pairs.a[0]))
    with pytest.raises(InputError, match="holds a stainnet network.*'stainnet:"):
        stainlab.load(f"unet:{model}")


def test_distill_needs_a_teacher(pairs, tmp_path):
    with pytest.raises(InputError, match="needs a teacher"):
        train("distill", pairs, tmp_path, overrides={**SMALL, "steps": 1}, progress=False)
    with pytest.raises(InputError, match="no G_AB.safetensors"):
        train("distill", pairs, tmp_path / "b", overrides={**SMALL, "steps": 1, "teacher": str(tmp_path)},
              progress=False)


def _write_folder(pairs, root):
    for domain, images in (("A", pairs.a), ("B", pairs.b)):
        for i, image in enumerate(images):
            write_image(root / domain / f"t{i}.png", image)
    return root


def test_train_command_writes_models_used_by_normalize(pairs, tmp_path, capsys):
    data = _write_folder(pairs, tmp_path / "data")
    run = tmp_path / "run"

    def args(steps, *more):
        return ["train", "cyclegan", "--data", str(data), "-o", str(run), "--preset", "tiny",
                "--skips", "--ssim-cycle", "--set", "size=48", "--set", "ngf=4", "--set", "n_blocks=1",
                "--steps", str(steps), *more]

    assert main(args(2)) == 0
    assert "use as: -m cyclegan --model" in capsys.readouterr().out
    assert main(args(2)) == 1 and "--resume" in capsys.readouterr().err
    assert main(args(5, "--resume")) == 0  # the settings it started with, given again: only --steps changes
    assert load_model(run / "G_AB.safetensors")[1]["step"] == 5
    out = tmp_path / "out"
    assert main(["normalize", str(data / "A"), "-m", "cyclegan", "--model",
                 str(run / "G_AB.safetensors"), "-o", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 4


@pytest.mark.parametrize("recipe, own, others", [
    ("cyclegan", ["--skips", "--ssim-cycle", "--lambda-cycle FLOAT", "default: 10.0, 5.0 with --ssim-cycle",
                  "--generator {resnet-generator,skip-resnet-generator,unet-generator}"],
     ["--teacher", "--student", "--features", "--comparator", "--ablation", "--lambda-feat"]),
    ("ccgan", ["--lambda-paired FLOAT", "pairs only, Eq. 5); default: 10.0", "--skips"], ["--teacher", "--features"]),
    ("distill", ["--teacher RUN_OR_FILE", "--student {unet,stainnet}", "--direction {AB,BA}"],
     ["--skips", "--ssim-cycle", "--lambda-cycle", "--features", "--comparator"]),
    ("pcnet", ["--features vgg16|random|PATH", "default: vgg16", "--lambda-feat FLOAT"], ["--skips", "--teacher"]),
    ("derestainer", ["--comparator FILE|none", "--ablation {full,no_stain,no_dab}"], ["--skips", "--student"]),
    ("comparator", ["--arch resnet50|resnet18"], ["--skips", "--teacher", "--comparator FILE|none"]),
])
def test_each_recipe_has_its_own_options_and_the_common_ones(recipe, own, others, capsys):
    assert main(["train", recipe, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps help lines
    for option in own + ["--data DIR", "-o RUN_DIR", "--preset {paper,tiny}", "--steps STEPS", "--seed SEED",
                         "--resume", "--overwrite", "--device DEVICE", "--set KEY=VALUE"]:
        assert option in text, option
    for option in others:
        assert option not in text, option


def test_resume_needs_only_the_run_folder_and_goes_on_as_the_unbroken_run(pairs, tmp_path, monkeypatch, capsys):
    data = _write_folder(pairs, tmp_path / "data")
    monkeypatch.chdir(tmp_path)

    def start(run, steps):
        return main(["train", "cyclegan", "--data", "data", "-o", str(run), "--seed", "3", "--skips", "--ssim-cycle",
                     "--set", "size=48", "--set", "ngf=4", "--set", "n_blocks=1", "--set", "ndf=4",
                     "--set", "pool_size=4", "--set", "batch_size=2", "--set", "log_every=2", "--steps", str(steps)])

    assert start(tmp_path / "straight", 6) == 0 and start(tmp_path / "cut", 3) == 0
    assert main(["train", "cyclegan", "-o", "cut"]) == 1
    assert "--data DIR is needed to start a run" in capsys.readouterr().err
    monkeypatch.chdir(data / "A")  # the run folder alone says where its data is
    assert main(["train", "cyclegan", "--resume", "-o", str(tmp_path / "cut"), "--steps", "6"]) == 0
    for name in ("G_AB.safetensors", "G_BA.safetensors"):
        a, b = load_model(tmp_path / "straight" / name)[0], load_model(tmp_path / "cut" / name)[0]
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=key)
    assert (tmp_path / "cut" / "config.json").read_text() == (tmp_path / "straight" / "config.json").read_text()
    logs = [[{k: v for k, v in row.items() if k != "seconds"}
             for row in csv.DictReader((tmp_path / run / "log.csv").read_text().splitlines())]
            for run in ("straight", "cut")]
    assert logs[0] == logs[1] and len(logs[0]) == 3


def test_a_resume_with_other_settings_is_refused_by_name_and_leaves_the_run_alone(pairs, tmp_path, capsys):
    data = _write_folder(pairs, tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "cyclegan", "--data", str(data), "-o", str(run), "--preset", "tiny", "--steps", "1",
                 "--set", "size=48", "--set", "ngf=4", "--set", "n_blocks=1", "--set", "ndf=4"]) == 0
    config, other = (run / "config.json").read_bytes(), _write_folder(pairs, tmp_path / "other")
    for more, message in ((["--set", "lr=1e-4"], "lr=0.0001 differs from the run's lr=0.0005"),
                          (["--lambda-cycle", "5"], "lambda_cycle=5.0 differs from the run's lambda_cycle=10.0"),
                          (["--skips"], "skips=True differs from the run's skips=False"),
                          (["--seed", "1"], "seed=1 differs from the run's seed=0"),
                          (["--preset", "paper"], "preset=paper differs from the run's preset=tiny"),
                          (["--data", str(other)], f"data={other} differs from the run's data={data}"),
                          (["--set", "learning_rate=1"], "unknown setting(s) learning_rate")):
        assert main(["train", "cyclegan", "--resume", "-o", str(run), "--steps", "3", *more]) == 1
        assert message in capsys.readouterr().err
    assert main(["train", "ccgan", "--resume", "-o", str(run)]) == 1
    assert "recipe=ccgan differs from the run's recipe=cyclegan" in capsys.readouterr().err
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")  # fails after the settings are checked
    assert main(["train", "cyclegan", "--resume", "-o", str(run), "--steps", "3"]) == 1
    assert (run / "config.json").read_bytes() == config


def test_a_distilled_stainnet_is_used_as_stainnet(pairs, teacher, tmp_path, capsys):
    data = _write_folder(pairs, tmp_path / "data")
    assert main(["train", "distill", "--data", str(data), "-o", str(tmp_path / "run"), "--teacher", str(teacher),
                 "--student", "stainnet", "--preset", "tiny", "--steps", "1", "--set", "size=48"]) == 0
    assert f"use as: -m stainnet --model {tmp_path / 'run' / 'student.safetensors'}" in capsys.readouterr().out


def test_reverse_student_learns_from_the_reverse_teacher(pairs, teacher, tmp_path):
    result = train("distill", pairs, tmp_path, preset="tiny",
                   overrides={**SMALL, "steps": 1, "teacher": str(teacher), "direction": "BA"}, progress=False)
    from stainlab.io.images import read_image

    made = read_image(tmp_path / "teacher" / "target_fake" / "000000.png")[0]  # teacher output for real B[0]
    np.testing.assert_array_equal(made, apply_network(load_model(teacher / "G_BA.safetensors")[0], pairs.b[0]))
    assert load_model(result.models["student.safetensors"])[1]["direction"] == "B->A"
