"""Files that survive a power cut: written whole under a temporary name, then renamed.

A kiosk is switched off at the wall every evening.  Anything it writes (model
files, engines, caches) goes to a temporary file in the same folder, is
flushed to disk, and replaces the target in one rename; the folder entry is
flushed too.  After a cut the target holds the old or the new content, never
half of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Persist a folder's entries (renames); a no-op where the OS cannot do it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | Path, write: Callable[[Path], None], tmp_name: str) -> Path:
    """Call `write(tmp)` for a temporary file `tmp_name` beside `path`, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, tmp_prefix: str = ".tmp-") -> Path:
    """Write `data` so that `path` holds either the old or the new content."""
    path = Path(path)
    return write_atomically(
        path, lambda tmp: tmp.write_bytes(data), f"{tmp_prefix}{path.name}.{os.getpid()}"
    )
