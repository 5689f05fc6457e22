"""Writing a whole-slide result: a resumable store of finished tile rows, then a pyramidal OME-TIFF
that every viewer opens with all its levels.

Viewers find the levels of a pyramid in two places, and the output serves both:

* OME readers (QuPath and Fiji through Bio-Formats, tifffile, napari) take the levels from the SubIFDs
  of the full-resolution image (OME-TIFF 6 pyramids), its physical pixel size from the OME metadata
  (QuPath needs microns per pixel: qupath #221; a stitched pyramidal OME-TIFF is what pathml #363 asks
  for);
* OpenSlide and libvips read a generic tiled TIFF: the levels are the tiled "reduced image" IFDs of the
  main chain, the microns per pixel come from the resolution tags of the first one. A pyramid only in
  SubIFDs opens there as one level (OpenSlide 4 showed one 500x400 level of a four-level output).

So after the OME-TIFF is written, a copy of each sub-IFD is appended to the main chain
(:func:`chain_levels`). The copies point at the same tiles, so nothing is stored twice, and the OME
metadata still names only the first IFD, so OME readers see one image with its SubIFD levels (the
OME-TIFF specification forbids the sub-IFDs themselves in the main chain, not copies of them).

The work happens in three resumable steps, each bounded in memory by a few rows of tiles:

1. finished rows of level-0 tiles are put in a :class:`TileStore`, a work folder beside the output
   (``.NAME.work``) that records which job it belongs to; a crashed run finds the rows it already
   finished and computes only the rest. Each row file ends with a checksum: a damaged or truncated
   row (a killed run, a full disk) is found on resume, removed and computed again, and a damaged
   record of the job empties the folder;
2. :func:`build_levels` makes each lower level from two rows of the level above (2x2 means), also
   into the store;
3. :func:`write_pyramid` streams the tiles of every level from the store into the TIFF, written to a
   temporary file and renamed over the output in one step (:mod:`stainlab.io.atomic`); the store is
   then removed.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from stainlab.errors import InputError
from stainlab.io.atomic import atomic_path, atomic_write_text

COMPRESSIONS = ("jpeg", "zlib", "none")
JPEG_QUALITY = 90     # slide scanners store JPEG tiles at quality 70-90; 90 keeps normalized colour close
STORE_ZSTD_LEVEL = 1  # the work store favours speed: it lives only until the TIFF is written
_JOB_FILE = "job.json"
_CHECKSUM = struct.Struct("<I")  # CRC-32 of the compressed row, at the end of each row file


def work_folder(output: Path) -> Path:
    """The store of ``output``: a hidden folder beside it."""
    return output.with_name(f".{output.name}.work")


class TileStore:
    """Finished rows of tiles per pyramid level, compressed, one file per row, in a work folder.

    ``job`` describes the run (source, level, tiling, transform); a folder left by a different job, or
    whose record of its job is damaged, is emptied rather than reused. A row file that fails its
    checksum counts as missing (and is removed), so a damaged store never blocks a resume; checking
    costs a resume one read of each stored row.
    """

    def __init__(self, folder: Path, job: dict) -> None:
        self.folder = Path(folder)
        text = json.dumps(job, sort_keys=True, indent=1, default=str)
        meta = self.folder / _JOB_FILE
        try:
            if self.folder.is_dir() and not self._holds(meta, text):
                shutil.rmtree(self.folder)
            elif self.folder.exists() and not self.folder.is_dir():
                self.folder.unlink()
            self.folder.mkdir(parents=True, exist_ok=True)
            if not meta.is_file():
                atomic_write_text(meta, text)
        except OSError as err:
            raise InputError(f"{self.folder}: cannot write the work folder ({err.strerror or err})") from None

    @staticmethod
    def _holds(meta: Path, text: str) -> bool:
        """Whether the job record ``meta`` reads exactly ``text`` (not when missing, cut or unreadable)."""
        try:
            return meta.read_bytes() == text.encode("utf-8")
        except OSError:
            return False

    def _path(self, level: int, row: int) -> Path:
        return self.folder / f"L{level}" / f"{row:06d}.npy.zst"

    def _payload(self, path: Path) -> bytes | None:
        """The compressed row in ``path`` when its checksum holds; None when it is missing or damaged."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        body, tail = data[:-_CHECKSUM.size], data[-_CHECKSUM.size:]
        return body if len(data) > _CHECKSUM.size and _CHECKSUM.unpack(tail)[0] == zlib.crc32(body) else None

    def has(self, level: int, row: int) -> bool:
        """Whether the row is stored intact; a damaged row file is removed, to be computed again."""
        path = self._path(level, row)
        if self._payload(path) is not None:
            return True
        path.unlink(missing_ok=True)
        return False

    def put(self, level: int, row: int, pixels: np.ndarray) -> None:
        import imagecodecs

        buffer = io.BytesIO()
        np.save(buffer, pixels, allow_pickle=False)
        data = imagecodecs.zstd_encode(buffer.getvalue(), level=STORE_ZSTD_LEVEL)
        path = self._path(level, row)
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data + _CHECKSUM.pack(zlib.crc32(data)))

    def get(self, level: int, row: int) -> np.ndarray:
        """The stored row; :class:`InputError` naming the file when it is damaged (then removed, so the
        next run computes it again)."""
        import imagecodecs

        path = self._path(level, row)
        payload = self._payload(path)
        try:
            if payload is None:
                raise ValueError("missing, cut short or failing its checksum")
            return np.load(io.BytesIO(imagecodecs.zstd_decode(payload)), allow_pickle=False)
        except Exception as err:  # any decoder error: the file is damaged
            path.unlink(missing_ok=True)
            raise InputError(f"{path}: damaged work file ({err}); removed, run again to compute it anew") from None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def level_shapes(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """Level sizes, halving (rounded up) until the whole level fits in one tile."""
    shapes = [(height, width)]
    while max(shapes[-1]) > tile:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def halve(pixels: np.ndarray) -> np.ndarray:
    """2x2 mean (rounded half up) of a uint8 HxWx3 array; an odd last row/column is repeated."""
    h, w = pixels.shape[:2]
    if h % 2 or w % 2:
        pixels = np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    total = pixels[0::2, 0::2].astype(np.uint16)  # quarter-size temporaries only
    for dy, dx in ((1, 0), (0, 1), (1, 1)):
        total += pixels[dy::2, dx::2]
    return ((total + 2) // 4).astype(np.uint8)


def build_levels(store: TileStore, shapes: list[tuple[int, int]], tile: int) -> None:
    """Fill levels 1.. of the store from level 0, skipping rows already there."""
    for level in range(1, len(shapes)):
        above_rows = -(-shapes[level - 1][0] // tile)
        for row in range(-(-shapes[level][0] // tile)):
            if store.has(level, row):
                continue
            parts = [store.get(level - 1, r) for r in (2 * row, 2 * row + 1) if r < above_rows]
            store.put(level, row, halve(np.concatenate(parts, axis=0)))


def _tiles(store: TileStore, level: int, shape: tuple[int, int], tile: int) -> Iterator[np.ndarray]:
    """The level's tiles in row-major order, edge tiles padded to full size."""
    for row in range(-(-shape[0] // tile)):
        pixels = store.get(level, row)
        for x in range(0, shape[1], tile):
            part = pixels[:, x:x + tile]
            if part.shape[:2] != (tile, tile):
                part = np.pad(part, ((0, tile - part.shape[0]), (0, tile - part.shape[1]), (0, 0)))
            yield part


def _ome_metadata(mpp: float | None) -> dict:
    metadata = {"axes": "YXS", "SignificantBits": 8}
    if mpp:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    return metadata


def write_pyramid(path: Path, store: TileStore, shapes: list[tuple[int, int]], tile: int, mpp: float | None,
                  compression: str = "jpeg", quality: int = JPEG_QUALITY) -> Path:
    """Write the store's levels as a tiled pyramidal OME-TIFF (BigTIFF) at ``path``, atomically, with
    the levels also in the main IFD chain (:func:`chain_levels`)."""
    import tifffile

    if compression not in COMPRESSIONS:
        raise InputError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    if tile % 16:
        raise InputError(f"a tiled TIFF needs a tile size that is a multiple of 16, got {tile}")
    options = {"tile": (tile, tile), "photometric": "rgb", "dtype": np.uint8,
               "compression": None if compression == "none" else compression,
               "compressionargs": {"level": quality} if compression == "jpeg" else None}
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            for level, shape in enumerate(shapes):
                scale = 2 ** level
                resolution = {"resolution": (1e4 / (mpp * scale),) * 2, "resolutionunit": "CENTIMETER"} if mpp else {}
                extra = ({"subifds": len(shapes) - 1, "metadata": _ome_metadata(mpp)} if level == 0
                         else {"subfiletype": 1, "metadata": None})
                tif.write(_tiles(store, level, shape, tile), shape=(*shape, 3), **options, **resolution, **extra)
        chain_levels(tmp)
    return path


_BIGTIFF_ENTRY = 20  # bytes of one BigTIFF IFD entry; an IFD is an 8-byte count, the entries, an 8-byte link


def chain_levels(path: Path) -> None:
    """Append a copy of each sub-IFD of the first image of the BigTIFF at ``path`` to the main IFD
    chain, after that image, so that readers of the main chain (OpenSlide, libvips) see every level.

    An IFD holds its values inline or as absolute file offsets, so a byte copy points at the very same
    tile offsets, byte counts and tiles: nothing else is written. The copies keep the subfile type
    "reduced image" that OpenSlide requires of a level."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        first, subifds, order = tif.pages[0].offset, tif.pages[0].subifds or (), tif.byteorder
    word = struct.Struct(order + "Q")  # BigTIFF counts and offsets
    with open(path, "r+b") as fh:
        def size(offset: int) -> int:
            """Bytes of the IFD at ``offset`` up to its link to the next IFD."""
            fh.seek(offset)
            return word.size + _BIGTIFF_ENTRY * word.unpack(fh.read(word.size))[0]

        slot = first + size(first)  # where level 0 links to the next IFD (0: none yet)
        for offset in subifds:
            length = size(offset)
            fh.seek(offset)
            ifd = fh.read(length)
            end = fh.seek(0, 2)
            copy = end + (-end % 8)                  # IFDs start on a word boundary
            fh.write(b"\0" * (copy - end) + ifd + word.pack(0))  # the last copy ends the chain
            fh.seek(slot)
            fh.write(word.pack(copy))
            slot = copy + len(ifd)
