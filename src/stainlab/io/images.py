"""Reading and writing image files: anything a lab exports becomes uint8 HxWx3 RGB, or a clear error.

:func:`read_image` decodes PNG, JPEG and BMP with Pillow and TIFF with tifffile (first page, i.e. level 0
of a pyramid), forcing a full decode so a truncated file fails here and not halfway through a batch.
Every conversion it has to make (grey, 16-bit, float, alpha, palette, CMYK) is applied and reported as
a short note, so a command line can tell the user what happened to each file. Files are only opened
for reading.

:func:`write_image` writes RGB (never BGR: StainTools #6) atomically and refuses to replace an existing
file unless asked. :func:`list_images` expands files and folders into a sorted list of image paths.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stainlab.errors import InputError
from stainlab.io.arrays import check_rgb8
from stainlab.io.atomic import atomic_path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
WRITE_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}
JPEG_QUALITY = 95
# Decompression-bomb limit: a small file must not decode into more pixels than this (about 800 MB of RGB).
# Checked from the header before any decoding, for every decoder and bit depth. Real larger images are
# read tiled as slides (`stainlab slide`), or the limit is raised for a run with STAINLAB_MAX_PIXELS.
MAX_PIXELS = 1 << 28
MAX_PIXELS_VARIABLE = "STAINLAB_MAX_PIXELS"

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_BIT_DEPTH_OFFSET = 24  # signature (8) + IHDR length, type, width, height (16)
_TWELVE_BIT_MAX = 4095
_EXIF_ORIENTATION = 274  # the Orientation tag of EXIF and TIFF
_ORIENTATIONS = {1: "as stored", 2: "mirrored", 3: "rotated 180", 4: "flipped", 5: "transposed",
                 6: "rotated 90 clockwise", 7: "transversed", 8: "rotated 90 anticlockwise"}
_PILLOW_CONVERT = {"P": "palette", "PA": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "LAB",
                   "HSV": "HSV", "RGBX": "RGBX"}


# -- reading ------------------------------------------------------------------------------------------
def max_pixels() -> int:
    """The decompression-bomb limit in force: :data:`MAX_PIXELS`, or the environment's STAINLAB_MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_VARIABLE)
    if text is None:
        return MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a positive whole number of pixels")
    return value


def check_pixels(path, width: int, height: int, limit: int | None = None) -> None:
    """:class:`InputError` when a ``width x height`` image (from its header) is over the pixel limit."""
    limit = max_pixels() if limit is None else limit
    if width * height > limit:
        raise InputError(f"{path}: {width}x{height} is {width * height:,} pixels, over the limit of {limit:,} "
                         "for one image; read it tiled with `stainlab slide`, "
                         f"or raise the limit with {MAX_PIXELS_VARIABLE}=N if it is a real image")


def read_image(path) -> tuple[np.ndarray, list[str]]:
    """Read an image file as a uint8 ``HxWx3`` RGB array plus notes on the conversions applied.

    Raises :class:`InputError` naming the file for a missing, empty, non-image, truncated or corrupt
    file, for sample layouts that are not grey, grey + alpha, RGB or RGBA, and for an image whose header
    asks for more pixels than :func:`max_pixels` (checked before decoding). EXIF / TIFF orientation is
    applied, with a note.
    """
    path = Path(path)
    head = _check_file(path)
    notes: list[str] = []
    try:
        if head.startswith(_TIFF_MAGIC):
            samples = _read_tiff(path, notes)
        elif head.startswith(_PNG_MAGIC) and head[_PNG_BIT_DEPTH_OFFSET:_PNG_BIT_DEPTH_OFFSET + 1] == b"\x10":
            samples = _read_png16(path, head)
        else:
            samples = _read_pillow(path, notes)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (no known image format recognised)") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as err:
        raise InputError(f"{path}: truncated or corrupt image ({_reason(err)})") from None
    rgb = _to_rgb(_to_uint8(samples, notes, path), notes, path)
    return check_rgb8(rgb, str(path)), notes


