"""Writing a whole-slide result: a resumable store of finished, encoded tiles, then a pyramidal
OME-TIFF that every viewer opens with all its levels.

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

Every tile is encoded once, by the codec of the output (:class:`TileCodec`: JPEG as a scanner writes it,
zlib, none; a lossless zstd for plain image outputs), in the threads that computed it:

1. finished rows of tiles, already encoded, are put in a :class:`TileStore`, a work folder beside the
   output (``.NAME.work``) that records which job it belongs to; a crashed run finds the rows it already
   finished and computes only the rest. Each row file ends with a checksum: a damaged or truncated
   row (a killed run, a full disk) is found on resume, removed and computed again, and a damaged
   record of the job empties the folder;
2. :class:`RowWriter` makes each lower level from pairs of rows of the level above (2x2 means) as soon as
   both are finished, from the pixels still in memory, and encodes and stores it the same way; rows a
   run did not see (computed before a crash, or by other processes) are decoded from the store;
3. :func:`write_pyramid` copies the encoded tiles of every level from the store into the TIFF, written
   to a temporary file and renamed over the output in one step (:mod:`stainlab.io.atomic`): nothing is
   encoded twice. The store is then removed.

Memory stays a few rows of tiles per level whatever the slide's height.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import zlib
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from numba import njit

from stainlab.errors import InputError
from stainlab.io.atomic import atomic_path, atomic_write_text

COMPRESSIONS = ("jpeg", "zlib", "none")
JPEG_QUALITY = 90     # slide scanners store JPEG tiles at quality 70-90; 90 keeps normalized colour close
JPEG_SUBSAMPLING = (2, 2)  # YCbCr 4:2:0, as scanners and tifffile write JPEG tiles
STORE_ZSTD_LEVEL = 1  # plain-image outputs keep lossless rows in the store, favouring speed
_JOB_FILE = "job.json"
_CHECKSUM = struct.Struct("<I")  # CRC-32 of a row file's contents, at its end
_COUNT = struct.Struct("<I")     # tiles in a row file, then one length per tile
_IOV_MAX = 1024                  # buffers one writev call may take (POSIX's usual IOV_MAX)
_MAX_ENCODING_ROWS = 8           # rows whose tiles may be encoding at once: memory stays a few rows
_MAX_HANDED_ROWS = 8             # level-0 rows a streamed output holds in memory; more are read back from the store
_HANDED_LOWER_BYTES = 128 << 20  # and bytes of lower levels' rows, which wait for the whole of level 0
_SYNC_BYTES = 8 << 20            # a streamed output is flushed to disk every this many bytes of tiles

Rows = Callable[[int, int], list]  # (level, row) -> the row's encoded tiles


def work_folder(output: Path) -> Path:
    """The store of ``output``: a hidden folder beside it."""
    return output.with_name(f".{output.name}.work")


@dataclass(frozen=True)
class TileCodec:
    """How a ``tile`` x ``tile`` RGB tile is encoded: ``jpeg`` (at ``quality``, YCbCr 4:2:0), ``zlib``,
    ``none`` (the output TIFF's compressions), or ``zstd`` (lossless rows for plain image outputs).
    Tiles at the right and bottom edges are padded to full size, as TIFF tiles are."""

    compression: str
    tile: int
    quality: int = JPEG_QUALITY

    def __post_init__(self) -> None:
        if self.compression not in (*COMPRESSIONS, "zstd"):
            raise InputError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.compression == "jpeg" and not 1 <= self.quality <= 100:
            raise InputError(f"JPEG quality must be from 1 to 100, got {self.quality}")

    def encode(self, pixels: np.ndarray) -> bytes:
        import imagecodecs

        h, w = pixels.shape[:2]
        if (h, w) != (self.tile, self.tile):
            pixels = np.pad(pixels, ((0, self.tile - h), (0, self.tile - w), (0, 0)))
        pixels = np.ascontiguousarray(pixels)
        if self.compression == "jpeg":
            return imagecodecs.jpeg_encode(pixels, level=self.quality, colorspace="RGB", outcolorspace="YCBCR",
                                           subsampling=JPEG_SUBSAMPLING)
        if self.compression == "zlib":
            return imagecodecs.zlib_encode(pixels)
        if self.compression == "zstd":
            return imagecodecs.zstd_encode(pixels, level=STORE_ZSTD_LEVEL)
        return pixels.tobytes()

    def decode(self, data: bytes) -> np.ndarray:
        """A full ``tile`` x ``tile`` x 3 tile (crop edge tiles yourself)."""
        import imagecodecs

        if self.compression == "jpeg":
            return imagecodecs.jpeg_decode(data)
        raw = {"zlib": imagecodecs.zlib_decode, "zstd": imagecodecs.zstd_decode}.get(self.compression, bytes)(data)
        return np.frombuffer(raw, np.uint8).reshape(self.tile, self.tile, 3)

    def encode_row(self, pixels: np.ndarray, pool: Executor | None = None) -> list:
        """The row's tiles left to right, encoded (``pool``: as futures of that pool)."""
        parts = [pixels[:, x:x + self.tile] for x in range(0, pixels.shape[1], self.tile)]
        return [pool.submit(self.encode, part) for part in parts] if pool else [self.encode(part) for part in parts]

    def decode_row(self, tiles: list[bytes], height: int, width: int) -> np.ndarray:
        """The ``height`` x ``width`` row of pixels that ``tiles`` encode."""
        row = np.empty((height, width, 3), np.uint8)
        for index, data in enumerate(tiles):
            x = index * self.tile
            row[:, x:x + self.tile] = self.decode(data)[:height, :min(self.tile, width - x)]
        return row


class TileStore:
    """Finished rows of encoded tiles per pyramid level, one file per row, in a work folder.

    ``job`` describes the run (source, level, tiling, transform, codec); a folder left by a different
    job, or whose record of its job is damaged, is emptied rather than reused. A row file that fails its
    checksum counts as missing (and is removed), so a damaged store never blocks a resume; checking
    costs a resume one read of each stored row.
    """

    def __init__(self, folder: Path, job: dict) -> None:
        self.folder = Path(folder)
        self._levels: set[int] = set()  # levels whose folder this object made
        text = json.dumps(job, sort_keys=True, indent=1, default=str)
        meta = self.folder / _JOB_FILE
        try:
            if self.folder.is_dir() and not self._holds(meta, text):
                shutil.rmtree(self.folder)
            elif self.folder.exists() and not self.folder.is_dir():
                self.folder.unlink()
            self.folder.mkdir(parents=True, exist_ok=True)
            if not meta.is_file():  # not flushed to disk: a record a power cut damages empties the folder
                atomic_write_text(meta, text, durable=False)
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
        return self.folder / f"L{level}" / f"{row:06d}.tiles"

    @staticmethod
    def _unpack(data: bytes) -> list[bytes] | None:
        """The tiles of a row file, or None when it is cut short or fails its checksum."""
        body, tail = data[:-_CHECKSUM.size], data[-_CHECKSUM.size:]
        if len(data) < _COUNT.size + _CHECKSUM.size or _CHECKSUM.unpack(tail)[0] != _crc32(body):
            return None
        count = _COUNT.unpack_from(body)[0]
        lengths = struct.unpack_from(f"<{count}I", body, _COUNT.size)
        start = _COUNT.size * (1 + count)
        if start + sum(lengths) != len(body):
            return None
        tiles = []
        for length in lengths:
            tiles.append(body[start:start + length])
            start += length
        return tiles

    def _tiles(self, level: int, row: int) -> list[bytes] | None:
        try:
            return self._unpack(self._path(level, row).read_bytes())
        except (OSError, struct.error):
            return None

    def has(self, level: int, row: int) -> bool:
        """Whether the row is stored intact; a damaged row file is removed, to be computed again."""
        if self._tiles(level, row) is not None:
            return True
        self._path(level, row).unlink(missing_ok=True)
        return False

    def put(self, level: int, row: int, tiles: list[bytes]) -> None:
        """Store a row: written beside its place and renamed into it, not flushed to disk (the checksum
        finds what a power cut damages), the level's folder made once per store. The tiles are checked
        and written as they are, not joined first (on a 400 MPix slide joining, copying and zlib's CRC
        took 0.35 of its 5.3 CPU-seconds)."""
        parts = [_COUNT.pack(len(tiles)) + struct.pack(f"<{len(tiles)}I", *map(len, tiles)), *tiles]
        checksum = 0
        for part in parts:
            checksum = _crc32(part, checksum)
        path = self._path(level, row)
        if level not in self._levels:
            path.parent.mkdir(exist_ok=True)
            self._levels.add(level)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
        try:
            with open(tmp, "wb", buffering=0) as file:
                _write_all(file.fileno(), [*parts, _CHECKSUM.pack(checksum)])
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, level: int, row: int) -> list[bytes]:
        """The row's encoded tiles; :class:`InputError` naming the file when it is damaged (then
        removed, so the next run computes it again)."""
        tiles = self._tiles(level, row)
        if tiles is None:
            path = self._path(level, row)
            path.unlink(missing_ok=True)
            raise InputError(f"{path}: damaged work file (missing, cut short or failing its checksum); removed, "
                             f"run again to compute it anew")
        return tiles

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._levels.clear()


