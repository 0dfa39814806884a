"""Crash-safe file writes: the one way tufwaves replaces a file.

Used by the repository (published metadata, targets, tree files, bundles,
pending ceremonies) and by the device trust state alike.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_writer"]

PUBLIC_MODE = 0o644
"""Mode of published files (metadata, targets, bundles) before the umask."""

PRIVATE_MODE = 0o600
"""Mode of private files (keys, device trust state, pending ceremonies)."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = PUBLIC_MODE) -> Iterator[BinaryIO]:
    """Yield a file whose contents replace ``path`` when the block ends.

    The data goes to a temporary file in the same directory, which is fsynced,
    given ``mode`` (less the process umask) and renamed over ``path``; then
    the directory is fsynced. If the block raises, ``path`` is unchanged and
    the temporary file is removed. The parent directory must exist: a
    missing one is an error, never created silently.

    Args:
        path: the file to replace.
        mode: permission bits of the new file before the umask.

    Raises:
        OSError: the file could not be written.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, *, mode: int = PUBLIC_MODE) -> None:
    """Write ``data`` to ``path`` crash-safely; see :func:`atomic_writer`.

    Args:
        path: the file to replace.
        data: its new contents.
        mode: permission bits of the new file before the umask (0644 for
            published files, :data:`PRIVATE_MODE` for private ones).

    Raises:
        OSError: the file could not be written.
    """
    with atomic_writer(path, mode=mode) as f:
        f.write(data)
