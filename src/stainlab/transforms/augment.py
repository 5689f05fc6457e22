"""Stain augmentation by concentration jitter (Tellez et al., "Whole-slide mitosis detection in H&E
breast histology using PHH3 as a reference to train distilled stain-invariant convolutional
networks", IEEE TMI 37(9), 2018: the "HED" colour augmentation).

The image is deconvolved into stain concentrations (fixed Ruifrok HED vectors by default, or any
given/fitted stain matrix; :mod:`stainlab.color.deconvolution`), each stain's concentrations are
perturbed as ``c' = alpha * c + beta`` with ``alpha ~ U(1 - sigma1, 1 + sigma1)`` and
``beta ~ U(-sigma2, sigma2)`` drawn once per image and stain, and the image is reconvolved. The
defaults ``sigma1 = sigma2 = 0.05`` are the "HED-light" range of Tellez et al., "Quantifying the effects
of data augmentation and stain color normalization in convolutional neural networks for computational
pathology", MedIA 58, 2019; their "HED-strong" uses 0.2. Concentrations are natural-log optical
densities, as scikit-image's ``rgb2hed`` gave them before it began dividing by ``-ln(1e-6)`` (in
today's ``rgb2hed`` units the same sigmas would be about 14 times stronger).

Background stays background: optical density is taken against the image's own light (the colour of
its glass, ``light="estimate"``; or white, ``"fixed"``; or a given RGB: :mod:`stainlab.transforms.lighting`)
and the result rendered back under that same light, so glass has zero density whatever its colour;
``alpha`` scales zero density to zero, and the shift ``beta`` is faded out on glass (full weight where
any channel's OD reaches the tissue threshold 0.15, none below half of it, linear in between), so glass
keeps its colour and tissue edges get no seam. The density is not clipped at zero: a pixel brighter
than the light (the noise of the glass) keeps its small negative density, so no jitter is exactly the
identity. The residual channel of a two-stain set is never perturbed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numba import njit, prange

from stainlab.color.light import resolve_light
from stainlab.color.pixels import od_table
from stainlab.color.tissue import TISSUE_BETA
from stainlab.io.arrays import check_rgb8, map_rgb8, map_torch
from stainlab.transforms.base import Transform, torch_engine_wanted
from stainlab.transforms.checks import MAX_SEED, check_float, check_int, check_stains
from stainlab.transforms.lighting import check_light

if TYPE_CHECKING:
    import torch

HED_LIGHT = 0.05   # Tellez et al. 2019 "HED-light" jitter range


def _sigmas(sigma1, sigma2) -> tuple[float, float]:
    """The jitter ranges: ``alpha`` within 100 % of 1, ``beta`` within 5 OD (beyond, every colour saturates)."""
    return check_float("augment: sigma1", sigma1, 0.0, 1.0), check_float("augment: sigma2", sigma2, 0.0, 5.0)


def augment(image, sigma1: float = HED_LIGHT, sigma2: float = HED_LIGHT, stains="hed",
            seed: int | np.random.Generator | torch.Generator | None = None, *, light="estimate",
            value_range=None, engine: str = "auto"):
    """A stain-jittered copy of a uint8 HxWx3 RGB image (Tellez et al. 2018), or of each image of a
    torch tensor (N,3,H,W) / (3,H,W), returned in its shape, dtype, device and ``value_range``
    (conventions and refusals: :mod:`stainlab.io.arrays`).

    ``stains``: ``"hed"``, ``"he"``, ``"hdab"`` or a (2, 3) / (3, 3) stain matrix (e.g. a fitted
    ``Macenko().stain_matrix`` or ``stain_matrix_of(image)``). ``light``: each image's light, which its
    optical density is taken against and its result rendered under (``"estimate"``, ``"fixed"`` or an
    RGB triple, :mod:`stainlab.transforms.lighting`). ``seed``: an int (or a generator: NumPy's
    for NumPy images, torch's CPU one for tensors) makes the result reproducible; ``None`` draws fresh
    randomness. ``engine`` as ``t(tensor)`` takes it (:meth:`~stainlab.transforms.base.Transform.__call__`):
    the torch engine maps the whole batch on its device, differentiably, drawing from a CPU
    ``torch.Generator`` so that a seed gives the same jitter on every device (not NumPy's draws); the
    NumPy path goes image by image, replays the NumPy draws of the same seed and has no gradient.
    """
    sigma1, sigma2 = _sigmas(sigma1, sigma2)
    basis = check_stains("augment: stains", stains)
    light = check_light("augment: light", light)
    if torch_engine_wanted(image, engine, True, "augment"):
        import torch

        generator = seed if isinstance(seed, torch.Generator) else _torch_generator(np.random.default_rng(seed))
        return map_torch(lambda x: _augment_torch(x, sigma1, sigma2, basis, generator, light), image, value_range)
    rng = np.random.default_rng(seed)
    return map_rgb8(lambda im: _augment(check_rgb8(im), sigma1, sigma2, basis, rng, light), image, value_range)


def _torch_generator(rng: np.random.Generator):
    """A CPU ``torch.Generator`` seeded from a NumPy generator (a seed's torch draws follow from it)."""
    import torch

    return torch.Generator().manual_seed(int(rng.integers(2 ** 63 - 1)))


def _augment_torch(x, sigma1: float, sigma2: float, basis, generator, light):
    """The torch engine's draws and jitter for a float (N,3,H,W) batch in [0, 1]."""
    from stainlab.transforms import torch_engine

    alpha, beta = torch_engine.augment_draws(len(x), len(basis.stains), sigma1, sigma2, generator)
    return torch_engine.augment(x, alpha, beta, basis, light)


def _augment(image: np.ndarray, sigma1: float, sigma2: float, basis, rng: np.random.Generator,
             light) -> np.ndarray:
    """One image's draws (alpha and beta for each stain) and jitter against its light."""
    n = len(basis.stains)
    alpha, beta = np.ones(3), np.zeros(3)
    alpha[:n] = rng.uniform(1.0 - sigma1, 1.0 + sigma1, n)
    beta[:n] = rng.uniform(-sigma2, sigma2, n)
    scale = (basis.inverse * alpha) @ basis.matrix      # OD' = OD M^-1 diag(alpha) M + fade * beta M
    shift = beta @ basis.matrix
    rgb = resolve_light(light, image).rgb
    out = np.empty_like(image)
    _jitter(image.reshape(-1, 3), od_table(rgb, clip=False), scale, shift, rgb, out.reshape(-1, 3))
    return out


@njit(cache=True, parallel=True)
def _jitter(pixels, od_of_byte, scale, shift, light, out):  # pragma: no cover - compiled
    """Per pixel: OD by the per-channel table, the affine jitter in OD space (the shift faded by the
    largest channel OD), back to RGB under ``light``, rounded and clipped like ``lut.to_uint8``; no
    temporaries."""
    for i in prange(pixels.shape[0]):
        od0, od1, od2 = od_of_byte[0, pixels[i, 0]], od_of_byte[1, pixels[i, 1]], od_of_byte[2, pixels[i, 2]]
        fade = min(max(2.0 * max(od0, od1, od2) / TISSUE_BETA - 1.0, 0.0), 1.0)
        for c in range(3):
            od = od0 * scale[0, c] + od1 * scale[1, c] + od2 * scale[2, c] + fade * shift[c]
            value = np.rint((light[c] + 1.0) * np.exp(-od) - 1.0)
            out[i, c] = np.uint8(min(max(value, 0.0), 255.0))


class StainAugmenter(Transform):
    """Tellez 2018 stain augmentation: random per-stain concentration jitter (HED by default); no fit."""

    name = "augment"
    requires_fit = False
    uses_reference = False
    deterministic = False

    def __init__(self, sigma1: float = HED_LIGHT, sigma2: float = HED_LIGHT, stains="hed",
                 seed: int | None = None, light="estimate") -> None:
        super().__init__()
        self.sigma1, self.sigma2 = _sigmas(sigma1, sigma2)
        self.light = check_light("augment: light", light)
        basis = check_stains("augment: stains", stains)
        self.stains = stains if isinstance(stains, str) else basis.matrix[:len(basis.stains)].tolist()
        self.seed = None if seed is None else check_int("augment: seed", seed, 0, MAX_SEED)
        self._rng = np.random.default_rng(seed)

    def _torch(self, x):
        """The torch engine on a float (N,3,H,W) batch in [0, 1]: each call seeds a torch generator from
        the augmenter's generator (seeded: a reproducible sequence, not NumPy's draws)."""
        return _augment_torch(x, self.sigma1, self.sigma2, check_stains("augment: stains", self.stains),
                              _torch_generator(self._rng), self.light)

    def _transform(self, image: np.ndarray) -> np.ndarray:
        """Each call draws new jitter from the augmenter's generator (seeded: a reproducible sequence)."""
        return augment(image, self.sigma1, self.sigma2, self.stains, self._rng, light=self.light)
