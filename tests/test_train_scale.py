"""Training at scale (issue 14): batches as a function of the step, loader workers, mixed precision,
several processes (gloo on the CPU), training from whole slides, and the one-line refusals."""

import json

import numpy as np
import pytest
import torch

import stainlab.wsi.references as references
from stainlab.cli import main
from stainlab.errors import InputError
from stainlab.io.images import write_image
from stainlab.metrics.structural import ssim_torch
from stainlab.nets.files import load_model
from stainlab.nets.inference import to_net
from stainlab.precision import check_precision
from stainlab.training import TrainingData, resume_run, train
from stainlab.training.data import Domain, TileSampler, step_batches
from stainlab.training.loop import loader_workers, make_config
from synth import SOURCE_STAINS, concentration_maps, render
from test_train_slides import half_glass, write_slide

RUN = {"size": 48, "batch_size": 4, "log_every": 1, "checkpoint_every": 1000, "picture_every": 1000,
       "ngf": 4, "n_blocks": 1, "ndf": 4, "pool_size": 0}


@pytest.fixture(scope="module")
def data():
    maps = [concentration_maps((64, 64), seed=s, glass=0.1) for s in range(4)]
    return TrainingData([render(c) for c in maps], [render(c * [1.0, 1.4], SOURCE_STAINS) for c in maps], False)


@pytest.fixture(scope="module")
def sampler(data):
    return TileSampler(Domain(data.a, "A"), Domain(data.b, "B"), 32, paired=False)


def test_a_step_batch_is_a_function_of_seed_and_step_and_shares_split_it(sampler):
    whole = sampler.step_batch(7, 3, 4)
    assert whole["A"].dtype == torch.uint8 and whole["A"].shape == (4, 32, 32, 3)
    again = sampler.step_batch(7, 3, 4)
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert not torch.equal(whole["A"], sampler.step_batch(7, 4, 4)["A"])
    halves = [sampler.step_batch(7, 3, 4, rank, 2) for rank in (0, 1)]  # two processes' shares
    assert torch.equal(torch.cat([h["A"] for h in halves]), whole["A"])
    assert torch.equal(torch.cat([h["B"] for h in halves]), whole["B"])


