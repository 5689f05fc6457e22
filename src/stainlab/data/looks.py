"""The look of a reference, and which image of a set represents a target domain.

A normalizer is scored fairly only when its ground truth looks like its reference: a method fitted on
one look and scored against truth in another is charged for the difference between the two, however
well it normalizes (a Macenko fitted on a user's own reference went from 7.1 to 16.3 CIEDE2000 on a
benchmark whose truth had the simulator's look, worse than doing nothing). So:

* the look of one real image is what the simulator can render it with (:func:`look_of`): its stain rows
  (Macenko's fit against its light), its stain amounts (the 90th percentile over its tissue of each
  stain's concentration, how deeply the stained structures took the stain, where a median would read
  the haematoxylin of stroma-rich tissue as nearly none), its leak (the residual density, which neither
  stain row explains, per unit of each stain, fitted by least squares over the tissue: how far its real
  dyes leave the plane of the two rows; between two real H&E scans this accounts for most of the colour
  left once stains and amounts agree) and its light (the colour of its glass,
  :mod:`stainlab.color.light`); :func:`staining_for` turns it into the
  :class:`~stainlab.data.simulate.Staining` that renders other tissue in that look. The amount is
  deliberately not the 99th percentile that Macenko et al. 2009 and Vahadane et al. 2016 rescale by:
  with it, a truth rendered from a whole image would be their own normalization of that image, and the
  benchmark would be theirs;
* a set's representative (:func:`typical`) is an image with the most tissue (its tissue fraction in the
  set's top quarter, or within :data:`TISSUE_SLACK` of the largest: a reference that is half glass tells
  little about the stains, while 97% and 99% tissue are alike) whose colour is the most typical (its
  median tissue colour, in CIELAB, nearest by CIEDE2000 to the median of all images' median tissue
  colours): the set's median look, not an outlier tile of fat or necrosis;
* two looks are compared by the CIEDE2000 between their median tissue colours (:func:`look_distance`);
  tiles of the same look differ by a few units through their tissue alone, so differences under
  :data:`LOOK_TOLERANCE` are not taken for another look.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

from stainlab.color.lab import rgb_to_lab
from stainlab.color.tissue import tissue_mask
from stainlab.data.simulate import Staining, concentrations, source_light, source_stain_rows
from stainlab.metrics.pixel import delta_e_2000

AMOUNT_PERCENTILE = 90.0
"""A stain's amount: this percentile of its concentration over tissue (see the module docstring)."""
MIN_AMOUNT = 0.02
"""OD: a source whose stain amount is below this has too little of the stain to be scaled to a look."""
TISSUE_QUANTILE = 0.75
"""Representative candidates have a tissue fraction at least this quantile of the set's..."""
TISSUE_SLACK = 0.05
"""... or at most this much below the largest."""
LOOK_TOLERANCE = 5.0
"""CIEDE2000 between median tissue colours above which a reference is taken for another look."""


def fingerprint(image: np.ndarray) -> str:
    """A short hash of an image's pixels: the same reference, whatever file it was read from."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]


class TissueColour(NamedTuple):
    """The fraction of an image that is tissue and the median CIELAB colour of that tissue."""

    fraction: float
    lab: np.ndarray


def tissue_colour(image: np.ndarray) -> TissueColour:
    """:class:`TissueColour` of a uint8 RGB image, tissue taken against its own light (glass of any
    colour is not tissue); an image without tissue gives the median colour of all its pixels."""
    pixels = np.asarray(image).reshape(-1, 3)
    tissue = tissue_mask(pixels, light=source_light("estimate", pixels))
    chosen = pixels[tissue] if tissue.any() else pixels
    return TissueColour(float(tissue.mean()), np.median(rgb_to_lab(chosen), axis=0))


class Choice(NamedTuple):
    """The representative's index and, in words, why it was chosen."""

    index: int
    why: str