def _check_file(path: Path) -> bytes:
    """The first bytes of ``path``; :class:`InputError` when it is missing, a folder or empty."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError as err:
        raise InputError(f"{path}: cannot open ({err.strerror or err})") from None
    if not head:
        raise InputError(f"{path}: empty file (0 bytes)")
    return head


def _reason(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _read_pillow(path: Path, notes: list[str]) -> np.ndarray:
    """Decode with Pillow (full decode, so truncation raises); palette/CMYK/... become RGB(A)."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit, from the header, replaces Pillow's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_pixels(path, *im.size)
                return _decode_pillow(im, notes)
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _decode_pillow(im: Image.Image, notes: list[str]) -> np.ndarray:
    im.load()
    orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation in _ORIENTATIONS and orientation != 1:
        notes.append(f"EXIF orientation {orientation} ({_ORIENTATIONS[orientation]}) applied")
        im = ImageOps.exif_transpose(im)
    if im.mode in _PILLOW_CONVERT:
        alpha = im.mode == "PA" or "transparency" in im.info
        notes.append(f"{_PILLOW_CONVERT[im.mode]} image, converted to RGB")
        im = im.convert("RGBA" if alpha else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    return np.asarray(im)


def _orient(samples: np.ndarray, orientation: int) -> np.ndarray:
    """Samples as displayed under a TIFF/EXIF orientation (2-8), as Pillow's ``exif_transpose`` does."""
    swapped = np.swapaxes(samples, 0, 1)
    return np.ascontiguousarray({2: samples[:, ::-1], 3: samples[::-1, ::-1], 4: samples[::-1],
                                 5: swapped, 6: np.rot90(samples, -1), 7: swapped[::-1, ::-1],
                                 8: np.rot90(samples, 1)}[orientation])


def _read_png16(path: Path, head: bytes) -> np.ndarray:
    """16-bit PNG samples (Pillow keeps only the high byte of 16-bit colour PNGs, without saying so)."""
    import imagecodecs

    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")  # IHDR
    check_pixels(path, width, height)
    try:
        return imagecodecs.png_decode(path.read_bytes())
    except imagecodecs.PngError as err:
        raise InputError(f"{path}: truncated or corrupt PNG ({err})") from None


def _read_tiff(path: Path, notes: list[str]) -> np.ndarray:
    """First page of a TIFF (level 0 of a pyramid) as ``HxW`` or ``HxWxS`` samples."""
    import tifffile

    with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        check_pixels(path, page.imagewidth, page.imagelength)
        photometric = tifffile.PHOTOMETRIC(page.photometric)
        samples = page.asarray()
        if page.axes.startswith("S"):  # planar configuration: samples first
            samples = np.moveaxis(samples, 0, -1)
        orientation = page.tags.valueof(_EXIF_ORIENTATION, 1)
        if orientation in _ORIENTATIONS and orientation != 1:
            notes.append(f"TIFF orientation {orientation} ({_ORIENTATIONS[orientation]}) applied")
            samples = _orient(samples, orientation)
        if photometric == tifffile.PHOTOMETRIC.SEPARATED:  # CMYK: Pillow converts it
            return _read_pillow(path, notes)
        if photometric == tifffile.PHOTOMETRIC.PALETTE:
            notes.append("palette image, converted to RGB")
            colors = np.moveaxis(page.colormap, 0, -1)
            samples = (colors >> 8 if colors.max() > 255 else colors).astype(np.uint8)[samples]  # 16-bit entries
        elif photometric == tifffile.PHOTOMETRIC.MINISWHITE and samples.dtype.kind in "ub":
            notes.append("inverted grey (min-is-white) image, inverted back")
            samples = ~samples
        elif photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB,
                                 tifffile.PHOTOMETRIC.YCBCR):
            raise InputError(f"{path}: unsupported TIFF colour space {photometric.name}")
        if len(tif.pages) > 1:
            notes.append(f"{len(tif.pages)} pages, read the first")
    return samples


