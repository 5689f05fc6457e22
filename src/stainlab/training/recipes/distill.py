"""Teacher-student distillation, paper 000 (Lee, Kuo & Peng, Sec. III-B and III-D, Fig. 1).

A trained CycleGAN (the teacher) makes paired data in both directions: every real A tile gives the pair
``(a, G_AB(a))`` and every real B tile the pair ``(G_BA(b), b)``; the real and fake images are combined
into one paired set (real A + fake A as inputs, fake B + real B as targets, Sec. III-B). A small student
learns ``A -> B`` on it with the L1 loss, SGD and cosine annealing of the learning rate from 0.01 to 0
(Sec. III-D). The student is paper 000's U-Net (``student="unet"``) or StainNet's 1x1 convolutions
(``student="stainnet"``, the baseline of paper 000's Table I, which a lookup table then applies).

The teacher is a run folder of ``stainlab train cyclegan`` (``G_AB.safetensors``, ``G_BA.safetensors``),
one such model file (A -> B pairs only), or a folder of the public CycleGAN code
(``latest_net_G_A.pth``, ``latest_net_G_B.pth``). Its outputs are computed once, written to
``RUN/teacher/`` (``target_fake``: the teacher's outputs for real inputs; ``input_fake``: for real
targets), and reused when the run resumes. ``direction="BA"`` distils the reverse map.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import stainlab.networks as networks
from stainlab.errors import InputError
from stainlab.io.images import write_image
from stainlab.nets.files import build_network, load_model
from stainlab.nets.generators import load_cyclegan_generator
from stainlab.nets.inference import apply_network
from stainlab.training.data import Domain, TileSampler
from stainlab.training.recipe import Option, Recipe, TrainConfig, TrainingData

STUDENTS = tuple(networks.written_by("distill"))  # the network registry's architectures this recipe writes


@dataclass
class DistillConfig(TrainConfig):
    teacher: str = ""  # teacher run folder or model file (required)
    student: str = "unet"  # paper 000's U-Net, or "stainnet"
    base_channels: int = 64  # U-Net width (paper 000, Sec. III-C: 64-component features)
    layers: int = 3  # StainNet depth and width (Kang et al. 2021: 3 x 32)
    channels: int = 32
    lr: float = 0.01  # paper 000, Sec. III-D: SGD, cosine annealing from 0.01 to 0
    schedule: str = "cosine"
    momentum: float = 0.9  # paper 000 does not say; 0.9 is the usual SGD momentum
    batch_size: int = 16  # paper 000 does not say
    steps: int = 375_000  # 300 epochs (paper 000) of 20,000 pairs at batch 16
    teacher_tile: int = 512  # teacher inference tile (larger images are blended tiles)
    direction: str = "AB"  # the student maps A -> B; "BA" trains the reverse student (for cycle checks)


class Distill(Recipe):
    """Paper 000's teacher-student distillation of a CycleGAN into a U-Net or StainNet."""

    name = "distill"
    config_class = DistillConfig
    # width 16: at 8 channels the U-Net often settles on the mean colour within a tiny run's steps
    tiny = {"steps": 300, "batch_size": 4, "size": 128, "base_channels": 16, "checkpoint_every": 100,
            "epoch_steps": 50}
    options = (
        Option("teacher", "the trained CycleGAN: a run folder of `stainlab train cyclegan`, one G_AB.safetensors, "
                          "or a folder of the public CycleGAN code (latest_net_G_A.pth)", metavar="RUN_OR_FILE"),
        Option("student", "the student: paper 000's U-Net or StainNet's 1x1 convolutions (a lookup table)", STUDENTS),
        Option("direction", "AB: the student maps A -> B; BA: the reverse student (for cycle checks)", ("AB", "BA")),
        Option("base_channels", "U-Net width (paper 000, Sec. III-C)"),
    )

    def __init__(self, config: DistillConfig, rng) -> None:
        super().__init__(config, rng)
        if config.direction not in ("AB", "BA"):
            raise InputError(f"distill: direction must be AB or BA, got {config.direction!r}")
        if config.student not in STUDENTS:
            raise InputError(f"distill: unknown student {config.student!r}; known: {', '.join(STUDENTS)}")
        if config.student == "unet":
            self.arch, self.kwargs = "unet", {"base_channels": config.base_channels}
        else:
            self.arch, self.kwargs = "stainnet", {"layers": config.layers, "channels": config.channels}
        self.student = build_network(self.arch, self.kwargs).to(self.device).train()
        self.networks = {"student": self.student}
        self.optimizers = {"student": torch.optim.SGD(self.student.parameters(), lr=config.lr,
                                                      momentum=config.momentum)}

    def sampler(self, data: TrainingData, run_dir: Path) -> TileSampler:
        if data.slides:
            raise InputError("distill runs its teacher over whole images; give it folders of tiles, not slides")
        g_ab, g_ba = (g if g is None else g.to(self.device) for g in teachers(self.config.teacher))
        if self.config.direction == "BA":
            if g_ba is None:
                raise InputError("distill direction BA needs the teacher's B -> A generator (G_BA)")
            g_ab, g_ba = g_ba, g_ab
            data = TrainingData(data.b, data.a, data.paired, data.description)
        real_a, real_b = Domain(data.a, "A"), Domain(data.b, "B")
        fake_b = _teacher_outputs(g_ab, real_a, run_dir / "teacher" / "target_fake", self.config.teacher_tile)
        inputs, targets = list(data.a), fake_b
        if g_ba is not None:
            fake_a = _teacher_outputs(g_ba, real_b, run_dir / "teacher" / "input_fake", self.config.teacher_tile)
            inputs, targets = inputs + fake_a, targets + list(data.b)
        if data.paired:  # real aligned pairs join the set too (paper 000, Fig. 1 caption)
            inputs, targets = inputs + list(data.a), targets + list(data.b)
        return TileSampler(Domain(inputs, "input"), Domain(targets, "target"), self.config.size, True,
                           self.config.augment)

    def step(self, batch):
        loss = F.l1_loss(self.student(batch["A"]), batch["B"])
        self.descend(self.optimizers["student"], loss)
        return {"l1": float(loss.detach())}

    def samples(self, batch):
        self.student.eval()
        columns = [("input", batch["A"]), ("student", self.student(batch["A"])), ("teacher / real", batch["B"])]
        self.student.train()
        return columns

    def exports(self):
        direction = "A->B" if self.config.direction == "AB" else "B->A"
        return {"student.safetensors": (self.student, self.arch, self.kwargs, {"direction": direction})}


