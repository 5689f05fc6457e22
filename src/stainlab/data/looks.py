"""The look of a reference, and which image of a set represents a target domain.

A normalizer is scored fairly only when its ground truth looks like its reference: a method fitted on
one look and scored against truth in another is charged for the difference between the two, however
well it normalizes (a Macenko fitted on a user's own reference went from 7.1 to 16.3 CIEDE2000 on a
benchmark whose truth had the simulator's look, worse than doing nothing). So:

* the look of one real image is what the simulator can render it with (:func:`look_of`): its stain rows
  (Macenko's fit against its light), its stain amounts (99th percentile of each stain's concentration
  over its tissue, the robust maximum Macenko et al. 2009 rescale by) and its light (the colour of its
  glass, :mod:`stainlab.color.light`); :func:`staining_for` turns it into the
  :class:`~stainlab.data.simulate.Staining` that renders other tissue in that look, with one amount
  scale for the whole set (not per image, so the truth keeps each tile's own staining variation and is
  not Macenko's per-image rescaling in disguise);
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

AMOUNT_PERCENTILE = 99.0
"""A stain's amount: this percentile of its concentration over tissue (Macenko et al.'s robust maximum)."""
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


class Look(NamedTuple):
    """What the simulator renders an image's look with: stain rows (2, 3), stain amounts (2,) and the
    light (3,) of its glass."""

    stains: np.ndarray
    amounts: np.ndarray
    light: np.ndarray


def stain_amounts(image: np.ndarray, rows: np.ndarray, light) -> np.ndarray:
    """Each stain's amount in ``image`` (separated with ``rows`` against ``light``): the
    :data:`AMOUNT_PERCENTILE` of its concentration over the tissue."""
    conc = concentrations(image, rows, light)[..., :len(rows)].reshape(-1, len(rows))
    tissue = tissue_mask(np.asarray(image).reshape(-1, 3), light=light)
    return np.percentile(conc[tissue] if tissue.any() else conc, AMOUNT_PERCENTILE, axis=0)


def look_of(image: np.ndarray, source_stains=None) -> Look:
    """The :class:`Look` of a uint8 RGB image (its stains fitted by Macenko unless given)."""
    light = source_light("estimate", image)
    rows = source_stain_rows(image, source_stains, light)
    return Look(rows, stain_amounts(image, rows, light), light)


def staining_for(look: Look, source_amounts: np.ndarray, name: str = "reference look") -> Staining:
    """The staining that renders tissue whose typical stain amounts are ``source_amounts`` in ``look``:
    its stains and light, amounts scaled by ``look.amounts / source_amounts``."""
    return Staining(stains=look.stains, scale=tuple(look.amounts / source_amounts), light=tuple(look.light),
                    name=name)
