"""What a recipe is: a config dataclass with the paper's defaults, its command-line options, networks,
optimisers and one step.

The loop (:mod:`stainlab.training.loop`) owns everything common (seeding, data, learning-rate schedule,
checkpoints, logs, pictures); a recipe only says what to build and what one optimisation step does, and
which of its settings ``stainlab train RECIPE`` offers as options (:class:`Option`).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from stainlab.errors import InputError
from stainlab.nets.devices import torch_device
from stainlab.precision import Precision
from stainlab.training.data import Domain, TileSampler
from stainlab.training.distributed import current_world


@dataclass
class TrainConfig:
    """Settings every recipe has. Recipes override the defaults with their paper's values."""

    steps: int = 50_000  # optimisation steps (paper 004, Sec. 6.2: 50,000 iterations)
    batch_size: int = 4  # paper 003, Sec. 4.2 and paper 004 (ccGAN), Sec. 6.2
    size: int = 256  # training tile side (paper 000: 256x256 tiles)
    lr: float = 2e-4  # Adam learning rate (papers 003 and 004)
    schedule: str = "constant"  # "constant", "step" (x decay every decay_epochs epochs) or "cosine" (to 0)
    decay: float = 0.9  # paper 003, Sec. 4.2: exponential decay 0.9 ...
    decay_epochs: int = 2  # ... every 2 epochs
    epoch_steps: int = 0  # steps per epoch; 0: one pass over the larger domain
    checkpoint_every: int = 1000  # steps between checkpoints (and at the end)
    log_every: int = 10  # steps averaged into one row of log.csv
    picture_every: int = 0  # steps between loss plot + sample montage; 0: each epoch, at least 25 steps apart
    augment: bool = True  # the 8 rotations/flips of the square (paper 004, Sec. 6.1)
    device: str = "cpu"
    precision: str = "fp32"  # or mixed precision: "bf16" (CPU, recent GPUs) or "fp16" (GPUs), see stainlab.precision
    channels_last: bool = False  # NHWC memory layout for the convolutions (pays on GPUs with tensor cores)
    compile: bool = False  # torch.compile the networks (the first steps are slower while it compiles)
    workers: int = -1  # loader processes making batches ahead; -1: none on the CPU, up to 8 for a GPU
    slide_level: int = -1  # training from whole slides: the pyramid level (-1: the one nearest slide_mpp, or 0)
    slide_mpp: float = 0.0  # ... or the resolution in microns per pixel (0: by slide_level)


@dataclass(frozen=True)
class Option:
    """A setting that ``stainlab train RECIPE`` offers as ``--SETTING`` (underscores as dashes). Its type
    and default are the config dataclass field's (a bool is an on/off switch); every other setting is
    still reachable with ``--set KEY=VALUE``."""

    setting: str
    help: str
    choices: tuple = ()
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.setting.replace("_", "-")


@dataclass
class TrainingData:
    """Images of domains A (source look) and B (target look); ``paired``: A[i] and B[i] are aligned."""

    a: list
    b: list
    paired: bool = False
    description: str = "in memory"
    levels: list | None = None  # class label of each A image (HER2 level 0-3 of a BCI pair; None: unknown)
    folder: str | None = None  # the folder read by from_folder (absolute), so a resumed run reads it again
    slides: bool = False  # a and b are whole slides: tiles are drawn over their tissue (SlideDomain)

    @classmethod
    def from_folder(cls, root, paired: bool | None = None) -> "TrainingData":
        """``root/A`` and ``root/B`` (paired when every A file has a B file of the same name, unless
        ``paired`` says otherwise), the HEV layout (``HE``, ``Long HE``: unpaired), or the BCI layout
        (``HE/train``, ``IHC/train``: paired, HER2 levels from the file names, paper 002). Where ``A`` or
        ``B`` holds whole slides (``.svs``, ``.ndpi``, pyramidal TIFFs...), both are read as slides and
        training tiles are drawn over their tissue (unpaired)."""
        from stainlab.data.folders import (BCIDataset, PairedFolders, UnpairedFolders, hev, is_bci_layout,
                                           is_hev_layout)
        from stainlab.training.slide_tiles import slide_files
        from stainlab.wsi.references import list_slides

        root = Path(root)
        folder = str(root.resolve())
        if is_bci_layout(root):
            bci = BCIDataset.open(root, "train")
            return cls([a for a, _ in bci.pairs], [b for _, b in bci.pairs], True, str(root), bci.levels, folder)
        if is_hev_layout(root):
            folders = hev(root)
            return cls(folders.a, folders.b, False, str(root), folder=folder)
        slides = [list_slides([root / name]) for name in ("A", "B")] if (root / "A").is_dir() else []
        if any(slide_files(root / name) for name in ("A", "B") if (root / name).is_dir()):
            if paired:
                raise InputError(f"{root}: whole slides are not aligned pairs; train an unpaired recipe on them")
            empty = [name for name, found in zip("AB", slides) if not found]
            if empty:
                raise InputError(f"{root}: no slides or images in {root / empty[0]}")
            return cls(slides[0], slides[1], False, str(root), folder=folder, slides=True)
        unpaired = UnpairedFolders.open(root)
        if paired is None:
            paired = sorted(p.stem for p in unpaired.a) == sorted(p.stem for p in unpaired.b)
        if paired:
            pairs = PairedFolders.open(root)
            return cls([a for a, _ in pairs.pairs], [b for _, b in pairs.pairs], True, str(root), folder=folder)
        return cls(unpaired.a, unpaired.b, False, str(root), folder=folder)


