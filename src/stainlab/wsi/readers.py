"""Whole-slide readers: one face over ordinary images, tiled/pyramidal TIFF and vendor slide formats.

Paper 000 (Sec. IV, Fig. 3 right) cuts a 3120x3168 image into 512x512 patches because a network cannot
take it whole; a whole slide is tens of thousands of pixels a side, so it is never read whole either.
:func:`open_slide` returns a :class:`Slide` that lists its pyramid levels (size, downsample, microns per
pixel) and decodes any rectangle of any level on demand:

* ordinary images (PNG, JPEG, BMP) are decoded once by :func:`stainlab.io.images.read_image` (one level);
* TIFF, OME-TIFF, BigTIFF and TIFF-based vendor files (Aperio .svs, Hamamatsu .ndpi, ...) are read with
  tifffile segment by segment (tiles or strips): memory follows the rectangle asked for, not the slide;
* other vendor formats (.mrxs, .vms, .scn, ...) go through OpenSlide, the optional extra
  ``stainlab[slides]`` (openslide-python + openslide-bin); without it the error names the extra.

Microns per pixel come from OME ``PhysicalSizeX``, Aperio's ``MPP =`` or the TIFF resolution tags (in
centimetres, or inches when the value is a microscope's, under :data:`MAX_PLAUSIBLE_MPP`).

What tifffile logs while parsing a damaged file (a bad tag, a series it could not make) becomes the
slide's notes instead of lines on standard error: a slide that fails is then one line, from whichever
process opened it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import xml.etree.ElementTree as ElementTree
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stainlab.errors import InputError
from stainlab.io.images import composite_on_white, read_image

SLIDES_EXTRA = "pip install 'stainlab[slides]'"
OPENSLIDE_SUFFIXES = frozenset({".svs", ".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide", ".tiff",
                                ".tif", ".dcm"})
OPENSLIDE_ONLY_SUFFIXES = frozenset({".mrxs", ".vms", ".vmu", ".dcm"})  # not TIFF files: OpenSlide or nothing
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
MAX_PLAUSIBLE_MPP = 50.0    # microns per pixel: a resolution tag above this is a screen's dpi, not a scanner's
MICRONS_PER_UNIT = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: 2 = inch, 3 = centimetre
BACKGROUND_FILL = 255       # empty TIFF segments are glass
SEGMENT_CACHE_BYTES = 64 << 20  # decoded segments kept for reuse (RecentSegments)
_DECODE_STRIPES = 64            # locks a segment's decoding takes, by its key (RecentSegments.fetch)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _read_only(pixels: np.ndarray) -> np.ndarray:
    """A read-only view of ``pixels``: what a shared read hands out without a copy."""
    view = pixels.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels, its downsample from level 0 and microns per pixel."""

    height: int
    width: int
    downsample: float
    mpp: float | None


class Slide(ABC):
    """A slide opened for reading; use as a context manager or call :meth:`close`."""

    def __init__(self, path: Path, levels: list[Level], kind: str, notes: list[str] | None = None) -> None:
        self.path = path
        self.levels = levels
        self.kind = kind
        self.notes = notes or []  # conversions applied while reading (grey, 16-bit, alpha...)
        self._held: dict[tuple[int, int, int, int, int], np.ndarray] = {}

    def hold(self, level: int, y: int, x: int, pixels: np.ndarray) -> None:
        """Keep ``pixels``, read from ``level`` at (``y``, ``x``), for the next shared :meth:`read` of that
        very rectangle, which takes them instead of reading again (tiles sampled for a slide's statistics
        are its first tiles to be mapped; a held rectangle is given out once, then forgotten)."""
        self._held[(level, y, x, *pixels.shape[:2])] = pixels

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""

    @property
    def mpp(self) -> float | None:
        """Microns per pixel of level 0 (None when the file does not say)."""
        return self.levels[0].mpp

    def describe_levels(self) -> str:
        return ", ".join(f"{i}: {lv.width}x{lv.height}" + (f" at {lv.mpp:.3g} um/px" if lv.mpp else "")
                         for i, lv in enumerate(self.levels))

    def level_for(self, level: int | None = None, mpp: float | None = None) -> int:
        """The level asked for by number, or the level whose microns per pixel is nearest ``mpp``
        (on a log scale); level 0 when neither is given."""
        if level is not None and mpp is not None:
            raise InputError("give a level or a target mpp, not both")
        if mpp is not None:
            return self._level_near(mpp)
        level = 0 if level is None else level
        if not 0 <= level < len(self.levels):
            raise InputError(f"{self.path}: level {level} does not exist; levels are {self.describe_levels()}")
        return level

    def _level_near(self, mpp: float) -> int:
        if not mpp > 0:
            raise InputError(f"target mpp must be positive, got {mpp}")
        if self.mpp is None:
            raise InputError(f"{self.path}: the file gives no microns per pixel; choose a level with --level")
        return int(np.argmin([abs(math.log(lv.mpp / mpp)) for lv in self.levels]))

    def read(self, level: int, y: int, x: int, height: int, width: int, shared: bool = False) -> np.ndarray:
        """The ``height x width`` rectangle at (``y``, ``x``) of ``level`` as uint8 RGB. ``shared``: the
        caller only reads it, so a rectangle that is exactly one stored segment may come back as that
        decoded segment itself, read-only, without a copy (a slide's tiles of the file's tile size), or
        as the pixels :meth:`hold` keeps for it."""
        lv = self.levels[level]
        if y < 0 or x < 0 or height < 1 or width < 1 or y + height > lv.height or x + width > lv.width:
            raise InputError(f"{self.path}: region {width}x{height} at ({x}, {y}) is outside level {level} "
                             f"({lv.width}x{lv.height})")
        held = self._held.pop((level, y, x, height, width), None) if shared and self._held else None
        return self._read(level, y, x, height, width, shared) if held is None else _read_only(held)

    @abstractmethod
    def _read(self, level: int, y: int, x: int, height: int, width: int, shared: bool = False) -> np.ndarray:
        """Decode a rectangle already checked to lie inside the level."""