def _crc32(data, value: int = 0) -> int:
    """CRC-32 of ``data`` continuing ``value`` (zlib's), by libdeflate where imagecodecs has it (five
    times zlib's speed)."""
    import imagecodecs

    return imagecodecs.deflate_crc32(data, value) if imagecodecs.DEFLATE.available else zlib.crc32(data, value)


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write ``parts`` in order to the file descriptor ``fd`` by gathering writes (no joined copy; one
    write each where the system has no ``writev``)."""
    parts = [memoryview(part) for part in parts if len(part)]
    if not hasattr(os, "writev"):
        for part in parts:
            while part:
                part = part[os.write(fd, part):]
        return
    while parts:
        written = os.writev(fd, parts[:_IOV_MAX])
        while parts and written >= len(parts[0]):
            written -= len(parts.pop(0))
        if written:
            parts[0] = parts[0][written:]


def level_shapes(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """Level sizes, halving (rounded up) until the whole level fits in one tile."""
    shapes = [(height, width)]
    while max(shapes[-1]) > tile:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


@njit(cache=True, nogil=True)
def _halve(pixels, out):  # pragma: no cover - compiled
    """Each pair of rows summed first, as flat bytes (a loop the compiler vectorizes), then each pair of
    pixels of the sum, its three channels written out (a loop over them was not vectorized): twice as
    fast as the four bytes of each output byte added in turn (0.06 against 0.12 ms a 512 px tile)."""
    h, w = pixels.shape[0], pixels.shape[1]
    pairs = w // 2
    rows = np.empty(3 * w, np.uint16)
    for y in range(out.shape[0]):
        top, bottom = pixels[2 * y].reshape(-1), pixels[min(2 * y + 1, h - 1)].reshape(-1)
        for k in range(3 * w):
            rows[k] = np.uint16(top[k]) + np.uint16(bottom[k])
        row = out[y].reshape(-1)
        for x in range(pairs):
            row[3 * x] = (rows[6 * x] + rows[6 * x + 3] + 2) >> 2
            row[3 * x + 1] = (rows[6 * x + 1] + rows[6 * x + 4] + 2) >> 2
            row[3 * x + 2] = (rows[6 * x + 2] + rows[6 * x + 5] + 2) >> 2
        if w % 2:  # an odd last column is repeated
            for c in range(3):
                row[3 * pairs + c] = (2 * rows[3 * (w - 1) + c] + 2) >> 2


def halve(pixels: np.ndarray) -> np.ndarray:
    """2x2 mean (rounded half up) of a uint8 HxWx3 array; an odd last row/column is repeated."""
    h, w = pixels.shape[:2]
    out = np.empty(((h + 1) // 2, (w + 1) // 2, 3), np.uint8)
    _halve(np.ascontiguousarray(pixels), out)
    return out


def rows_of(shape: tuple[int, int], tile: int) -> int:
    """Tile rows of a level of ``shape``."""
    return -(-shape[0] // tile)


class RowWriter:
    """Puts finished rows of tiles in the store and, with ``lower_levels``, makes the levels below as
    the rows above them finish. A row of a level comes with its tiles (encoded, or futures of ``pool``
    encoding them) and with itself halved (:func:`halve`: its 512 rows of pixels are an even number, so
    halving row by row is halving the level, and the threads that made the tiles can halve them too);
    once the halves of a pair of rows are there, they are the next level's row, which is encoded in
    ``pool``, stored, halved and paired the same way, and so on down. Rows a run did not see are
    decoded from the store. :meth:`flush` waits for the encodings; :meth:`complete` also fills any row
    still missing (a slide whose rows other processes computed) from the store. With ``stream``, every
    row stored is also handed to that :class:`StreamedPyramid`."""

    def __init__(self, store: TileStore, shapes: list[tuple[int, int]], codec: TileCodec,
                 pool: Executor | None = None, lower_levels: bool = True,
                 stream: StreamedPyramid | None = None) -> None:
        self.store, self.shapes, self.codec, self.pool = store, shapes, codec, pool
        self.lower_levels, self.stream = lower_levels, stream
        self._waiting: dict[int, tuple[int, np.ndarray]] = {}  # level -> its even row's half, awaiting a pair
        self._encoding: list[tuple[int, int, list]] = []        # rows whose tiles may still be encoding
        self._stored: set[tuple[int, int]] = set()              # rows this writer stored

    def wants_halves(self, level: int = 0) -> bool:
        """Whether :meth:`put` needs the rows of ``level`` halved."""
        return self.lower_levels and level + 1 < len(self.shapes)

    def put(self, level: int, row: int, tiles: list, half: np.ndarray | None = None) -> None:
        """Store row ``row`` of ``level`` once its ``tiles`` (bytes or futures of bytes) are encoded;
        ``half``: the row halved, when :meth:`wants_halves`."""
        self._encoding.append((level, row, tiles))
        self._flush(wait=len(self._encoding) > _MAX_ENCODING_ROWS)
        if self.wants_halves(level):
            self._pair(level, row, half)

    def _pair(self, level: int, row: int, half: np.ndarray) -> None:
        if row % 2 == 0 and row + 1 < rows_of(self.shapes[level], self.codec.tile):
            self._waiting[level] = (row, half)
            return
        if row % 2:
            kept = self._waiting.pop(level, None)
            above = kept[1] if kept and kept[0] == row - 1 else halve(self.pixels(level, row - 1))
            half = np.concatenate([above, half])
        below = half  # the next level's row
        self.put(level + 1, row // 2, self.codec.encode_row(below, self.pool),
                 halve(below) if self.wants_halves(level + 1) else None)

    def _flush(self, wait: bool) -> None:
        """Store the rows whose tiles are encoded; with ``wait``, the oldest too, waiting for it."""
        pending = []
        for index, (level, row, tiles) in enumerate(self._encoding):
            if (wait and index == 0) or all(not isinstance(t, Future) or t.done() for t in tiles):
                self._store(level, row, [t.result() if isinstance(t, Future) else t for t in tiles])
            else:
                pending.append((level, row, tiles))
        self._encoding = pending

    def _store(self, level: int, row: int, tiles: list[bytes]) -> None:
        self.store.put(level, row, tiles)
        self._stored.add((level, row))
        if self.stream:
            self.stream.stored(level, row, tiles)

    def flush(self) -> None:
        while self._encoding:
            self._flush(wait=True)

    def pixels(self, level: int, row: int) -> np.ndarray:
        """A stored row of ``level``, decoded."""
        height = min(self.codec.tile, self.shapes[level][0] - row * self.codec.tile)
        return self.codec.decode_row(self.store.get(level, row), height, self.shapes[level][1])

    def complete(self) -> None:
        """Every row of every level stored."""
        self.flush()
        for level in range(1, len(self.shapes)):
            for row in range(rows_of(self.shapes[level], self.codec.tile)):
                if (level, row) not in self._stored and not self.store.has(level, row):
                    above = [self.pixels(level - 1, r) for r in (2 * row, 2 * row + 1)
                             if r < rows_of(self.shapes[level - 1], self.codec.tile)]
                    self._store(level, row, self.codec.encode_row(halve(np.concatenate(above))))


def _ome_metadata(mpp: float | None) -> dict:
    metadata = {"axes": "YXS", "SignificantBits": 8}
    if mpp:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    return metadata


def _level_tiles(rows: Rows, level: int, shape: tuple[int, int], tile: int, sync=None) -> Iterator[bytes]:
    """The encoded tiles of a level in file order; ``sync(nbytes)`` is told of each row's bytes."""
    for row in range(rows_of(shape, tile)):
        tiles = rows(level, row)
        yield from tiles
        if sync:
            sync(sum(map(len, tiles)))


