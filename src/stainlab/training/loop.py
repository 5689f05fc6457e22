"""The one training loop behind every recipe (``stainlab train RECIPE``).

A run lives in one folder:

- ``config.json``: recipe, preset, every setting, seed and data (with the folder it was read from),
  written when the run starts;
- ``checkpoint.pt``: networks, optimisers, gradient scaler, step, random-generator states and the log so
  far, written atomically every ``checkpoint_every`` steps and at the end; :func:`resume_run` continues
  from it with the settings and data of ``config.json`` (only the step count and where it runs may
  change) and, on the same device and precision, draws exactly what the uninterrupted run would have;
- ``log.csv``: the loss terms averaged over every ``log_every`` steps, with learning rate and time;
- ``losses.png`` and ``samples/step_NNNNNN.png``: the loss curves and a montage of fixed samples, each epoch;
- the model files (``*.safetensors``, architecture in the header, see :mod:`stainlab.nets.files`),
  loadable with ``stainlab.load("unet:RUN/student.safetensors")`` and friends.

Each step's batch is a function of the seed and the step (:mod:`stainlab.training.data`), made ahead by
loader worker processes; the step runs in the config's precision (:mod:`stainlab.precision`). With
several processes (:mod:`stainlab.training.distributed`) each trains on its share of the batch and only
rank 0 writes the folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

import stainlab.networks as networks
from stainlab.errors import DivergedError, InputError
from stainlab.io.atomic import atomic_path, atomic_write_text
from stainlab.nets.files import save_model
from stainlab.nets.devices import torch_device
from stainlab.nets.inference import from_net, to_net
from stainlab.precision import check_precision
from stainlab.threads import usable_cores
from stainlab.training import distributed
from stainlab.training.data import step_batches
from stainlab.training.plots import plot_losses, save_montage
from stainlab.training.recipe import Recipe, TrainConfig, TrainingData

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
MIN_PICTURE_STEPS = 25
SAMPLES = 4
MAX_LOADER_WORKERS = 8
CHANGEABLE_ON_RESUME = ("steps", "device", "workers", "compile", "channels_last")  # how long and where, not what


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    history: list[dict]
    models: dict[str, Path]


def recipe_class(name: str) -> type[Recipe]:
    """The recipe named ``name``, from the network registry (:func:`stainlab.networks.recipes`)."""
    recipes = networks.recipes()
    if name not in recipes:
        raise InputError(f"unknown recipe {name!r}; known: {', '.join(recipes)}")
    return networks.resolve(recipes[name])


def make_config(recipe: str, preset: str = "paper", overrides: dict | None = None) -> TrainConfig:
    """The recipe's config: its paper defaults, the settings of the variants switched on in ``overrides``
    (e.g. ``{"skips": True}``), the preset (``"paper"`` or ``"tiny"``), then ``overrides``."""
    cls = recipe_class(recipe)
    if preset not in ("paper", "tiny"):
        raise InputError(f"unknown preset {preset!r} (paper or tiny)")
    overrides = dict(overrides or {})
    values: dict = {}
    for flag, implied in cls.variants.items():  # a paper variant's settings, under the preset and overrides
        if overrides.get(flag):
            values.update(implied)
    values.update(cls.tiny if preset == "tiny" else {})
    values.update(overrides)
    known = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{recipe}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls.config_class(**values)


def learning_rate_factor(config: TrainConfig, step: int, epoch_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) under ``config.schedule``."""
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":  # paper 003, Sec. 4.2
        return config.decay ** ((step // epoch_steps) // config.decay_epochs)
    if config.schedule == "cosine":  # paper 000, Sec. III-D: cosine annealing to 0
        return 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
    raise InputError(f"unknown learning-rate schedule {config.schedule!r} (constant, step or cosine)")


class _Run:
    """The state of one run between steps (kept small; the loop is :func:`train`)."""

    def __init__(self, recipe: Recipe, run_dir: Path, seed: int) -> None:
        self.recipe, self.run_dir, self.seed = recipe, run_dir, seed
        self.step = 0
        self.history: list[dict] = []
        self.window: dict[str, list[float]] = {}  # loss values since the last full log row

    def checkpoint(self) -> None:
        state = {
            "step": self.step, "history": self.history, "window": self.window, "seed": self.seed,
            "networks": {k: m.state_dict() for k, m in self.recipe.networks.items()},
            "optimizers": {k: o.state_dict() for k, o in self.recipe.optimizers.items()},
            "extra": self.recipe.extra_state(),
            "precision": self.recipe.precision.state_dict(),
            "numpy_rng": self.recipe.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.recipe.device) if self.recipe.device.type == "cuda" else None,
        }
        with atomic_path(self.run_dir / CHECKPOINT) as tmp:
            torch.save(state, tmp)

    def restore(self) -> None:
        state = torch.load(self.run_dir / CHECKPOINT, map_location=self.recipe.device, weights_only=True)
        self.recipe.precision.load_state_dict(state.get("precision", {"name": "fp32", "scaler": {}}))
        for key, module in self.recipe.networks.items():
            module.load_state_dict(state["networks"][key])
        for key, optimizer in self.recipe.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self.recipe.load_extra_state(state["extra"])
        self.recipe.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and self.recipe.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.recipe.device)
        self.step, self.history, self.window = state["step"], state["history"], state["window"]
        if self.history and self.history[-1]["step"] % self.recipe.config.log_every:
            self.history.pop()  # the partial row at the end of the earlier run: its values are in the window

    def save(self) -> dict[str, Path]:
        """Checkpoint, log and model files, all in step with each other."""
        self.checkpoint()
        self.write_log()
        return self.export()

    def write_log(self) -> None:
        if not self.history:
            return
        columns = list(dict.fromkeys(key for row in self.history for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.run_dir / "log.csv", buffer.getvalue())

    def export(self) -> dict[str, Path]:
        models = {}
        for file_name, (module, arch, kwargs, info) in self.recipe.exports().items():
            models[file_name] = save_model(self.run_dir / file_name, module, arch, kwargs,
                                           recipe=self.recipe.name, step=self.step, **info)
        return models

    def pictures(self, sample_batch: dict[str, torch.Tensor]) -> None:
        plot_losses(self.history, self.run_dir / "losses.png", f"{self.recipe.name}: losses by step")
        with torch.no_grad():
            columns = [(header, from_net(images)) for header, images in self.recipe.samples(sample_batch)]
        save_montage(columns, self.run_dir / "samples" / f"step_{self.step:06d}.png")


def _prepare_folder(run_dir: Path, overwrite: bool) -> None:
    if (run_dir / CHECKPOINT).exists() and not overwrite:
        raise InputError(f"{run_dir}: a run is there already; resume it (--resume) or replace it (--overwrite)")
    run_dir.mkdir(parents=True, exist_ok=True)


def read_run(run_dir) -> dict:
    """The record of the run in ``run_dir`` (its ``config.json``: recipe, preset, seed, data and settings)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise InputError(f"{run_dir}: no {CHECKPOINT} to resume from")
    if not (run_dir / CONFIG).is_file():
        raise InputError(f"{run_dir}: no {CONFIG} beside its {CHECKPOINT}, so its settings are unknown")
    return json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))


def train(recipe: str, data: TrainingData, run_dir, *, preset: str = "paper", overrides: dict | None = None,
          seed: int = 0, resume: bool = False, overwrite: bool = False, progress: bool = True,
          processes: int = 1) -> TrainResult:
    """Train ``recipe`` on ``data`` into ``run_dir`` and write its model files; see the module docstring.
    ``resume=True`` continues the run in ``run_dir`` instead (:func:`resume_run`), which must have been
    started with these settings. ``processes > 1`` trains in that many processes on this machine
    (:mod:`stainlab.training.distributed`); under ``torchrun`` the processes are already there."""
    if resume:
        return resume_run(run_dir, data, recipe=recipe, preset=preset, seed=seed, overrides=overrides,
                          progress=progress, processes=processes)
    config = make_config(recipe, preset, overrides)
    _check_run(config, processes, resumed=False)
    run_dir = Path(run_dir)
    if distributed.launched_rank() == 0:
        _prepare_folder(run_dir, overwrite)
    record = {"recipe": recipe, "preset": preset, "seed": seed, "data": data.description, "folder": data.folder,
              "paired": data.paired}
    return _train(run_dir, record, config, data, False, progress, processes)


def resume_run(run_dir, data: TrainingData | None = None, *, recipe: str | None = None, preset: str | None = None,
               seed: int | None = None, overrides: dict | None = None, progress: bool = True,
               processes: int = 1) -> TrainResult:
    """Continue the run in ``run_dir`` from its checkpoint with the recipe, preset, seed, settings and data
    (read again from its folder) that its ``config.json`` records, exactly as the uninterrupted run would
    have gone on. Only the settings of :data:`CHANGEABLE_ON_RESUME` (the steps and where the run goes on:
    device, loader workers, compilation, memory layout; also the number of processes) may change: anything else given
    (``recipe``, ``preset``, ``seed``, a setting such as the precision, ``data`` from another folder) must
    match the record, or it is refused by name."""
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    overrides = dict(overrides or {})
    changes = {key: overrides.pop(key) for key in CHANGEABLE_ON_RESUME if key in overrides}
    config = make_config(record["recipe"], record["preset"], {**record["config"], **overrides, **changes})
    given = [(key, value, record[key]) for key, value in (("recipe", recipe), ("preset", preset), ("seed", seed))
             if value is not None]
    given += [(key, value, record["config"].get(key)) for key, value in overrides.items()]
    if data is not None and data.folder and record.get("folder"):
        given.append(("data", data.folder, record["folder"]))
    for key, value, before in given:
        if value != before:
            raise InputError(f"{run_dir}: {key}={value} differs from the run's {key}={before}; a resumed run keeps "
                             f"the settings it started with (only {', '.join(CHANGEABLE_ON_RESUME)} may change): "
                             "start a new run folder for other settings")
    if data is None:
        if not record.get("folder"):
            raise InputError(f"{run_dir}: the run was trained on data {record['data']}, not read from a folder; "
                             "give the data to resume it")
        data = TrainingData.from_folder(record["folder"], paired=record.get("paired"))
    _check_run(config, processes, resumed=True)
    return _train(run_dir, record, config, data, True, progress, processes)


def _train(run_dir: Path, record: dict, config: TrainConfig, data: TrainingData, resumed: bool,
           progress: bool, processes: int) -> TrainResult:
    """Train in this process, in ``processes`` new ones, or in the process group ``torchrun`` started
    (the settings checked by :func:`_check_run`)."""
    if processes > 1:
        if distributed.launched_size() > 1:
            raise InputError("--nproc starts its own processes; under torchrun leave it out (torchrun's "
                             "--nproc_per_node says how many)")
        return distributed.spawn(processes, _train_here, run_dir, record, config, data, resumed, progress)
    return _train_here(run_dir, record, config, data, resumed, progress)


def _train_here(run_dir: Path, record: dict, config: TrainConfig, data: TrainingData, resumed: bool,
                progress: bool) -> TrainResult:
    """Build the recipe, restore a resumed run's checkpoint, record the run and train it to ``config.steps``."""
    world = distributed.join(config.device)
    recipe, seed = record["recipe"], record["seed"]
    torch.manual_seed(seed)
    run = _Run(recipe_class(recipe)(config, np.random.default_rng(seed)), run_dir, seed)
    run.recipe.prepare()
    if not world.main:
        world.barrier()  # rank 0 makes what the sampler writes (a teacher's outputs) first
    sampler = run.recipe.sampler(data, run_dir)
    if world.main:
        world.barrier()
    device = run.recipe.device
    samples = {k: v.to(device) for k, v in sampler.draw(np.random.default_rng(seed + 1),
                                                        min(SAMPLES, len(sampler))).items()}
    if resumed:
        run.restore()
    if world.main:  # a resumed run's record changes (its step count) only once its checkpoint has loaded
        record = {**record, "config": json.loads(json.dumps(asdict(config)))}
        atomic_write_text(run_dir / CONFIG, json.dumps(record, indent=1))
    epoch_steps = config.epoch_steps or max(1, math.ceil(len(sampler) / config.batch_size))
    picture_steps = config.picture_every or epoch_steps * max(1, math.ceil(MIN_PICTURE_STEPS / epoch_steps))
    started = time.perf_counter() - (run.history[-1]["seconds"] if run.history else 0.0)  # resumed: cumulative
    bar = _progress(config.steps, run.step, recipe, progress and world.main)
    batches = step_batches(sampler, seed, config.batch_size, run.step, config.steps, workers=loader_workers(config),
                           pin_memory=device.type == "cuda", rank=world.rank, world=world.size)
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    while run.step < config.steps:
        factor = learning_rate_factor(config, run.step, epoch_steps)
        for optimizer in run.recipe.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = config.lr * factor
        batch = {k: to_net(v, device, layout) if k in ("A", "B") else v.to(device)
                 for k, v in next(batches).items()}
        with run.recipe.precision.autocast():
            terms = run.recipe.step(batch)
        for name, value in world.average_values(terms).items():
            if not math.isfinite(value):
                raise DivergedError(f"{recipe}: loss {name} became {value} at step {run.step + 1}; "
                                    f"lower the learning rate (--set lr=...) or check the data")
            run.window.setdefault(name, []).append(value)
        run.step += 1
        bar.update(1)
        if run.step % config.log_every == 0 or run.step == config.steps:
            row = {"step": run.step, "epoch": run.step / epoch_steps, "lr": config.lr * factor,
                   "seconds": round(time.perf_counter() - started, 3)}
            row.update({name: float(np.mean(values)) for name, values in run.window.items()})
            run.history.append(row)
            if run.step % config.log_every == 0:
                run.window = {}
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k not in ("step", "epoch", "lr", "seconds")})
        if world.main and run.step % picture_steps == 0 and run.step < config.steps:
            run.pictures(samples)
        if world.main and run.step % config.checkpoint_every == 0 and run.step < config.steps:
            run.save()
    bar.close()
    models = {}
    if world.main:
        run.pictures(samples)
        models = run.save()
    world.barrier()
    return TrainResult(run_dir, run.step, run.history, models)


def _check_run(config: TrainConfig, processes: int, resumed: bool) -> None:
    """The settings that need no data checked before a run folder is made: device, precision, loader
    workers, and a batch that splits over the processes (warnings come when the recipe is built)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_precision(config.precision, torch_device(config.device))
    if config.workers < -1:
        raise InputError(f"workers={config.workers}: give 0 or more loader processes (or -1 for the default)")
    distributed.check_split(config.batch_size, max(processes, distributed.launched_size()), resumed)


def loader_workers(config: TrainConfig) -> int:
    """Loader processes for ``config``: its ``workers``, or by default none on the CPU (the steps need
    the cores) and one per spare core, up to :data:`MAX_LOADER_WORKERS`, for a GPU."""
    if config.workers >= 0:
        return config.workers
    if torch.device(config.device).type == "cpu":
        return 0
    return max(1, min(MAX_LOADER_WORKERS, usable_cores() // max(1, distributed.launched_size()) - 1))


def _progress(total: int, done: int, recipe: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=f"train {recipe}", unit="step", disable=not enabled,
                dynamic_ncols=True)
