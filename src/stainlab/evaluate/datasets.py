"""The data an evaluation scores: a folder in one of the known layouts, or a simulator preset."""

from __future__ import annotations

import json
from pathlib import Path

from stainlab.errors import InputError


def evaluation_data(spec: str, source, seed: int, out, unpaired: bool = False, reference=None):
    """The data to score: the folder ``spec`` (paired A/ B/; unpaired A/ B/ with ``unpaired``; the HEV
    layout, unpaired HE -> Long HE; the BCI layout's test split), else a simulator preset rendered into
    ``out/data`` from ``source`` (scikit-image's IHC image when none is given) cut as ``data
    make-benchmark`` cuts it, reused when it is already there. A preset's truth is rendered in the look of ``reference`` (an image) when given, so a
    user's own reference is scored fairly; else one tile is held out as the reference."""
    from stainlab.data.benchmark import META, MIN_TISSUE, TILE, make_benchmark
    from stainlab.data.folders import PairedFolders, UnpairedFolders, hev, is_bci_layout, is_hev_layout
    from stainlab.data.looks import fingerprint
    from stainlab.data.presets import PRESETS

    if Path(spec).is_dir():
        from stainlab.evaluate.semantic import bci_pairs

        if is_bci_layout(spec) and not unpaired:
            return bci_pairs(spec, "test")
        if unpaired:
            return UnpairedFolders.open(spec)
        return hev(spec) if is_hev_layout(spec) else PairedFolders.open(spec)
    if spec not in PRESETS:
        raise InputError(f"{spec}: neither a folder with A/ and B/ nor a preset ({', '.join(PRESETS)})")
    folder = Path(out) / "data"
    meta = folder / META
    if meta.is_file():
        made = json.loads(meta.read_text(encoding="utf-8"))
        if made.get("preset") != spec or made.get("seed") != seed:
            raise InputError(f"{folder}: holds preset {made.get('preset')!r} seed {made.get('seed')}; "
                             "use another -o or delete it")
        made_for = made.get("reference_image") or {}
        had = made_for.get("fingerprint") if made_for.get("given") else None
        if had != (None if reference is None else fingerprint(reference)):
            rendered = "for a reference given with -r" if had else "with a tile of its own as the reference"
            asked = "no -r" if reference is None else "this -r"
            raise InputError(f"{folder}: its truth was rendered {rendered}, not for {asked}; use another -o or "
                             "delete it")
    else:
        make_benchmark(source or demo_tissue(), spec, folder, seed, reference=reference, tile=TILE,
                       min_tissue=MIN_TISSUE)
    return PairedFolders.open(folder)


def demo_tissue() -> list:
    """The four 256x256 quarters of scikit-image's real IHC image."""
    from skimage import data

    from stainlab.data.tiles import extract_tiles

    return [t.image for t in extract_tiles(data.immunohistochemistry(), tile=256, overlap=0, min_tissue=0.0)]
