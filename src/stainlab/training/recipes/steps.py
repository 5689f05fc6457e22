"""Small pieces the paired recipes share (pix2pix, the HER2 comparator, DeReStainer): the check for level
labels and the BatchNorm statistics of exported networks."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stainlab.errors import InputError

LEVELS_HINT = "use the BCI layout (HE/train, IHC/train, the level in each file name, e.g. 00001_train_2+.png)"


def check_labelled(data, who: str, why: str) -> None:
    """:class:`InputError` unless every image of ``data`` has a class label (a HER2 level)."""
    if data.levels is None:
        raise InputError(f"{who}: {data.description} has no HER2 level labels; {why}")
    unknown = [i for i, level in enumerate(data.levels) if level is None]
    if unknown:
        first = data.a[unknown[0]]
        name = first if isinstance(first, (str, Path)) else f"image {unknown[0]}"
        raise InputError(f"{who}: {len(unknown)} image(s) of {data.description} have no HER2 level "
                         f"(the first: {name}); {why}")


CALIBRATION_BATCHES = 16  # batches whose plain average gives the exported BatchNorm statistics
CALIBRATION_SEED = 2024  # its own generator: calibrating never shifts the training draws


def with_precise_batchnorm(module: nn.Module, sampler, key: str, batch_size: int, device: torch.device,
                           prepare=None) -> nn.Module:
    """A copy of ``module`` in eval mode whose BatchNorm running statistics are the plain average over
    :data:`CALIBRATION_BATCHES` batches of ``sampler``'s ``key`` images, passed through ``prepare`` when
    the network takes another range than [-1, 1] ("precise BN": Wu & Johnson,
    "Rethinking 'Batch' in BatchNorm", 2021, Sec. 3). Training normalises by batch statistics; the
    exponential running average lags behind weights that still move fast (short runs, high learning
    rates), so a network exported with it behaves unlike the one trained; ``module`` is not touched."""
    copy = deepcopy(module)
    norms = [m for m in copy.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or sampler is None:
        return copy.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    rng = np.random.default_rng(CALIBRATION_SEED)
    copy.train()
    with torch.no_grad():
        for _ in range(CALIBRATION_BATCHES):
            images = sampler.draw(rng, batch_size)[key].to(device)
            copy(prepare(images) if prepare else images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return copy.eval()


class PreciseBatchNormExports:
    """Recipe mix-in: keeps the run's sampler so :meth:`exported` can calibrate BatchNorm on its images."""

    calibration = None  # the TileSampler of the run, once the loop asked for it

    def sampler(self, data, run_dir):
        self.calibration = super().sampler(data, run_dir)
        return self.calibration

    def exported(self, module: nn.Module, key: str, prepare=None) -> nn.Module:
        """``module`` for a model file: a copy with precise BatchNorm statistics over images ``key``."""
        return with_precise_batchnorm(module, self.calibration, key, self.config.batch_size, self.device, prepare)
