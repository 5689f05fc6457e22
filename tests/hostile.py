"""Generators of hostile files for the fuzz tests and ``benchmarks/fuzz.py``: each returns the path of a
file that claims more than it holds, is cut short, or is degenerate, made in a few milliseconds."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, side: int = 100_000, depth: int = 8) -> Path:
    """A PNG whose header claims ``side x side`` RGB pixels of ``depth`` bits, with a tiny body."""
    header = struct.pack(">IIBBBBB", side, side, depth, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _png_chunk(b"IEND", b""))
    return path


def tiff_bomb(path: Path, side: int = 60_000) -> Path:
    """A 16x16 TIFF whose width and length tags are rewritten to ``side``."""
    import tifffile

    tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        tags = [tif.pages[0].tags[code] for code in (256, 257)]
        order = tif.byteorder
        spots = [(tag.valueoffset, "H" if int(tag.dtype) == 3 else "I") for tag in tags]
    data = bytearray(path.read_bytes())
    for offset, kind in spots:
        struct.pack_into(order + kind, data, offset, side)
    path.write_bytes(bytes(data))
    return path


def with_header(path: Path, model: Path, **changes) -> Path:
    """A copy of the stainlab model file ``model`` whose architecture header has ``changes`` applied
    (e.g. ``kwargs={...}``), tensors untouched: a header that lies about what the file holds."""
    import json

    data = model.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    info = json.loads(header["__metadata__"]["stainlab"])
    header["__metadata__"]["stainlab"] = json.dumps({**info, **changes})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data that follows
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size:])
    return path
