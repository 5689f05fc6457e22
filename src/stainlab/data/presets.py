"""Named stain shifts for the restaining simulator, each imitating a variation reported in a paper.

A preset is a base :class:`~stainlab.data.simulate.Staining` (relative to the source's own stains unless
it names others) plus a small random jitter drawn from a seed (stain amounts and hues for all; scanner
gain and gamma only for the scanner presets, as a staining protocol does not change the scanner), so a benchmark of many images is varied
but reproducible: ``preset("long-he", seed)`` always returns the same staining for the same seed.

The papers show these variations in images, not numbers; the magnitudes below are chosen to be clearly
visible and of the size that separates the domains in their figures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from stainlab.data.simulate import Staining
from stainlab.errors import InputError


@dataclass(frozen=True)
class Preset:
    """A named staining with the paper it imitates and the ranges of its per-seed jitter."""

    staining: Staining
    imitates: str
    changes: str
    scale_jitter: float = 0.05      # concentration factors times U(1 - j, 1 + j), per stain
    rotation_jitter: float = 0.5    # degrees added per stain, U(-j, j)
    gain_jitter: float = 0.0        # channel gains times U(1 - j, 1 + j) (scanner presets only)
    gamma_jitter: float = 0.0       # gamma times U(1 - j, 1 + j) (scanner presets only)

    def draw(self, name: str, seed: int) -> Staining:
        """The base staining with this seed's jitter (two stains assumed unless the preset names more)."""
        rng = np.random.default_rng([abs(int(seed)), int(seed < 0)])
        base = self.staining
        n = 2 if base.stains is None else len(base.stains)
        scale = _broadcast(base.scale, n) * rng.uniform(1 - self.scale_jitter, 1 + self.scale_jitter, n)
        rotation = _broadcast(base.rotation, n) + rng.uniform(-self.rotation_jitter, self.rotation_jitter, n)
        gain = np.asarray(base.gain) * rng.uniform(1 - self.gain_jitter, 1 + self.gain_jitter, 3)
        gamma = base.gamma * rng.uniform(1 - self.gamma_jitter, 1 + self.gamma_jitter)
        return replace(base, scale=tuple(scale), rotation=tuple(rotation), gain=tuple(gain), gamma=float(gamma),
                       name=name)


PRESETS: dict[str, Preset] = {
    "long-he": Preset(
        Staining(scale=(1.6, 1.35)),
        imitates="paper 000 (Lee, Kuo, Peng): HEV data, 'Long HE' sections intentionally stained too long",
        changes="more haematoxylin (x1.6) and eosin (x1.35): darker, more purple tissue; same dyes, same scanner"),
    "understained": Preset(
        Staining(scale=(0.55, 0.65)),
        imitates="paper 001 (Arshad et al.): lab B slides, under-stained against lab A's reference",
        changes="less of both stains (H x0.55, E x0.65): pale, washed-out tissue"),
    "scanner-led": Preset(
        Staining(gain=(0.93, 0.99, 1.06), gamma=0.9, blur=0.5, noise=1.0),
        imitates="paper 004 (Sjostrand et al.): CellaVision DM1200, LED illumination (system X)",
        changes="cool illumination (red gain 0.93, blue 1.06), brighter mid-tones (gamma 0.9), slight "
                "optical blur (0.5 px) and sensor noise (1 grey level)",
        gain_jitter=0.015, gamma_jitter=0.03),
    "scanner-halogen": Preset(
        Staining(gain=(1.05, 0.98, 0.86), gamma=1.1, blur=0.7, noise=1.0),
        imitates="paper 004 (Sjostrand et al.): CellaVision DM96, halogen illumination (system Y)",
        changes="warm illumination (red gain 1.05, blue 0.86), darker mid-tones (gamma 1.1), optical blur "
                "(0.7 px) and sensor noise (1 grey level)",
        gain_jitter=0.015, gamma_jitter=0.03),
    "faded": Preset(
        Staining(scale=(0.85, 0.5)),
        imitates="archival slides whose eosin has faded with light and age (paper 001 discusses staining "
                 "inconsistencies between labs and over time)",
        changes="eosin halved (x0.5), haematoxylin slightly weaker (x0.85): bluer, paler stroma"),
    "stain-rotation": Preset(
        Staining(rotation=(25.0, -20.0)),
        imitates="another lab's dye lots and recipes (paper 000: 'compositions of the H&E-stains')",
        changes="other stain vectors: haematoxylin turned 25 and eosin -20 degrees about the grey axis "
                "(hue of each dye changed, amounts kept)",
        rotation_jitter=3.0),
}


def preset(name: str, seed: int = 0) -> Staining:
    """The :class:`~stainlab.data.simulate.Staining` of preset ``name`` with ``seed``'s jitter."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"the seed must be an integer, got {seed!r}")
    return PRESETS[name].draw(name, seed)


def _broadcast(values: tuple, n: int) -> np.ndarray:
    return np.full(n, values[0]) if len(values) == 1 else np.asarray(values, dtype=np.float64)