class _Syncer:
    """Flushes a file being written to disk every :data:`_SYNC_BYTES` bytes, in a thread of its own, so
    that the flush before its atomic rename finds little left to write: the disk works while the tiles
    are still being computed, and the thread writing the file does not wait for it."""

    def __init__(self, path: Path) -> None:
        self.fd, self.pending = os.open(path, os.O_RDONLY), 0
        self._due, self._closing = threading.Event(), False
        self._thread = threading.Thread(target=self._flush, name="stainlab-sync", daemon=True)
        self._thread.start()

    def __call__(self, nbytes: int) -> None:
        self.pending += nbytes
        if self.pending >= _SYNC_BYTES:
            self.pending = 0
            self._due.set()

    def _flush(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._closing:
                return
            os.fdatasync(self.fd)

    def close(self) -> None:
        self._closing = True
        self._due.set()
        self._thread.join()
        os.close(self.fd)


def write_pyramid(path: Path, rows: Rows, shapes: list[tuple[int, int]], codec: TileCodec,
                  mpp: float | None, sync_as_written: bool = False) -> Path:
    """Write the encoded levels (``rows(level, row)``: a row's tiles, such as :meth:`TileStore.get`) as a
    tiled pyramidal OME-TIFF (BigTIFF) at ``path``, atomically, with the levels also in the main IFD
    chain (:func:`chain_levels`); ``sync_as_written`` flushes the file to disk as it grows (a file
    written while its tiles are computed)."""
    import tifffile

    if codec.compression not in COMPRESSIONS:
        raise InputError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {codec.compression!r}")
    if codec.tile % 16:
        raise InputError(f"a tiled TIFF needs a tile size that is a multiple of 16, got {codec.tile}")
    options = {"tile": (codec.tile, codec.tile), "photometric": "rgb", "dtype": np.uint8,
               "compression": None if codec.compression == "none" else codec.compression,
               "subsampling": JPEG_SUBSAMPLING if codec.compression == "jpeg" else None}
    with atomic_path(path) as tmp:
        sync = _Syncer(tmp) if sync_as_written else None
        try:
            with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
                for level, shape in enumerate(shapes):
                    scale = 2 ** level
                    resolution = ({"resolution": (1e4 / (mpp * scale),) * 2, "resolutionunit": "CENTIMETER"}
                                  if mpp else {})
                    extra = ({"subifds": len(shapes) - 1, "metadata": _ome_metadata(mpp)} if level == 0
                             else {"subfiletype": 1, "metadata": None})
                    tif.write(_level_tiles(rows, level, shape, codec.tile, sync), shape=(*shape, 3), **options,
                              **resolution, **extra)
            chain_levels(tmp)
        finally:
            if sync:
                sync.close()
    return path


class _Stopped(Exception):
    """The run feeding a :class:`StreamedPyramid` stopped before its last row."""


class StreamedPyramid:
    """The output written in a thread of its own while its rows are computed, for a run that computes
    every row of a slide: each level's tiles go into the file as soon as the rows before them are there
    (level 0 in the order the rows finish), and the file is flushed to disk as it grows, so that the end
    of the run leaves only the lower levels to write instead of the whole file (:func:`write_pyramid`
    from the store took about a second of a 400 MPix slide's eight, after every tile was done).

    :class:`RowWriter` hands each stored row over (:meth:`stored`); its tiles are taken from memory
    (up to :data:`_MAX_HANDED_ROWS` level-0 rows waiting and :data:`_HANDED_LOWER_BYTES` of the lower
    levels, which wait for the end of level 0; further rows are read back from the store). The store is
    still written, so a crashed run resumes as before.
    :meth:`finish` waits for the file and raises what writing it raised; :meth:`stop` abandons it (its
    temporary file is removed)."""

    def __init__(self, path: Path, store: TileStore, shapes: list[tuple[int, int]], codec: TileCodec,
                 mpp: float | None) -> None:
        self.store = store
        self._handed: dict[tuple[int, int], list | None] = {}
        self._lower_bytes = 0  # bytes of lower-level rows held (kept until the file is written)
        self._changed = threading.Condition()
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, args=(path, shapes, codec, mpp),
                                        name="stainlab-pyramid", daemon=True)
        self._thread.start()

    def stored(self, level: int, row: int, tiles: list[bytes]) -> None:
        """Row ``row`` of ``level`` is in the store, with these tiles."""
        size = sum(map(len, tiles))
        with self._changed:
            if level == 0:
                keep = sum(v is not None for (lv, _), v in self._handed.items() if lv == 0) < _MAX_HANDED_ROWS
            else:
                keep = self._lower_bytes + size <= _HANDED_LOWER_BYTES
                self._lower_bytes += size if keep else 0
            self._handed[(level, row)] = tiles if keep else None
            self._changed.notify_all()

    def _row(self, level: int, row: int) -> list[bytes]:
        with self._changed:
            while (level, row) not in self._handed:
                if self._stopped:
                    raise _Stopped
                self._changed.wait()
            tiles = self._handed.pop((level, row))
        return self.store.get(level, row) if tiles is None else tiles

    def _write(self, path, shapes, codec, mpp) -> None:
        try:
            write_pyramid(path, self._row, shapes, codec, mpp, sync_as_written=True)
        except _Stopped:
            pass
        except BaseException as err:  # handed to the caller by finish()
            self._error = err

    def finish(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join()


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