class Recipe(ABC):
    """One training method. Subclasses set the class variables and build ``self.networks`` (every module
    checkpointed) and ``self.optimizers`` in ``__init__``."""

    name: ClassVar[str]
    config_class: ClassVar[type[TrainConfig]]
    needs_pairs: ClassVar[bool] = False
    tiny: ClassVar[dict[str, Any]] = {}  # overrides of the `--preset tiny` run (small, CPU, minutes)
    variants: ClassVar[dict[str, dict[str, Any]]] = {}  # boolean setting -> the settings it implies
    options: ClassVar[tuple[Option, ...]] = ()  # the settings `stainlab train RECIPE` offers as --SETTING

    def __init__(self, config: TrainConfig, rng: np.random.Generator) -> None:
        self.config, self.rng = config, rng
        self.device = torch_device(config.device)
        self.precision = Precision(config.precision, self.device)
        self.world = current_world()
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def prepare(self) -> None:
        """Ready the built networks for the run's settings: SyncBatchNorm over several GPUs, the
        channels-last layout, torch.compile (in place: state-dict keys and model files are unchanged)."""
        for module in self.networks.values():
            if self.world.size > 1 and self.device.type == "cuda":
                nn.SyncBatchNorm.convert_sync_batchnorm(module)
            if self.config.channels_last:
                module.to(memory_format=torch.channels_last)
            if self.config.compile:
                module.compile()

    def descend(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss``: backward (scaled in fp16), gradients averaged over the
        processes of a distributed run, step."""
        optimizer.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        self.world.average_gradients(p for group in optimizer.param_groups for p in group["params"])
        self.precision.step(optimizer)

    def sampler(self, data: TrainingData, run_dir: Path) -> TileSampler:
        """The tiles the steps draw from (a recipe may derive its own pairs, as distillation does)."""
        if self.needs_pairs and not data.paired:
            raise InputError(f"{self.name} trains on paired data (A/x.png with B/x.png of the same name); "
                             f"{data.description} is unpaired")
        return TileSampler(self.domain(data, data.a, "A"), self.domain(data, data.b, "B"), self.config.size,
                           data.paired, self.config.augment, data.levels)

    def domain(self, data: TrainingData, items: list, name: str):
        """The images ``items`` of ``data`` as a domain: whole slides at the config's level or mpp, or images."""
        if not data.slides:
            if self.config.slide_level >= 0 or self.config.slide_mpp:
                warnings.warn(f"{data.description}: no whole slides in its {name} images, so slide_level and "
                              "slide_mpp are not used", stacklevel=2)
            return Domain(items, name)
        from stainlab.training.slide_tiles import SlideDomain

        level, mpp = self.config.slide_level, self.config.slide_mpp
        return SlideDomain(items, name, level=None if level < 0 else level, mpp=mpp or None)

    @abstractmethod
    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on ``batch`` (``"A"``, ``"B"``: float NCHW in [-1, 1] on the device);
        returns the loss terms by name."""

    @abstractmethod
    def samples(self, batch: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """Columns of the sample montage: ``(header, float NCHW in [-1, 1])``."""

    @abstractmethod
    def exports(self) -> dict[str, tuple[nn.Module, str, dict, dict]]:
        """Model files to write: ``file name -> (network, architecture, constructor kwargs, info)``."""

    def extra_state(self) -> dict:
        """State beyond networks and optimisers to checkpoint (e.g. image pools)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore :meth:`extra_state`."""

    def _adam(self, *modules: nn.Module, betas=(0.5, 0.999)) -> torch.optim.Adam:
        """Adam over ``modules`` (beta1 0.5 as in the public CycleGAN/pix2pix code)."""
        parameters = [p for module in modules for p in module.parameters()]
        return torch.optim.Adam(parameters, lr=self.config.lr, betas=betas)
