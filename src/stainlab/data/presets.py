"""Named stain shifts for the restaining simulator, each imitating a variation reported in a paper.

A preset is a base :class:`~stainlab.data.simulate.Staining` (relative to the source's own stains and
light unless it names others) plus a small random jitter drawn from a seed (stain amounts and hues for
all; scanner gain and gamma only for the scanner presets, as a staining protocol does not change the
scanner), so a benchmark of many images is varied but reproducible: ``preset("long-he", seed)`` always
returns the same staining for the same seed.

Two kinds. The staining presets (``long-he``, ``understained``, ``faded``, ``stain-rotation``) and the
lamp presets (``scanner-led``, ``scanner-halogen``) change what the two-stain Beer-Lambert model of
Macenko and Vahadane can express: amounts, stain vectors, a tint. The other scanner presets change what
it cannot: the glass colour (``scanner-beige``: every pixel's light, not a stain), cross-talk between
colour channels and saturation (``scanner-crosstalk``: colours mixed after absorption), per-channel tone
curves (``scanner-tone``), JPEG recompression (``scanner-jpeg``) and all of these at once
(``scanner-other``), so a benchmark over every preset is not won by the model that rendered it.

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
        gamma = np.asarray(base.gamma) * rng.uniform(1 - self.gamma_jitter, 1 + self.gamma_jitter)
        return replace(base, scale=tuple(scale), rotation=tuple(rotation), gain=tuple(gain), gamma=tuple(gamma),
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
    "scanner-beige": Preset(
        Staining(light=(234.0, 228.0, 212.0)),
        imitates="a whole-slide scanner whose empty glass reads grey-beige instead of white (paper 000: "
                 "'scanner settings'; StainGAN's Hamamatsu vs Aperio scans; paper 004 normalizes by the "
                 "background colour)",
        changes="light (the glass, I0 of Beer-Lambert) (234, 228, 212) instead of the source's: every "
                "pixel dimmer and yellower in proportion, stains and amounts kept",
        gain_jitter=0.01),
    "scanner-crosstalk": Preset(
        Staining(crosstalk=((0.82, 0.15, 0.03), (0.10, 0.80, 0.10), (0.03, 0.15, 0.82)), saturation=1.15),
        imitates="a camera whose colour filters overlap (each channel sees 18-20% of its neighbours' light) "
                 "and whose pipeline boosts saturation to make up for part of it (paper 000: 'scanner settings')",
        changes="channels mixed in linear light (rows R 0.82/0.15/0.03, G 0.10/0.80/0.10, B 0.03/0.15/0.82), "
                "then chroma scaled x1.15 about luma: colours duller and their hues shifted unevenly, which "
                "no change of stain vectors or amounts reproduces",
        gain_jitter=0.01, gamma_jitter=0.02),
    "scanner-tone": Preset(
        Staining(gamma=(0.85, 1.0, 1.25), contrast=(0.6,)),
        imitates="a scanner's own tone curves per channel (paper 004: two microscope systems with different "
                 "cameras; paper 000: 'scanner settings')",
        changes="per-channel gamma R 0.85, G 1.0, B 1.25 (reds lifted, blues darkened in mid-tones) and an "
                "S-curve of contrast 0.6 (mid-tones steepened, ends kept)",
        gain_jitter=0.01, gamma_jitter=0.03),
    "scanner-jpeg": Preset(
        Staining(jpeg=60),
        imitates="tiles exported or archived as JPEG at a low quality (a common whole-slide format)",
        changes="JPEG recompression at quality 60 with 4:2:0 chroma: 8x8 block artefacts and chroma at "
                "half resolution, colours smeared across nucleus edges"),
    "scanner-other": Preset(
        Staining(light=(238.0, 232.0, 220.0), crosstalk=((0.88, 0.10, 0.02), (0.06, 0.88, 0.06),
                                                           (0.02, 0.10, 0.88)),
                 gain=(1.02, 1.0, 0.96), gamma=(0.95, 1.0, 1.1), contrast=(0.3,), saturation=1.2, blur=0.6,
                 noise=1.5, jpeg=80),
        imitates="another lab's scanner altogether (paper 000's StainGAN: Hamamatsu vs Aperio; paper 004's "
                 "two systems): glass, optics, sensor and file format all differ at once",
        changes="beige glass (238, 232, 220), mild cross-talk (12% to neighbours), warm white balance, "
                "per-channel gamma 0.95/1.0/1.1, S-curve 0.3, saturation x1.2, blur 0.6 px, noise 1.5 grey "
                "levels, JPEG quality 80",
        gain_jitter=0.015, gamma_jitter=0.03),
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
