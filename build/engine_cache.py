"""On-disk cache of TensorRT engines, write side: atomic publication and cleanup.

The key, the layout, the manifest and the verifying `lookup` are the runtime's
(`engines.backends.tensorrt_engines`, re-exported here); this module adds what
only the build step does.  Writes are atomic at the entry level: files go into
a hidden temporary directory, each is fsync'ed, the manifest is written last,
and one rename publishes the directory.  A power cut leaves either the old
entry or the new one, plus at worst a temporary directory that the next
`store`/`cleanup` removes.  `lookup` says why it rejects an entry, so the build
step can log "rebuilding because ...".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engines.backends.tensorrt_engines import (
    FORMAT_VERSION,
    MANIFEST,
    CacheEntry,
    EngineCacheReader,
    EngineKey,
    LookupResult,
    combine_hashes,
    hash_model_files,
    sha256_file,
)
from engines.durable_files import atomic_write_bytes as write_bytes_durably
from engines.durable_files import fsync_dir

__all__ = [
    "MANIFEST",
    "CacheEntry",
    "EngineCache",
    "EngineKey",
    "LookupResult",
    "atomic_write_bytes",
    "combine_hashes",
    "hash_model_files",
    "sha256_file",
]

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_CHUNK = 1 << 20


# ----------------------------------------------------------------- durable I/O
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` so that `path` holds either the old or the new content, never half."""
    write_bytes_durably(path, data, _TMP_PREFIX)


def _copy_durably(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
        dst.flush()
        os.fsync(dst.fileno())


def _write_durably(target: Path, data: bytes) -> None:
    with open(target, "wb") as dst:
        dst.write(data)
        dst.flush()
        os.fsync(dst.fileno())


# ----------------------------------------------------------------------- cache
@dataclass
class EngineCache(EngineCacheReader):
    """The engine cache with storing and cleanup (the build step's side).

    `keep` is how many superseded entries per voice survive a cleanup, so a
    rollback to the previous TensorRT does not force a rebuild.
    """

    keep: int = 1

    # ------------------------------------------------------------------- write
    def store(
        self,
        voice: str,
        key: EngineKey,
        engines: Mapping[str, bytes | str | Path],
        *,
        settings: Mapping[str, Any] | None = None,
        precision: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CacheEntry:
        """Publish engines (bytes or paths of built files) as the entry for `key`.

        Replaces an existing entry for the same key; cleans up afterwards.
        """
        if not engines:
            raise ValueError("store() needs at least one engine")
        voice_dir = self.voice_dir(voice)
        voice_dir.mkdir(parents=True, exist_ok=True)
        final = self.entry_dir(voice, key)
        tmp = voice_dir / f"{_TMP_PREFIX}{final.name}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            listed: dict[str, dict[str, Any]] = {}
            for graph, source in engines.items():
                name = f"{graph}.engine"
                if "/" in graph or graph.startswith("."):
                    raise ValueError(f"invalid graph name {graph!r}")
                target = tmp / name
                if isinstance(source, bytes | bytearray | memoryview):
                    _write_durably(target, bytes(source))
                else:
                    _copy_durably(Path(source), target)
                listed[graph] = {
                    "file": name,
                    "size": target.stat().st_size,
                    "sha256": sha256_file(target),
                }
            manifest = {
                "format": FORMAT_VERSION,
                "key": asdict(key),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "settings": dict(settings or {}),
                "precision": dict(precision or {}),
                "engines": listed,
                **dict(extra or {}),
            }
            _write_durably(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
            fsync_dir(tmp)
            if final.exists():
                old = voice_dir / f"{_OLD_PREFIX}{final.name}-{time.monotonic_ns()}"
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
            fsync_dir(voice_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._log.info("stored engines for %s under %s", voice, final)
        self.cleanup(voice, current=key)
        return CacheEntry(final, key, manifest)

    def cleanup(self, voice: str, current: EngineKey | None = None) -> list[Path]:
        """Remove temporary leftovers and all but the newest `keep` superseded entries."""
        voice_dir = self.voice_dir(voice)
        if not voice_dir.is_dir():
            return []
        removed: list[Path] = []
        entries: list[Path] = []
        for child in voice_dir.iterdir():
            if child.name.startswith((_TMP_PREFIX, _OLD_PREFIX)):
                removed.append(child)
            elif child.is_dir() and (current is None or child.name != current.digest()):
                entries.append(child)
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        removed.extend(entries[self.keep :])
        for path in removed:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._log.info("removed old engine cache item %s", path)
        return removed