@contextlib.contextmanager
def _quiet_tifffile():
    """tifffile logs what it finds odd in a file over several lines; a bad file is one error here."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _to_uint8(samples: np.ndarray, notes: list[str], path: Path) -> np.ndarray:
    """Scale 16-bit (x / 257, rounded), float in [0, 1] and boolean samples to uint8."""
    if samples.dtype == np.uint8:
        return samples
    if samples.dtype == bool:
        notes.append("1-bit image, scaled to 8-bit")
        return samples.astype(np.uint8) * 255
    if samples.dtype.kind in "ui" and samples.size and samples.min() >= 0 and samples.max() <= 0xFFFF:
        note = "16-bit, scaled to 8-bit"
        if samples.max() <= _TWELVE_BIT_MAX:
            note += f" (maximum value {samples.max()}: 12-bit or less data will look dark)"
        notes.append(note)
        return np.rint(samples / 257.0).astype(np.uint8)
    if samples.dtype.kind == "f":
        return _float_to_uint8(samples, notes, path)
    raise InputError(f"{path}: unsupported sample type {samples.dtype} "
                     "(expected 8- or 16-bit integers, or floats in [0, 1])")


def _float_to_uint8(samples: np.ndarray, notes: list[str], path: Path) -> np.ndarray:
    if not np.isfinite(samples).all():
        raise InputError(f"{path}: float image contains NaN or infinite values")
    lo, hi = float(samples.min()), float(samples.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{path}: float image with values from {lo:g} to {hi:g}; expected [0, 1]")
    notes.append("float image in [0, 1], scaled to 8-bit")
    return np.rint(samples * 255.0).astype(np.uint8)


def _to_rgb(samples: np.ndarray, notes: list[str], path: Path) -> np.ndarray:
    """Grey, grey + alpha, RGB or RGBA uint8 samples -> RGB (alpha dropped or composited on white)."""
    if samples.ndim == 2:
        samples = samples[..., None]
    channels = samples.shape[2] if samples.ndim == 3 else 0
    if channels not in (1, 2, 3, 4):
        raise InputError(f"{path}: unsupported image shape {samples.shape}; "
                         "expected grey, grey + alpha, RGB or RGBA")
    color, alpha = (samples, None) if channels in (1, 3) else (samples[..., :-1], samples[..., -1])
    if color.shape[2] == 1:
        notes.append("grayscale, replicated to RGB")
        color = np.repeat(color, 3, axis=2)
    if alpha is None:
        return color
    if (alpha == 255).all():
        notes.append("alpha channel fully opaque, dropped")
        return color
    notes.append(f"transparent pixels ({100 * np.mean(alpha < 255):.1f}%), composited on white")
    return composite_on_white(color, alpha)


def composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``c * a + 255 * (1 - a)`` per pixel, ``a = alpha / 255``, rounded to uint8."""
    a = alpha[..., None].astype(np.float64) / 255.0
    return np.rint(color * a + 255.0 * (1.0 - a)).astype(np.uint8)


# -- writing --------------------------------------------------------------------------------------------
def write_image(path, image, overwrite: bool = False) -> Path:
    """Write a uint8 ``HxWx3`` RGB image atomically; the format follows the suffix.

    ``.png`` (also used when there is no suffix), ``.tif``/``.tiff`` (zlib-compressed, lossless) or
    ``.jpg``/``.jpeg`` (quality 95, no chroma subsampling). Raises :class:`FileExistsError` when ``path``
    exists and ``overwrite`` is false. Returns the path written.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: cannot write {path.suffix!r} files; use .png, .tif/.tiff or .jpg/.jpeg")
    image = check_rgb8(image, str(path))
    with atomic_path(path, overwrite=overwrite) as tmp:
        if fmt == "TIFF":
            import tifffile

            tifffile.imwrite(tmp, image, photometric="rgb", compression="zlib")
        else:
            options = {"quality": JPEG_QUALITY, "subsampling": 0} if fmt == "JPEG" else {}
            Image.fromarray(image).save(tmp, format=fmt, **options)
    return path


# -- finding ----------------------------------------------------------------------------------------------
def list_images(sources, recursive: bool = False, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """Expand files and folders into a sorted, duplicate-free list of image files.

    Folders contribute their files with one of ``suffixes`` (any case; slides pass theirs), skipping
    hidden files such as unfinished atomic writes; ``recursive=True`` also searches sub-folders. Files
    named explicitly are kept whatever their suffix, so reading them reports what is wrong. A path that
    does not exist raises :class:`InputError`.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    found: set[Path] = set()
    for source in map(Path, sources):
        if source.is_dir():
            candidates = source.rglob("*") if recursive else source.iterdir()
            found.update(p for p in candidates if p.suffix.lower() in suffixes and not p.name.startswith(".")
                         and p.is_file())
        elif source.exists():
            found.add(source)
        else:
            raise InputError(f"{source}: no such file or folder")
    return sorted(found)