def test_loader_workers_hand_over_the_same_batches_in_step_order(sampler):
    inline = list(step_batches(sampler, 1, 2, 5, 11))
    made_ahead = list(step_batches(sampler, 1, 2, 5, 11, workers=2))
    assert len(made_ahead) == 6
    assert all(torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"]) for x, y in zip(inline, made_ahead))


def test_batches_reach_the_network_as_to_net_makes_them(sampler):
    batch = sampler.step_batch(0, 0, 2)
    expected = to_net(batch["A"].numpy())
    assert torch.equal(to_net(batch["A"], torch.device("cpu"), torch.contiguous_format), expected)
    last = to_net(batch["A"], torch.device("cpu"), torch.channels_last)
    assert torch.equal(last, expected) and last.is_contiguous(memory_format=torch.channels_last)


def test_loader_workers_default_to_none_on_the_cpu():
    assert loader_workers(make_config("cyclegan")) == 0
    assert loader_workers(make_config("cyclegan", overrides={"workers": 3})) == 3


def test_precisions_the_device_cannot_run_are_one_line():
    cpu = torch.device("cpu")
    check_precision("bf16", cpu)
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU, not cpu; use --precision bf16 or fp32"):
        check_precision("fp16", cpu)
    with pytest.raises(InputError, match="precision 'fp8': use fp32, bf16, fp16"):
        check_precision("fp8", cpu)


def test_delicate_losses_stay_fp32_under_autocast():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((2, 3, 32, 32), dtype=np.float32))
    y = (x + torch.from_numpy(rng.normal(0, 0.05, x.shape).astype(np.float32))).clamp(0, 1)
    exact = ssim_torch(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ssim_torch(x, y)
        unguarded = ssim_torch.__wrapped__(x, y)  # the same formula left to autocast
    assert mixed.dtype == torch.float32 and float(abs(mixed - exact)) < 1e-6
    assert unguarded.dtype == torch.bfloat16 and float(abs(unguarded.float() - exact)) > 3e-4  # 1 - SSIM off by 5 %


def test_bf16_training_follows_fp32_and_resumes_exactly(data, tmp_path):
    fp32 = train("cyclegan", data, tmp_path / "fp32", preset="tiny", overrides={**RUN, "steps": 4}, progress=False)
    bf16 = train("cyclegan", data, tmp_path / "bf16", preset="tiny", progress=False,
                 overrides={**RUN, "steps": 4, "precision": "bf16"})
    # same batches, losses within bf16's rounding; the 4-channel discriminator's loss amplifies it step by
    # step (on a CPU with native bf16 matrix units, AMX, it was 5.4% off fp32's at the fourth step)
    for a, b in zip(fp32.history, bf16.history):
        assert b["cycle"] == pytest.approx(a["cycle"], rel=0.01) and b["adv"] == pytest.approx(a["adv"], rel=0.1)
    assert torch.load(tmp_path / "bf16" / "checkpoint.pt", weights_only=True)["precision"]["name"] == "bf16"
    train("cyclegan", data, tmp_path / "part", preset="tiny", overrides={**RUN, "steps": 2, "precision": "bf16"},
          progress=False)
    resumed = resume_run(tmp_path / "part", data, overrides={"steps": 4}, progress=False)
    assert resumed.history == [{**row, "seconds": r["seconds"]} for row, r in zip(bf16.history, resumed.history)]
    with pytest.raises(InputError, match="precision=fp32 differs from the run's precision=bf16"):
        resume_run(tmp_path / "part", data, overrides={"precision": "fp32"}, progress=False)


def test_channels_last_trains_the_same_steps(data, tmp_path):
    plain = train("cyclegan", data, tmp_path / "plain", preset="tiny", overrides={**RUN, "steps": 2}, progress=False)
    last = train("cyclegan", data, tmp_path / "last", preset="tiny", progress=False,
                 overrides={**RUN, "steps": 2, "channels_last": True})
    for a, b in zip(plain.history, last.history):
        assert b["cycle"] == pytest.approx(a["cycle"], rel=1e-4)


def test_two_gloo_processes_train_as_one_and_resume_as_one(data, tmp_path):
    """Same global batch and seed: the logged losses agree and the generators differ by Adam's
    rounding (a gradient near 0 whose sign the summation order flips moves a weight by up to lr)."""
    one = train("cyclegan", data, tmp_path / "one", preset="tiny", overrides={**RUN, "steps": 3}, progress=False)
    two = train("cyclegan", data, tmp_path / "two", preset="tiny", overrides={**RUN, "steps": 3}, progress=False,
                processes=2)
    assert two.step == 3 and set(two.models) == set(one.models)
    for a, b in zip(one.history, two.history):
        for key in ("adv", "cycle", "identity", "D"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6)
    x = to_net(np.stack([data.a[0][:48, :48]]))
    outputs = [load_model(run / "G_AB.safetensors")[0](x).detach() for run in (tmp_path / "one", tmp_path / "two")]
    assert float((outputs[0] - outputs[1]).abs().max()) < 0.02  # 2.5 levels of 255
    resumed = resume_run(tmp_path / "two", data, overrides={"steps": 4}, progress=False)  # now one process
    assert resumed.step == 4 and len(resumed.history) == 4


def test_a_batch_that_does_not_split_over_the_processes_is_refused(data, tmp_path):
    with pytest.raises(InputError, match="a batch of 4 does not split over 3 processes"):
        train("cyclegan", data, tmp_path / "r", preset="tiny", overrides={**RUN, "steps": 1}, progress=False,
              processes=3)
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_an_unavailable_device_or_precision_is_one_line(data, tmp_path, capsys):
    for name, images in (("A", data.a), ("B", data.b)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i, image in enumerate(images):
            write_image(tmp_path / "data" / name / f"{i}.png", image)
    start = ["train", "cyclegan", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "run"), "--preset", "tiny"]
    asks = [(["--precision", "fp16"], "precision fp16: mixed precision in fp16 needs a CUDA GPU, not cpu")]
    if not torch.cuda.is_available():
        asks.append((["--device", "cuda"], "device cuda: this torch is built without CUDA; use --device cpu"))
    for extra, message in asks:
        assert main(start + extra) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_training_from_whole_slides_at_a_level(tmp_path, monkeypatch):
    monkeypatch.setattr(references, "REFERENCE_SAMPLE_SIDE", 256)  # these small TIFFs count as slides
    for name, seed in (("A", 0), ("B", 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        write_slide(tmp_path / "data" / name / f"s{seed}.ome.tif", half_glass(seed=seed))
    data = TrainingData.from_folder(tmp_path / "data")
    assert data.slides and not data.paired
    code = main(["train", "cyclegan", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "run"), "--preset",
                 "tiny", "--steps", "2", "--slide-level", "1", "--set", "size=64", "--set", "ngf=4",
                 "--set", "n_blocks=1", "--set", "ndf=4", "-q"])
    assert code == 0
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["slide_level"] == 1 and (tmp_path / "run" / "G_AB.safetensors").is_file()


@pytest.mark.parametrize("recipe", ["cyclegan", "ccgan", "pcnet", "pix2pix", "distill", "derestainer"])
def test_each_papers_generator_runs_at_its_papers_tile_size(recipe):
    """pix2pix's preset once asked its 5x5 reflect-padded U-Net for 8 blocks at 256 px (1 px at the
    bottom), which no input of that size can pass."""
    import warnings

    from stainlab.training.loop import recipe_class

    extra = {"features": "random"} if recipe == "pcnet" else {"comparator": "none"} if recipe == "derestainer" else {}
    config = make_config(recipe, "paper", extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = recipe_class(recipe)(config, np.random.default_rng(0))
    x = torch.zeros(1, 3, config.size, config.size)
    with torch.no_grad():
        for module, arch, kwargs, info in built.exports().values():
            out = module.generate(x) if hasattr(module, "generate") else module.eval()(x)
            assert out.shape == x.shape, (arch, out.shape)


def test_fp16s_gradient_scaler_is_checkpointed_and_resumes_exactly(data, tmp_path, monkeypatch):
    """fp16 is refused on the CPU for speed, not for arithmetic: allowed here, the scaler's path runs
    (overflowing steps skipped, the scale halved) and its state resumes exactly."""
    for where in ("stainlab.precision", "stainlab.training.loop"):
        monkeypatch.setattr(f"{where}.check_precision", lambda name, device: None)
    settings = {**RUN, "size": 32, "precision": "fp16"}
    straight = train("cyclegan", data, tmp_path / "straight", preset="tiny", overrides={**settings, "steps": 4},
                     progress=False)
    train("cyclegan", data, tmp_path / "part", preset="tiny", overrides={**settings, "steps": 2}, progress=False)
    resumed = resume_run(tmp_path / "part", data, overrides={"steps": 4}, progress=False)
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history] == \
        [{k: v for k, v in row.items() if k != "seconds"} for row in straight.history]
    scalers = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["precision"]["scaler"]
               for run in ("straight", "part")]
    assert scalers[0] == scalers[1] and scalers[0]["scale"] < 65536.0  # started at 2**16, halved on overflow


def test_loader_workers_draw_slide_tiles_as_the_main_process_does(tmp_path, monkeypatch):
    monkeypatch.setattr(references, "REFERENCE_SAMPLE_SIDE", 256)
    from stainlab.training.slide_tiles import SlideDomain

    paths = [write_slide(tmp_path / f"s{seed}.ome.tif", half_glass(seed=seed)) for seed in (0, 1)]
    sampler = TileSampler(SlideDomain(paths[:1], "A", level=1), SlideDomain(paths[1:], "B", level=1), 32)
    inline = list(step_batches(sampler, 3, 2, 0, 4))
    in_workers = list(step_batches(sampler, 3, 2, 0, 4, workers=2))
    assert all(torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"]) for x, y in zip(inline, in_workers))


def test_a_refusal_in_a_loader_worker_reaches_the_user_as_its_one_line(data):
    small = TileSampler(Domain(data.a, "A"), Domain([np.zeros((16, 16, 3), np.uint8)], "B"), 32)
    for workers in (0, 2):
        with pytest.raises(InputError) as refused:
            next(step_batches(small, 0, 2, 0, 3, workers=workers))
        assert str(refused.value) == ("B[0] (16x16) is smaller than the training tile size 32; use smaller tiles "
                                      "(--set size=N) or larger images")


def test_a_refusal_in_one_of_several_processes_ends_the_run_with_its_line(data, tmp_path):
    small = TrainingData(data.a, [image[:16, :16] for image in data.b], False)
    with pytest.raises(InputError, match=r"^B\[\d\] \(16x16\) is smaller than the training tile size 48"):
        train("cyclegan", small, tmp_path / "r", preset="tiny", overrides={**RUN, "steps": 2}, progress=False,
              processes=2)


def _large_result(rows: int) -> list:
    """What a long run's rank 0 hands back: more than a pipe holds (64 KiB)."""
    return [{"step": i, "loss": float(i)} for i in range(rows)]


def test_several_processes_hand_back_a_result_larger_than_a_pipe():
    from stainlab.training.distributed import spawn

    assert len(spawn(2, _large_result, 20_000)) == 20_000  # once hung: the result waited for a reader
