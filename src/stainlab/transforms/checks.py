"""Checks every method shares: its parameters when it is made, a saved transform's fields when it is
loaded, and images whose colours cannot define a target (issue 12: nothing lost, nothing silently wrong).

- Parameters are checked in ``__init__``, so a bad value fails when the transform is made and names the
  method and the parameter, not on the first image. Booleans are not numbers (``mask=2`` and
  ``lut_bits=True`` are refused), and every value that sets the amount of work has an upper bound.
- A saved transform is walked before anything is built from it (:func:`check_saved`): nesting depth and
  item counts are bounded before any list becomes an array, so a 10^8-item list is refused from its
  length. Each stored array is then read with its exact shape, finite values and range
  (:func:`stored_array`).
- An image whose colours do not vary in some channel (black, white, one colour, one flat channel) has no
  distribution to match (:func:`require_color_spread`). Peers either crashed on such tiles (torchstain #54,
  StainTools #34) or quietly turned them into one colour (Reinhard divides by their zero spread). The
  error is a :class:`~stainlab.errors.NoTissueError`: a reference is refused, a source is passed through
  unchanged with a warning.
"""

from __future__ import annotations

import reprlib

import numpy as np

from stainlab.color.deconvolution import StainBasis, stain_basis
from stainlab.color.stats import weighted_mean_std
from stainlab.errors import InputError, NoTissueError

MAX_DEPTH = 8
"""Nesting levels of a saved transform; the deepest real one (a matrix inside ``params``) has 4."""
MAX_ITEMS = 100_000
"""List and object items in a whole saved transform; the largest real state (histogram counts) has 768."""
MIN_SPREAD = 1.0
"""Grey levels. A channel whose standard deviation is under this is flat: one colour plus noise."""
MAX_SEED = 2**32 - 1
"""Seeds are whole numbers from 0 to this (what every random generator we seed accepts)."""
RGB = ("R", "G", "B")

_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 40


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def brief(value) -> str:
    """``repr(value)`` cut short, for messages about values that may be huge (a 10^8-item list)."""
    return _BRIEF.repr(value)


# -- parameters ---------------------------------------------------------------------------------------
def check_bool(what: str, value) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 1, "yes" or None), else :class:`InputError` naming ``what``."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be true or false, got {brief(value)}")
    return bool(value)


def check_int(what: str, value, low: int, high: int) -> int:
    """``value`` if it is a whole number (not a bool or a float) in [low, high]."""
    if not (_is_int(value) and low <= value <= high):
        raise InputError(f"{what} must be a whole number from {low} to {high}, got {brief(value)}")
    return int(value)


def check_float(what: str, value, low: float, high: float) -> float:
    """``value`` as a float if it is a number (not a bool or a string) in [low, high]; NaN never is."""
    if not (_is_number(value) and low <= value <= high):
        raise InputError(f"{what} must be a number from {low:g} to {high:g}, got {brief(value)}")
    return float(value)


def check_choice(what: str, value, choices) -> str:
    """``value`` if it is one of the strings ``choices``."""
    if not (isinstance(value, str) and value in choices):
        raise InputError(f"{what} must be one of {', '.join(choices)}, got {brief(value)}")
    return value


def check_stains(what: str, stains) -> StainBasis:
    """The :class:`~stainlab.color.deconvolution.StainBasis` of a stain set name or a (2, 3) / (3, 3) matrix."""
    try:
        return stain_basis(stains)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} must be a stain set name or matrix: {err}") from None


# -- saved transforms ---------------------------------------------------------------------------------
def check_saved(data: dict, source: str) -> None:
    """The outline of a saved transform, before any of it is built: ``version`` a whole number, ``method``
    a name, ``params`` an object, ``state`` an object or null, at most :data:`MAX_DEPTH` levels deep and
    :data:`MAX_ITEMS` items in all. The walk stops at the first list that is too long or too deep, so
    a hostile file costs no more than its size in time."""
    if "version" in data and not _is_int(data["version"]):
        raise InputError(f"{source}: version must be a whole number, got {brief(data['version'])}")
    if not isinstance(data.get("method"), str):
        raise InputError(f"{source}: method must be a method name, got {brief(data.get('method'))}")
    if not isinstance(data.get("params", {}), dict):
        raise InputError(f"{source}: params must be an object of parameter names and values")
    if not (data.get("state") is None or isinstance(data["state"], dict)):
        raise InputError(f"{source}: state must be an object or null")
    items = 0
    stack = [(data, 1, "the top level")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"{source}: {where} is nested more than {MAX_DEPTH} levels deep; "
                             "not a fitted-transform file")
        items += value.size if isinstance(value, np.ndarray) else len(value)
        if items > MAX_ITEMS:
            raise InputError(f"{source}: {where} takes the file over {MAX_ITEMS:,} items; "
                             "not a fitted-transform file")
        if isinstance(value, np.ndarray):
            continue
        for key, child in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(child, (dict, list, tuple, np.ndarray)):
                path = key if depth == 1 else f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]"
                stack.append((child, depth + 1, path))


def stored_array(state, key: str, shape: tuple[int, ...], what: str, low: float, high: float) -> np.ndarray:
    """``state[key]`` as a float64 array of exactly ``shape`` whose values are numbers (not bools or
    strings), finite and in [low, high]; :class:`InputError` naming ``what`` and ``key`` otherwise."""
    if key not in state:
        raise InputError(f"{what}: {key} is missing")
    value = state[key]
    expect = "x".join(map(str, shape))
    if not _has_shape(value, shape):
        raise InputError(f"{what}: {key} must be {expect} numbers, got {brief(value)}")
    array = np.array(value, dtype=np.float64)
    outside = ~(np.isfinite(array) & (array >= low) & (array <= high))
    if outside.any():
        raise InputError(f"{what}: {key} must hold finite numbers from {low:g} to {high:g}, "
                         f"got {array[outside][0]!r}")
    return array


def check_fields(state, fields, what: str) -> None:
    """Refuse a stored state with fields other than ``fields`` (a file for another version or method)."""
    unknown = sorted(set(state) - set(fields))
    if unknown:
        raise InputError(f"{what}: unknown field {unknown[0]!r}; expected {', '.join(fields)}")


def _has_shape(value, shape: tuple[int, ...]) -> bool:
    """Whether ``value`` is nested lists (or an array) of numbers of exactly ``shape``."""
    if isinstance(value, np.ndarray):
        return value.shape == shape and value.dtype.kind in "iuf"
    if not shape:
        return _is_number(value)
    return (isinstance(value, (list, tuple)) and len(value) == shape[0]
            and all(_has_shape(v, shape[1:]) for v in value))


# -- images that cannot define a target ---------------------------------------------------------------
def require_spread(std, what: str, channels=RGB, minimum: float = MIN_SPREAD) -> None:
    """:class:`NoTissueError` naming the first of ``channels`` whose standard deviation ``std`` is under
    ``minimum`` (or not finite): a flat channel gives a method nothing to match or to match to."""
    std = np.asarray(std, dtype=np.float64)
    flat = np.flatnonzero(~(std >= minimum))
    if flat.size:
        c = flat[0]
        raise NoTissueError(f"{what}: channel {channels[c]} does not vary (standard deviation {std[c]:.3g}, "
                            f"under {minimum:g}); a flat channel has no distribution to match")


def require_color_spread(colors, weights, what: str) -> None:
    """:func:`require_spread` on the R, G and B values of float colours (M, 3) with optional weights."""
    require_spread(weighted_mean_std(colors, weights)[1], what)
