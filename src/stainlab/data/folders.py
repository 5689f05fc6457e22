"""Folder datasets in the layouts people have, with clear errors instead of silent skips.

- unpaired domains: ``root/A/*``, ``root/B/*`` (CycleGAN-style training data);
- paired: ``root/A/x.png`` with ``root/B/x.png`` (same stem), e.g. the restaining simulator's output;
- HEV (paper 000: Heidelberg HE-Staining Variation): unpaired ``root/HE`` and ``root/Long HE`` tiles;
- BCI (paper 002: Breast Cancer Immunohistochemical challenge): ``root/HE/{train,test}/`` and
  ``root/IHC/{train,test}/`` with the same file names, the HER2 level in the name
  (``00001_train_2+.png`` -> level 2).

Images are read with :func:`stainlab.io.images.read_image`, so every unreadable file is an
:class:`InputError` naming it, at the moment it is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stainlab.data.simulate import HER2_LEVELS
from stainlab.errors import InputError
from stainlab.io.images import list_images, read_image

_LEVEL_IN_NAME = re.compile(r"_(0|1\+|2\+|3\+)$")
_HEV_DOMAINS = {"he": "HE", "longhe": "Long HE"}


def _folder(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_dir():
        raise InputError(f"{root}: expected a folder {name!r} (dataset layout), found none")
    return path


def _images(folder: Path) -> list[Path]:
    files = list_images([folder])
    if not files:
        raise InputError(f"{folder}: no images")
    return files


def _read(path: Path) -> np.ndarray:
    return read_image(path)[0]


@dataclass(frozen=True)
class UnpairedFolders:
    """Two image domains without correspondence: ``root/<a>`` and ``root/<b>``."""

    root: Path
    a: list[Path]
    b: list[Path]

    @classmethod
    def open(cls, root, a: str = "A", b: str = "B") -> "UnpairedFolders":
        root = Path(root)
        return cls(root, _images(_folder(root, a)), _images(_folder(root, b)))

    def read_a(self, i: int) -> np.ndarray:
        return _read(self.a[i])

    def read_b(self, i: int) -> np.ndarray:
        return _read(self.b[i])


def _hev_folders(root: Path) -> dict[str, str]:
    """HEV domain key -> the folder name that holds it, matched without regard to case, spaces,
    dashes or underscores (``long_he``, ``LongHE``...)."""
    found = {}
    for child in root.iterdir() if root.is_dir() else ():
        key = re.sub(r"[\s_\-]", "", child.name.lower())
        if child.is_dir() and key in _HEV_DOMAINS:
            found[key] = child.name
    return found


def is_hev_layout(root) -> bool:
    """True when ``root`` holds both HEV folders (``HE`` and ``Long HE``)."""
    return len(_hev_folders(Path(root))) == len(_HEV_DOMAINS)


def is_bci_layout(root) -> bool:
    """``root/HE`` and ``root/IHC`` folders (the BCI data set of paper 002)."""
    return (Path(root) / "HE").is_dir() and (Path(root) / "IHC").is_dir()


def hev(root) -> UnpairedFolders:
    """The HEV layout of paper 000: standard ``HE`` and over-stained ``Long HE`` tiles, unpaired."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    found = _hev_folders(root)
    missing = [_HEV_DOMAINS[k] for k in _HEV_DOMAINS if k not in found]
    if missing:
        raise InputError(f"{root}: HEV layout needs folders 'HE' and 'Long HE'; missing {', '.join(missing)}")
    return UnpairedFolders.open(root, found["he"], found["longhe"])


@dataclass(frozen=True)
class PairedFolders:
    """Pixel-aligned pairs: ``root/<a>/x`` with ``root/<b>/x`` (matched by file stem)."""

    root: Path
    pairs: list[tuple[Path, Path]]

    @classmethod
    def open(cls, root, a: str = "A", b: str = "B") -> "PairedFolders":
        root = Path(root)
        return cls(root, match_pairs(_images(_folder(root, a)), _images(_folder(root, b))))

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The i-th pair; a clear error when the two images differ in size."""
        return read_pair(*self.pairs[i])


def read_pair(a_path: Path, b_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair; an :class:`InputError` naming them when their sizes differ."""
    a, b = _read(a_path), _read(b_path)
    if a.shape != b.shape:
        raise InputError(f"{a_path} and {b_path}: a pair must have one size, got {a.shape[:2]} and {b.shape[:2]}")
    return a, b


def match_pairs(a_files: list[Path], b_files: list[Path]) -> list[tuple[Path, Path]]:
    """Pair files by stem; every file must have its partner (the error lists the first orphans)."""
    a_by, b_by = {p.stem: p for p in a_files}, {p.stem: p for p in b_files}
    orphans = sorted(set(a_by) ^ set(b_by))
    if orphans:
        where = [f"{s} (only in {(a_by.get(s) or b_by[s]).parent.name})" for s in orphans[:5]]
        more = f" and {len(orphans) - 5} more" if len(orphans) > 5 else ""
        raise InputError(f"unmatched pairs: {', '.join(where)}{more}")
    return [(a_by[s], b_by[s]) for s in sorted(a_by)]


def level_from_name(path) -> int:
    """HER2 level 0-3 from a BCI file name such as ``00001_train_2+.png``."""
    match = _LEVEL_IN_NAME.search(Path(path).stem)
    if not match:
        raise InputError(f"{path}: no HER2 level in the name (expected ..._0, _1+, _2+ or _3+ before the suffix)")
    return HER2_LEVELS.index(match.group(1))


@dataclass(frozen=True)
class BCIDataset:
    """One split of the BCI layout: H&E / IHC pairs with their HER2 levels."""

    root: Path
    split: str
    pairs: list[tuple[Path, Path]]
    levels: list[int]

    @classmethod
    def open(cls, root, split: str = "train") -> "BCIDataset":
        if split not in ("train", "test"):
            raise InputError(f"BCI split must be 'train' or 'test', got {split!r}")
        root = Path(root)
        he, ihc = _folder(_folder(root, "HE"), split), _folder(_folder(root, "IHC"), split)
        pairs = match_pairs(_images(he), _images(ihc))
        return cls(root, split, pairs, [level_from_name(a) for a, _ in pairs])

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(H&E, IHC, HER2 level) of the i-th pair."""
        he, ihc = read_pair(*self.pairs[i])
        return he, ihc, self.levels[i]