def teachers(spec: str):
    """``(G_AB, G_BA or None)`` in eval mode from a run folder, a model file or a public CycleGAN folder."""
    if not spec:
        raise InputError("distill needs a teacher: --teacher RUN_DIR (from `stainlab train cyclegan`) "
                         "or a G_AB.safetensors file")
    path = Path(spec)
    if path.is_dir():
        for ab, ba in (("G_AB.safetensors", "G_BA.safetensors"), ("latest_net_G_A.pth", "latest_net_G_B.pth")):
            if (path / ab).is_file():
                return _generator(path / ab), _generator(path / ba) if (path / ba).is_file() else None
        raise InputError(f"teacher folder {path}: no G_AB.safetensors (stainlab) or latest_net_G_A.pth "
                         f"(public CycleGAN code) in it")
    warnings.warn(f"teacher {path} is one generator: only A -> B pairs are made", stacklevel=3)
    return _generator(path), None


def _generator(path: Path):
    if path.suffix == ".pth":
        return load_cyclegan_generator(path)
    return load_model(path)[0]


def _teacher_outputs(generator, domain: Domain, folder: Path, tile: int) -> list[Path]:
    """The teacher's output for every image of ``domain`` as PNG files in ``folder`` (made once)."""
    paths = [folder / f"{index:06d}.png" for index in range(len(domain))]
    missing = [index for index, path in enumerate(paths) if not path.is_file()]
    for index in tqdm(missing, desc=f"teacher -> {folder.name}", unit="image", disable=not missing):
        write_image(paths[index], apply_network(generator, domain[index], tile=tile))
    return paths
