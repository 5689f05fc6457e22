"""Atomic writes: a crash or a full disk never leaves a half-written output behind.

Data goes to a temporary file in the destination's folder, is flushed to disk, then renamed over the
destination in one step (``os.replace``), so readers see either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = True, durable: bool = True):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed.

    With ``overwrite=False`` an existing ``path`` raises :class:`FileExistsError` before anything is
    written. ``durable=False`` skips flushing to disk before the rename, for files that check
    themselves (a checksum) and are simply made again when a power cut leaves them damaged.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files (and some writers replace the file)
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str, overwrite: bool = True, durable: bool = True) -> None:
    """Write a text file atomically (``durable``: see :func:`atomic_path`)."""
    with atomic_path(path, overwrite, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a hidden folder beside ``path``; on success it replaces ``path`` in one rename, on error it
    is removed, so a crash never leaves a half-written folder of outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    folder.chmod(0o777 & ~_umask())  # mkdtemp makes 0700 folders; outputs get the usual permissions
    try:
        yield folder
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(folder, path)
            shutil.rmtree(old)
        else:
            os.replace(folder, path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