class ImageSlide(Slide):
    """An ordinary image file, decoded once into memory: a one-level slide."""

    def __init__(self, path: Path) -> None:
        self._image, notes = read_image(path)
        height, width = self._image.shape[:2]
        super().__init__(path, [Level(height, width, 1.0, None)], "image", notes)

    def _read(self, level, y, x, height, width, shared=False):
        return self._image[y:y + height, x:x + width].copy()


class RecentSegments:
    """The segments decoded last, up to ``budget`` bytes, shared by the threads that read one slide.
    Tiles of the output rarely line up with the file's segments (an Aperio file's are 240 pixels): a
    segment under the border of two output tiles is then decoded once, not once per tile, and the tiles
    sampled for the whole-slide statistics are not decoded again when their turn comes."""

    def __init__(self, budget: int = SEGMENT_CACHE_BYTES) -> None:
        self.budget, self.size = budget, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_DECODE_STRIPES)]

    def fetch(self, key, decode):
        """The value under ``key``, made by ``decode()`` when missing: once, even when several threads
        ask at once (neighbouring output tiles share the segments under their border; on the CMU-1
        region two threads decoded the same segment 6-11 times in 130). A missing value is made under
        the lock of the key's stripe (one of :data:`_DECODE_STRIPES`), so a thread asking for it
        meanwhile waits and then finds it kept; a failure is not kept, and the next ask makes it anew.
        (A future a decode, which every waiter could read, cost the GIL a fifth of the sampling's
        held time on CMU-1.)"""
        value = self._kept(key)
        if value is not None:
            return value
        with self._stripes[hash(key) % _DECODE_STRIPES]:
            value = self._kept(key)
            return self.put(key, decode()) if value is None else value

    def _kept(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        """Keep ``value`` (a decoded segment and its corner; None, an empty segment, is not kept) under ``key``,
        dropping the oldest beyond the budget; returns it."""
        if value is None:
            return None
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self.size += value[0].nbytes
            while self.size > self.budget and len(self._items) > 1:
                self.size -= self._items.popitem(last=False)[1][0].nbytes
        return value


class TiffSlide(Slide):
    """A TIFF read segment by segment with tifffile: only the tiles (or strips) under a rectangle are
    decoded. Levels are the pyramid of the first image series (OME sub-IFDs, SVS or NDPI levels)."""

    def __init__(self, path: Path) -> None:
        import tifffile

        notes: list[str] = []
        try:
            with _logged_as_notes("tifffile", notes):
                self._tif = tifffile.TiffFile(path)
                series = self._tif.series[0]
                self._pages = [lv.keyframe for lv in series.levels]
                mpp = self._level0_mpp()
        except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError) as err:
            raise InputError(f"{path}: truncated or corrupt TIFF slide ({type(err).__name__}: {err})") from None
        for page in self._pages:
            self._check_layout(path, page)
            # tifffile makes a page's decoder on first use and, for JPEG, peeks at the first segment then
            # without the file's lock: made in several threads at once, it moved the file position under
            # another thread's read ("truncated or corrupt slide data ... Not a JPEG file", now and then);
            # made here, once (what tifffile's TiffPage.init_decode does, in every version)
            page.decode  # noqa: B018
        width0 = self._pages[0].imagewidth
        levels = [Level(p.imagelength, p.imagewidth, width0 / p.imagewidth,
                        mpp * width0 / p.imagewidth if mpp else None) for p in self._pages]
        super().__init__(path, levels, "svs" if self._tif.is_svs else "ome-tiff" if self._tif.is_ome else "tiff",
                         notes)
        self._recent = RecentSegments()
        self._tif.filehandle.set_lock(True)  # segments are read from several threads (off by default)

    @staticmethod
    def _check_layout(path: Path, page) -> None:
        samples = page.samplesperpixel - len(page.extrasamples)
        if page.dtype != np.uint8 or samples not in (1, 3) or page.planarconfig != 1 or page.imagedepth != 1:
            raise InputError(f"{path}: unsupported slide layout ({page.dtype}, {page.samplesperpixel} samples, "
                             f"planar configuration {page.planarconfig}); slides must be 8-bit grey or RGB")
        seg_h, seg_w = TiffSlide._segment(page)
        expected = -(-page.imagelength // max(seg_h, 1)) * -(-page.imagewidth // max(seg_w, 1))
        if seg_h < 1 or seg_w < 1 or len(page.dataoffsets) != expected or len(page.databytecounts) != expected:
            raise InputError(f"{path}: truncated or corrupt TIFF slide ({page.imagewidth}x{page.imagelength} in "
                             f"{seg_w}x{seg_h} segments needs {expected}, the file lists {len(page.dataoffsets)})")

    @staticmethod
    def _segment(page) -> tuple[int, int]:
        """Height and width of the page's tiles, or of its strips."""
        if page.is_tiled:
            return page.tilelength, page.tilewidth
        return page.rowsperstrip, page.imagewidth

    def close(self) -> None:
        self._tif.close()

    def _level0_mpp(self) -> float | None:
        tif, page = self._tif, self._pages[0]
        if tif.is_ome:
            mpp = _ome_mpp(tif.ome_metadata)
            if mpp:
                return mpp
        if tif.is_svs:
            mpp = _svs_mpp(tif.pages[0].description)
            if mpp:
                return mpp
        return _tag_mpp(page)

    def _read(self, level, y, x, height, width, shared=False):
        page = self._pages[level]
        seg_h, seg_w = self._segment(page)
        across = -(-page.imagewidth // seg_w)
        out = np.empty((height, width, page.samplesperpixel), np.uint8)
        for row in range(y // seg_h, (y + height - 1) // seg_h + 1):
            for col in range(x // seg_w, (x + width - 1) // seg_w + 1):
                index = row * across + col
                found = self._recent.fetch((level, index), lambda: self._decode(page, index))
                if found is None:  # an empty segment is glass
                    self._paste(None, row * seg_h, col * seg_w, seg_h, seg_w, out, y, x)
                    continue
                seg, top, left = found
                if shared and (top, left, *seg.shape) == (y, x, height, width, 3):  # the segment itself
                    return _read_only(seg)
                self._paste(seg, top, left, seg.shape[0], seg.shape[1], out, y, x)
        return self._to_rgb(out)

    def _decode(self, page, index: int) -> tuple[np.ndarray, int, int] | None:
        """Segment ``index`` of ``page`` decoded, with the row and column of its corner (None: an empty
        segment)."""
        fh = self._tif.filehandle
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if not count:
            return None
        with fh.lock:
            fh.seek(offset)
            data = fh.read(count)
        try:
            if len(data) < count:
                raise EOFError(f"segment {index} ends after {len(data)} of {count} bytes")
            segment, where, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as err:  # any decoder error: report the slide and the segment
            raise InputError(f"{self.path}: truncated or corrupt slide data in segment {index} "
                             f"({type(err).__name__}: {err})") from None
        return None if segment is None else (segment[0], where[2], where[3])

    @staticmethod
    def _paste(seg: np.ndarray | None, top: int, left: int, seg_height: int, seg_width: int, out: np.ndarray,
               y: int, x: int) -> None:
        """Copy the part of a decoded segment (None: glass) whose corner is at (``top``, ``left``) that
        falls in ``out``, whose corner is at (``y``, ``x``) (plain numbers: boxes made for each segment
        held the GIL a tenth of a slide's sampling)."""
        y0, y1 = max(top, y), min(top + seg_height, y + out.shape[0])
        x0, x1 = max(left, x), min(left + seg_width, x + out.shape[1])
        if y0 < y1 and x0 < x1:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = (BACKGROUND_FILL if seg is None
                                                 else seg[y0 - top:y1 - top, x0 - left:x1 - left])

    @staticmethod
    def _to_rgb(samples: np.ndarray) -> np.ndarray:
        if samples.shape[2] == 1:
            return np.repeat(samples, 3, axis=2)
        if samples.shape[2] == 4:
            return composite_on_white(samples[..., :3], samples[..., 3])
        return samples


class OpenSlideSlide(Slide):
    """A vendor slide through OpenSlide (the ``stainlab[slides]`` extra)."""

    def __init__(self, path: Path) -> None:
        openslide = _import_openslide(path)
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as err:
            raise InputError(f"{path}: truncated or corrupt slide (OpenSlide: {err})") from None
        mpp = self._slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
        mpp = float(mpp) if mpp else None
        levels = [Level(h, w, float(ds), mpp * float(ds) if mpp else None)
                  for (w, h), ds in zip(self._slide.level_dimensions, self._slide.level_downsamples)]
        super().__init__(path, levels, f"openslide ({self._slide.properties.get('openslide.vendor', '?')})")

    def close(self) -> None:
        self._slide.close()

    def _read(self, level, y, x, height, width, shared=False):
        ds = self.levels[level].downsample
        rgba = np.asarray(self._slide.read_region((round(x * ds), round(y * ds)), level, (width, height)))
        return composite_on_white(rgba[..., :3], rgba[..., 3])


@contextlib.contextmanager
def _logged_as_notes(name: str, notes: list[str]):
    """Collect the warnings the logger ``name`` emits meanwhile into ``notes`` (each once) instead of
    printing them."""
    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = f"{name}: {record.getMessage()}"
            if message not in notes:
                notes.append(message)

    logger, handler = logging.getLogger(name), Collect(logging.WARNING)
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _import_openslide(path: Path):
    try:
        import openslide
    except (ImportError, OSError) as err:  # OSError: the package is there but the OpenSlide library is not
        raise InputError(f"{path}: reading {path.suffix} slides needs OpenSlide ({err}); install the extra: "
                         f"{SLIDES_EXTRA}") from None
    return openslide


def _ome_mpp(xml: str | None) -> float | None:
    """PhysicalSizeX of the first OME Pixels element, in microns."""
    if not xml:
        return None
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels") and element.get("PhysicalSizeX"):
            unit = element.get("PhysicalSizeXUnit", "µm")
            scale = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}.get(unit)
            return float(element.get("PhysicalSizeX")) * scale if scale else None
    return None


def _svs_mpp(description: str) -> float | None:
    """Aperio's ``MPP = 0.499`` among the ``|``-separated fields of the ImageDescription."""
    for field in description.split("|"):
        key, _, value = field.partition("=")
        if key.strip() == "MPP":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _tag_mpp(page) -> float | None:
    """Microns per pixel from XResolution/ResolutionUnit, when plausible for a microscope."""
    tag, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if tag is None or unit is None or int(unit.value) not in MICRONS_PER_UNIT:
        return None
    numerator, denominator = tag.value
    if not numerator or not denominator:
        return None
    mpp = MICRONS_PER_UNIT[int(unit.value)] * denominator / numerator
    return mpp if mpp < MAX_PLAUSIBLE_MPP else None


def open_slide(path) -> Slide:
    """Open a slide or image for region reading; :class:`InputError` names what is wrong and, for vendor
    formats that need OpenSlide when it is missing, the extra to install."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a slide")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise InputError(f"{path}: empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_ONLY_SUFFIXES:
        return OpenSlideSlide(path)
    if head.startswith(_TIFF_MAGIC):
        return TiffSlide(path)
    if suffix in IMAGE_SUFFIXES:
        return ImageSlide(path)
    if suffix in OPENSLIDE_SUFFIXES:
        return OpenSlideSlide(path)
    try:
        return ImageSlide(path)
    except InputError as err:
        raise InputError(f"{err}; unsupported slide format: stainlab reads images and TIFF slides itself, "
                         f"other vendor formats through OpenSlide ({SLIDES_EXTRA})") from None