def typical(colours: list[TissueColour], names: list[str]) -> Choice:
    """The representative of a set of images given their :class:`TissueColour` (see the module
    docstring): among those with the most tissue, the median tissue colour nearest the median over all."""
    fractions = np.array([c.fraction for c in colours])
    labs = np.array([c.lab for c in colours])
    centre = np.median(labs, axis=0)
    cut = float(min(np.quantile(fractions, TISSUE_QUANTILE), fractions.max() - TISSUE_SLACK))
    candidates = np.flatnonzero(fractions >= cut)
    distances = delta_e_2000(labs[candidates], centre)
    best = int(candidates[np.argmin(distances)])
    why = (f"{names[best]}: {fractions[best]:.0%} tissue (the {len(candidates)} of {len(colours)} images with "
           f"at least {cut:.0%}), median tissue colour {distances.min():.1f} CIEDE2000 from the median over "
           "all, the most typical of them")
    return Choice(best, why)


def look_distance(colour: TissueColour, colours: list[TissueColour]) -> float:
    """CIEDE2000 between one image's median tissue colour and the median over a set's."""
    return float(delta_e_2000(colour.lab, np.median([c.lab for c in colours], axis=0)))


class Levels(NamedTuple):
    """How much of each of k stains an image holds (``amounts``, (k,)) and how much residual density
    comes with a unit of each (``leak``, (k,); zeros for three stains, which leave no residual)."""

    amounts: np.ndarray
    leak: np.ndarray


class Look(NamedTuple):
    """What the simulator renders an image's look with: stain rows (k, 3), their :class:`Levels` and
    the light (3,) of its glass. Measured from an image by :func:`look_of`, or given."""

    stains: np.ndarray
    levels: Levels
    light: np.ndarray

    def to_dict(self) -> dict:
        return {"stains": np.asarray(self.stains).tolist(), "amounts": np.asarray(self.levels.amounts).tolist(),
                "leak": np.asarray(self.levels.leak).tolist(), "light": np.asarray(self.light).tolist()}


def stain_levels(image: np.ndarray, rows: np.ndarray, light) -> Levels:
    """The :class:`Levels` of ``image`` separated with ``rows`` against ``light``, over its tissue."""
    n = len(rows)
    conc = concentrations(image, rows, light).reshape(-1, 3)
    tissue = tissue_mask(np.asarray(image).reshape(-1, 3), light=light)
    chosen = conc[tissue] if tissue.any() else conc
    leak = np.linalg.lstsq(chosen[:, :n], chosen[:, 2], rcond=None)[0] if n == 2 else np.zeros(n)
    return Levels(np.percentile(chosen[:, :n], AMOUNT_PERCENTILE, axis=0), leak)


def look_of(image: np.ndarray, source_stains=None) -> Look:
    """The :class:`Look` of a uint8 RGB image (its stains fitted by Macenko unless given)."""
    light = source_light("estimate", image)
    rows = source_stain_rows(image, source_stains, light)
    return Look(rows, stain_levels(image, rows, light), light)


def staining_for(look: Look, source: Levels, name: str = "reference look") -> Staining:
    """The staining that renders tissue of :class:`Levels` ``source`` in ``look``: its stains and light,
    each stain scaled by the ratio of the amounts (kept where the source has under
    :data:`MIN_AMOUNT` of it, or the look none), and the leak that swaps the source's for the look's:
    the render adds ``C' . leak`` to the residual, which already holds ``C . leak_source = C' .
    leak_source / scale``."""
    wanted, have = (np.asarray(v, dtype=np.float64) for v in (look.levels.amounts, source.amounts))
    usable = (have >= MIN_AMOUNT) & (wanted > 0)
    scale = np.where(usable, wanted / np.where(usable, have, 1.0), 1.0)
    leak = np.asarray(look.levels.leak, dtype=np.float64) - np.asarray(source.leak, dtype=np.float64) / scale
    return Staining(stains=look.stains, scale=tuple(scale), light=tuple(look.light), leak=tuple(leak), name=name)
