"""Write simulator pairs to a folder: the data a normalizer is scored on against exact ground truth.

``mode="restain"`` writes ``A/<name>.png`` (the tissue re-stained under a preset: what a normalizer
sees), ``B/<name>.png`` (the same tissue under the reference staining: the ground truth) and
``meta.json``. ``mode="ihc"`` writes H&E -> IHC pairs in the BCI layout of paper 002,
``HE/<split>/00001_<split>_2+.png`` and ``IHC/<split>/00001_<split>_2+.png``.

Everything is written into a hidden folder beside ``out`` and renamed into place at the end, so a
crash leaves no half-written benchmark, and the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stainlab.color.deconvolution import separate
from stainlab.data.presets import PRESETS
from stainlab.data.presets import preset as preset_staining
from stainlab.data.simulate import HER2_LEVELS, Staining, he_to_ihc, her2_level, render, source_stain_rows
from stainlab.errors import InputError, StainlabError
from stainlab.io.arrays import check_rgb8
from stainlab.io.atomic import atomic_folder
from stainlab.io.images import list_images, read_image, write_image

MODES = ("restain", "ihc")
META = "meta.json"


def make_benchmark(source, preset: str | None = "long-he", out=None, seed: int = 0, *,
                   reference: Staining | str | None = None, mode: str = "restain", levels=None,
                   split: str = "train", source_stains=None, overwrite: bool = False) -> Path:
    """Write a paired benchmark made from ``source`` to the folder ``out``; returns ``out``.

    ``source``: an image file, a folder of images, a uint8 HxWx3 array, or a list of files / arrays
    (arrays are named ``00000``, ``00001``...). ``preset``: a key of :data:`PRESETS`; image ``i``
    gets the preset with its own jitter, seeded by ``(seed, i)``, so the set is varied and
    reproducible (the same seed drives its scanner noise). ``reference``: the ground truth's staining (``None``: the source as it is, which is
    its own staining's exact rendering; or a :class:`Staining` / preset name). ``source_stains``: how
    each source is separated (``None`` = Macenko fit per image, or a named set / matrix).

    ``mode="ihc"``: H&E -> IHC pairs; ``levels`` gives each image's HER2 level (one for all, or one per
    image; default: drawn from the seed); ``preset`` is ignored there.
    An existing ``out`` is replaced only with ``overwrite=True`` and only if it holds a ``meta.json``.
    """
    if mode not in MODES:
        raise InputError(f"unknown benchmark mode {mode!r}; use one of {', '.join(MODES)}")
    if out is None:
        raise InputError("make_benchmark needs an output folder (out)")
    if mode == "restain" and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    seed = _check_seed(seed)
    items = _load_sources(source)
    out = Path(out)
    _check_destination(out, overwrite)
    with atomic_folder(out) as folder:
        if mode == "restain":
            meta = _write_restain(items, preset, seed, reference, source_stains, folder)
        else:
            meta = _write_ihc(items, seed, levels, split, source_stains, folder)
        (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _write_restain(items, preset_name, seed, reference, source_stains, folder: Path) -> dict:
    truth = _reference_staining(reference, seed)
    images = []
    for index, (name, image) in enumerate(items):
        rows = _fitted_rows(image, source_stains, name)
        target, noise_seed = _image_staining(preset_name, seed, index), _image_seed(seed, index)
        conc = separate(image, rows)
        write_image(folder / "A" / f"{name}.png", render(conc, rows, target, seed=noise_seed))
        write_image(folder / "B" / f"{name}.png", image if truth is None else render(conc, rows, truth))
        images.append({"name": name, "source_stains": rows.tolist(), "staining": target.to_dict(),
                       "noise_seed": noise_seed})
    return {"mode": "restain", "preset": preset_name, "seed": seed, "preset_doc": _preset_doc(preset_name),
            "reference": None if truth is None else truth.to_dict(), "images": images,
            "layout": "A/<name>.png = re-stained input, B/<name>.png = ground truth (pixel-aligned)"}


def _write_ihc(items, seed, levels, split, source_stains, folder: Path) -> dict:
    if not split or "/" in split or "_" in split:
        raise InputError(f"split must be a plain folder name such as 'train' or 'test', got {split!r}")
    chosen = _ihc_levels(levels, len(items), seed)
    images = []
    for index, ((name, image), level) in enumerate(zip(items, chosen, strict=True)):
        rows = _fitted_rows(image, source_stains, name)
        bci_name = f"{index + 1:05d}_{split}_{level}.png"
        write_image(folder / "HE" / split / bci_name, image)
        write_image(folder / "IHC" / split / bci_name, he_to_ihc(image, level, _image_seed(seed, index), rows))
        images.append({"name": bci_name, "source": name, "level": level, "source_stains": rows.tolist()})
    return {"mode": "ihc", "seed": seed, "split": split, "images": images,
            "layout": "HE/<split>/<n>_<split>_<level>.png with IHC/<split>/ of the same name (BCI, paper 002)"}


def _image_staining(preset_name: str, seed: int, index: int) -> Staining:
    """Image ``index``'s own draw of the preset: the jitter seeded by ``(seed, index)``."""
    return preset_staining(preset_name, _image_seed(seed, index))


def _image_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _reference_staining(reference, seed: int) -> Staining | None:
    if reference is None or isinstance(reference, Staining):
        return reference
    if isinstance(reference, str):
        return preset_staining(reference, seed)
    raise InputError(f"reference must be None, a Staining or a preset name, got {type(reference).__name__}")


def _fitted_rows(image: np.ndarray, source_stains, name: str) -> np.ndarray:
    try:
        return source_stain_rows(image, source_stains)
    except StainlabError as err:
        raise InputError(f"source {name}: cannot separate its stains ({err})") from None


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


def _load_sources(source) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 image) pairs from a path, a folder, an array or a list of them; names unique."""
    if isinstance(source, (str, Path, np.ndarray)):
        source = [source]
    items = []
    for index, item in enumerate(source):
        if isinstance(item, np.ndarray):
            items.append((f"{index:05d}", check_rgb8(item, f"source array {index}")))
            continue
        paths = list_images(item)
        if not paths:
            raise InputError(f"{item}: no images found")
        items.extend((path.stem, read_image(path)[0]) for path in paths)
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
            raise FileExistsError(f"{out}: exists and is not empty (use overwrite to replace a benchmark)")
        if not (out / META).is_file():
            raise InputError(f"{out}: not a benchmark folder (no {META}); refusing to replace it")
