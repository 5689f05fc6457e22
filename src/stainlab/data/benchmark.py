"""Write simulator pairs to a folder: the data a normalizer is scored on against exact ground truth.

``mode="restain"`` writes ``A/<name>.png`` (the tissue re-stained under a preset: what a normalizer
sees), ``B/<name>.png`` (the same tissue under the truth's staining: the ground truth), ``reference.png``
and ``meta.json``. The reference is what a fair score needs: an image in the truth's look, so a method
fitted on it is asked for exactly the look it is scored against. It is either another tissue tile
rendered under the same truth staining, held out of the scored pairs (the set's representative,
:func:`stainlab.data.looks.typical`: most tissue, most typical colour), or, when a reference image is
given, that image itself, with the truth rendered in its look (:func:`stainlab.data.looks.look_of`:
its stain rows, its stain amounts, its light). ``meta.json`` records which and why.

A look (given as an image, or as a :class:`~stainlab.data.looks.Look`) has stain amounts and a leak
into the residual, and the truth brings each source image's staining to them: the source's own (the
median over its pieces) are scaled and swapped for the look's, once for the whole source image. Slides
stained to different depths then share one look, as they would had one lab stained them all, while the
tiles of one slide keep their own variation (tissue differs from tile to tile; a normalizer that
rescales each tile is not handed the truth).

``mode="ihc"`` writes H&E -> IHC pairs in the BCI layout of paper 002, ``HE/<split>/00001_<split>_2+.png``
and ``IHC/<split>/00001_<split>_2+.png``, with ``meta_<split>.json``; it adds that split to an existing
BCI folder and leaves the other splits as they are.

With ``tile`` each source image is cut into ``tile`` x ``tile`` pieces
(:func:`stainlab.data.tiles.extract_tiles`, no overlap; the last row and column end at the border), one
pair each, named ``<source>_y<Y>_x<X>``; an image smaller than the tile is used whole. A piece with less
than ``min_tissue`` tissue is skipped as background, and one whose stains cannot be separated (too
little or one-stain tissue) is skipped with a warning; only when nothing is left is it an error.
``meta.json`` records each pair and the skipped counts.

Everything is written into hidden folders beside its destination and renamed into place at the end, so a
crash leaves no half-written benchmark, and the same arguments give byte-identical files.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from stainlab.color.tissue import tissue_mask
from stainlab.data.folders import is_bci_layout
from stainlab.data.looks import (Levels, Look, fingerprint, look_of, stain_levels, staining_for, tissue_colour,
                                 typical)
from stainlab.data.presets import PRESETS
from stainlab.data.presets import preset as preset_staining
from stainlab.data.simulate import (HER2_LEVELS, Staining, concentrations, he_to_ihc, her2_level, render,
                                    source_light, source_stain_rows)
from stainlab.data.tiles import extract_tiles, grid_starts
from stainlab.errors import InputError, StainlabError
from stainlab.io.arrays import check_rgb8
from stainlab.io.atomic import atomic_folder, atomic_write_text
from stainlab.io.images import list_images, read_image, write_image

MODES = ("restain", "ihc")
META = "meta.json"
REFERENCE = "reference.png"
TILE = 256
"""The side of the pieces the command line cuts sources into (``data make-benchmark``'s default, which
``evaluate --data PRESET`` follows)."""
MIN_TISSUE = 0.5
"""The tissue fraction a piece needs there."""


def make_benchmark(source, preset: str | None = "long-he", out=None, seed: int = 0, *,
                   reference: Staining | Look | str | Path | np.ndarray | None = None, mode: str = "restain",
                   levels=None, split: str = "train", source_stains=None, tile: int | None = None,
                   min_tissue: float = 0.0, overwrite: bool = False) -> Path:
    """Write a paired benchmark made from ``source`` to the folder ``out``; returns ``out``.

    ``source``: an image file, a folder of images, a uint8 HxWx3 array, or a list of files / arrays
    (arrays are named ``00000``, ``00001``...). ``preset``: a key of :data:`PRESETS`; pair ``i``
    gets the preset with its own jitter, seeded by ``(seed, i)``, so the set is varied and
    reproducible (the same seed drives its scanner noise). ``reference``: the ground truth's look.
    ``None``: the source as it is (its own staining's exact rendering); a :class:`Staining` or preset
    name: that staining; a :class:`~stainlab.data.looks.Look`: its stains, light and stain levels
    (each source image's brought to them, see the module docstring); in these cases one piece,
    the most representative, is held out and its truth written as ``reference.png``. A reference image
    (a uint8 array, or the path of an image file): the truth is rendered in its look
    (:func:`stainlab.data.looks.look_of`) and the image itself is ``reference.png``; this is the
    benchmark on which a method fitted to that image is scored fairly. Each source image is separated against its own light (the
    colour of its glass, estimated once over the whole image before it is cut). ``source_stains``: how
    each piece is separated (``None`` = Macenko fit per piece, or a named set / matrix). ``tile``: cut
    sources into pieces of this side (``None``: whole images); ``min_tissue``: the tissue fraction a
    piece needs, tissue taken against the source's light (see the module docstring).

    ``mode="ihc"``: H&E -> IHC pairs in split ``split``; ``levels`` gives each source image's HER2
    level, which its tiles share (one for all, or one per source image; default: drawn from the seed);
    ``preset`` is ignored there. ``out`` may be an existing BCI folder: the split is added to it.

    An existing benchmark (``restain``: the folder ``out``; ``ihc``: the split) is replaced only with
    ``overwrite=True`` and only if this function made it (its meta file is there).
    """
    if mode not in MODES:
        raise InputError(f"unknown benchmark mode {mode!r}; use one of {', '.join(MODES)}")
    if out is None:
        raise InputError("make_benchmark needs an output folder (out)")
    if mode == "restain" and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    if mode == "ihc" and (not split or "/" in split or "_" in split):
        raise InputError(f"split must be a plain folder name such as 'train' or 'test', got {split!r}")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1):
        raise InputError(f"tile must be a positive number of pixels or None (whole images), got {tile!r}")
    if not 0.0 <= min_tissue <= 1.0:
        raise InputError(f"min_tissue must be a fraction in [0, 1], got {min_tissue}")
    seed = _check_seed(seed)
    items = _sources(source)
    out = Path(out)
    if mode == "restain":
        _check_destination(out, overwrite)
        chosen = [None] * len(items)
    else:
        _check_split(out, split, overwrite)
        chosen = _ihc_levels(levels, len(items), seed)
    items = [(name, load, level) for (name, load), level in zip(items, chosen, strict=True)]
    skipped: Counter[str] = Counter()
    pieces = _separable(_pieces(items, tile, min_tissue, skipped), source_stains, skipped)
    first = next(pieces, None)  # nothing is written unless there is a pair to write
    if first is None:
        raise InputError(f"no pairs made: every source piece was skipped ({skipped['background']} with under "
                         f"{min_tissue:.0%} tissue, {skipped['unseparable']} whose stains could not be separated)")
    pieces = itertools.chain([first], pieces)
    settings = {"seed": seed, "tile": tile, "min_tissue": min_tissue}
    if mode == "restain":
        truth, look, given = _reference(reference, seed)
        if look is None:
            truths = {name: truth for name, _, _ in items}
        else:
            truths = {name: staining_for(look, levels)
                      for name, levels in _source_levels(items, tile, min_tissue, source_stains).items()}
        with atomic_folder(out) as folder:
            meta = _write_restain(pieces, preset, seed, truths, given, folder)
            _write_meta(folder / META, {**meta, **settings, "truth_look": None if look is None else look.to_dict()},
                        skipped)
    else:
        with atomic_folder(out / "HE" / split) as he, atomic_folder(out / "IHC" / split) as ihc:
            meta = _write_ihc(pieces, seed, split, he, ihc)
            _write_meta(out / meta_name("ihc", split), {**meta, **settings}, skipped)
    return out


def meta_name(mode: str, split: str = "train") -> str:
    """The file, in the benchmark folder, that records how a benchmark (or a BCI split) was made."""
    return META if mode == "restain" else f"meta_{split}.json"


def _write_meta(path: Path, meta: dict, skipped: Counter) -> None:
    """``meta`` with the number of pairs and the skipped pieces, as JSON."""
    counts = {"background": skipped["background"], "unseparable": skipped["unseparable"]}
    meta = {**meta, "pairs": len(meta["images"]), "skipped": counts}
    atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")


# -- pieces: tiles or whole images with tissue enough and separable stains ---------------------------------------
def _pieces(items, tile: int | None, min_tissue: float, skipped: Counter):
    """``(pair name, source name, (y, x) or None, image, level, light)`` of every piece with tissue
    enough, ``light`` being its source image's (a tile may have no glass of its own); counts the others
    in ``skipped["background"]``."""
    for name, load, level in items:
        image = load()
        light = source_light("estimate", image)
        if tile is None or min(image.shape[:2]) < tile:
            found = [(name, None, image)] if tissue_mask(image, light=light).mean() >= min_tissue else []
            total = 1
        else:
            found = [(f"{name}_y{t.y}_x{t.x}", (t.y, t.x), t.image)
                     for t in extract_tiles(image, tile, overlap=0, min_tissue=min_tissue, light=light)]
            total = len(grid_starts(image.shape[0], tile, tile)) * len(grid_starts(image.shape[1], tile, tile))
        skipped["background"] += total - len(found)
        if not found:
            warnings.warn(f"{name}: no tissue (under {min_tissue:.0%} in all {total} piece(s)); skipped",
                          stacklevel=2)
        for pair_name, at, piece in found:
            yield pair_name, name, at, piece, level, light


def _separable(pieces, source_stains, skipped: Counter):
    """The pieces with their fitted stain rows; a piece whose stains cannot be separated is skipped
    with a warning and counted in ``skipped["unseparable"]``."""
    for pair_name, name, at, image, level, light in pieces:
        try:
            rows = source_stain_rows(image, source_stains, light)
        except StainlabError as err:
            warnings.warn(f"{pair_name}: cannot separate its stains ({err}); skipped", stacklevel=2)
            skipped["unseparable"] += 1
            continue
        record = {"source": name, "at": at, "source_stains": rows.tolist(), "source_light": light.tolist()}
        yield pair_name, record, image, rows, level, light


def _source_levels(items, tile: int | None, min_tissue: float, source_stains) -> dict[str, Levels]:
    """Each source image's staining: the median over its pieces of their
    :func:`~stainlab.data.looks.stain_levels`, by source name. A first pass over the pieces, quiet (the
    writing pass reports the skipped ones)."""
    found: dict[str, list] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, record, image, rows, _, light in _separable(_pieces(items, tile, min_tissue, Counter()),
                                                           source_stains, Counter()):
            found.setdefault(record["source"], []).append(stain_levels(image, rows, light))
    return {name: Levels(*(np.median(part, axis=0) for part in zip(*levels, strict=True)))
            for name, levels in found.items()}


# -- writing ----------------------------------------------------------------------------------------------------
def _write_restain(pieces, preset_name, seed, truths: dict[str, Staining | None], given: np.ndarray | None,
                   folder: Path) -> dict:
    """Every pair (its truth under ``truths[its source]``, ``None``: the source as it is), then the
    reference: ``given`` itself, or the representative pair's truth (moved to ``reference.png``, its
    input deleted) when there are two pairs or more."""
    images, colours = [], []
    for index, (name, record, image, rows, _, light) in enumerate(pieces):
        target, noise_seed = _image_staining(preset_name, seed, index), _image_seed(seed, index)
        truth = truths[record["source"]]
        conc = concentrations(image, rows, light)
        write_image(folder / "A" / f"{name}.png", render(conc, rows, target, noise_seed, light))
        truth_image = image if truth is None else render(conc, rows, truth, source_light=light)
        write_image(folder / "B" / f"{name}.png", truth_image)
        colours.append(tissue_colour(truth_image))
        images.append({"name": name, **record, "staining": target.to_dict(), "noise_seed": noise_seed,
                       "truth_staining": None if truth is None else truth.to_dict()})
    if given is not None:
        write_image(folder / REFERENCE, given)
        reference = {"given": True, "held_out": None,
                     "why": "the reference image given; the truth is rendered in its look (its stain rows, stain "
                            "levels and light)"}
    elif len(images) > 1:
        choice = typical(colours, [entry["name"] for entry in images])
        held_out = images.pop(choice.index)["name"]
        given = read_image(folder / "B" / f"{held_out}.png")[0]
        (folder / "B" / f"{held_out}.png").rename(folder / REFERENCE)
        (folder / "A" / f"{held_out}.png").unlink()
        reference = {"given": False, "held_out": held_out,
                     "why": f"held out of the scored pairs, the truth of {choice.why}"}
    else:
        reference = None
    if reference is not None:
        reference = {"file": REFERENCE, **reference, "fingerprint": fingerprint(given)}
    return {"mode": "restain", "preset": preset_name, "preset_doc": _preset_doc(preset_name),
            "reference_image": reference, "images": images, "layout": "A/<name>.png = re-stained input, B/<name>.png = ground truth "
                                        "(pixel-aligned), reference.png = an image in the truth's look"}


def _write_ihc(pieces, seed, split, he: Path, ihc: Path) -> dict:
    images = []
    for index, (_, record, image, rows, level, light) in enumerate(pieces):
        bci_name = f"{index + 1:05d}_{split}_{level}.png"
        write_image(he / bci_name, image)
        write_image(ihc / bci_name, he_to_ihc(image, level, _image_seed(seed, index), rows, light))
        images.append({"name": bci_name, **record, "level": level})
    return {"mode": "ihc", "split": split, "images": images,
            "layout": "HE/<split>/<n>_<split>_<level>.png with IHC/<split>/ of the same name (BCI, paper 002)"}


def _image_staining(preset_name: str, seed: int, index: int) -> Staining:
    """Image ``index``'s own draw of the preset: the jitter seeded by ``(seed, index)``."""
    return preset_staining(preset_name, _image_seed(seed, index))


def _image_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _reference(reference, seed: int) -> tuple[Staining | None, Look | None, np.ndarray | None]:
    """The truth's one staining (``None``: the sources as they are, or per source from a look), the
    look it is rendered in (if any) and the reference image given (if any)."""
    if reference is None or isinstance(reference, Staining):
        return reference, None, None
    if isinstance(reference, Look):
        return None, reference, None
    if isinstance(reference, str) and reference in PRESETS:
        return preset_staining(reference, seed), None, None
    if isinstance(reference, np.ndarray):
        image = check_rgb8(reference, "reference")
    elif isinstance(reference, (str, Path)):
        if not Path(reference).is_file():
            raise InputError(f"reference {reference}: neither an image file nor a preset ({', '.join(PRESETS)})")
        image = read_image(reference)[0]
    else:
        raise InputError(f"reference must be None, a Staining, a Look, a preset name, an image or its path, got "
                         f"{type(reference).__name__}")
    return None, look_of(image), image


def _ihc_levels(levels, count: int, seed: int) -> list[str]:
    if levels is None:
        rng = np.random.default_rng([seed, count])
        return [HER2_LEVELS[i] for i in rng.integers(0, len(HER2_LEVELS), count)]
    if isinstance(levels, (str, int, np.integer)):
        return [her2_level(levels)] * count
    levels = [her2_level(level) for level in levels]
    if len(levels) != count:
        raise InputError(f"{len(levels)} HER2 levels given for {count} source images")
    return levels


def _preset_doc(name: str) -> dict:
    spec = PRESETS[name]
    return {"imitates": spec.imitates, "changes": spec.changes}


def _sources(source) -> list[tuple[str, object]]:
    """``(name, load)`` of every source image from a path, a folder, an array or a list of them, where
    ``load()`` gives the uint8 image (files are read when their turn comes); names unique."""
    if isinstance(source, (str, Path, np.ndarray)):
        source = [source]
    items = []
    for index, item in enumerate(source):
        if isinstance(item, np.ndarray):
            image = check_rgb8(item, f"source array {index}")
            items.append((f"{index:05d}", lambda image=image: image))
            continue
        paths = list_images(item)
        if not paths:
            raise InputError(f"{item}: no images found")
        items.extend((path.stem, lambda path=path: read_image(path)[0]) for path in paths)
    if not items:
        raise InputError("no source images given")
    names = [name for name, _ in items]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"source images share names ({', '.join(duplicated)}); pairs are named after them")
    return items


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"the seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: exists and is not empty; --overwrite (overwrite=True) replaces a "
                                  "benchmark")
        if not (out / META).is_file():
            raise InputError(f"{out}: not a benchmark folder (no {META}); refusing to replace it")


def _check_split(out: Path, split: str, overwrite: bool) -> None:
    """``out`` may be new, empty or a BCI folder; its split ``split`` is replaced only with ``overwrite``
    and only when this module made it."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_bci_layout(out):
        raise InputError(f"{out}: neither empty nor a BCI folder (HE/ and IHC/); refusing to add a split to it")
    there = [str(path.relative_to(out)) for path in (out / "HE" / split, out / "IHC" / split) if path.exists()]
    if not there:
        return
    if not overwrite:
        raise FileExistsError(f"{out}: split {split!r} exists already ({', '.join(there)}); "
                              "--overwrite (overwrite=True) replaces it")
    if not (out / meta_name("ihc", split)).is_file():
        raise InputError(f"{out}: split {split!r} was not made by make-benchmark (no {meta_name('ihc', split)}); "
                         "refusing to replace it")
