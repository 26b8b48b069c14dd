"""On-disk cache of TensorRT engines, keyed so that a stale engine is never loaded.

A serialized engine is only valid for the exact weights, TensorRT version,
GPU model and compute capability (and CUDA version) it was built with (spec
§7).  Each entry therefore lives in a directory named after a digest of that
key, next to a `manifest.json` holding the key, the build settings, the
precision decisions and the size + sha256 of every engine file.

Layout::

    <root>/<voice>/<key digest>/manifest.json
    <root>/<voice>/<key digest>/<graph>.engine

Writes are atomic at the entry level: files go into a hidden temporary
directory, each is fsync'ed, the manifest is written last, and one rename
publishes the directory.  A power cut leaves either the old entry or the new
one, plus at worst a temporary directory that the next `store`/`cleanup`
removes.  `lookup` re-verifies everything and says why it rejects an entry,
so the build step can log "rebuilding because ...".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engines.durable_files import atomic_write_bytes as write_bytes_durably
from engines.durable_files import fsync_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_CHUNK = 1 << 20


# --------------------------------------------------------------------- hashing
def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed (engines and checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def combine_hashes(hashes: Iterable[str]) -> str:
    """One sha256 over several per-file hashes, in order (e.g. the export's `sources`)."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def hash_model_files(paths: Iterable[str | Path]) -> str:
    """One sha256 over several source files (GPT .ckpt + SoVITS .pth, or ONNX graphs).

    Only contents count, in the order given: renaming or moving a file does not
    invalidate engines, changing a single byte does.  Equals
    `combine_hashes` of the files' own sha256, as the ONNX export records them.
    """
    return combine_hashes(sha256_file(path) for path in paths)


# ------------------------------------------------------------------------- key
@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on."""

    model_hash: str
    trt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "8.6" (RTX 3060)
    cuda_version: str = ""

    def digest(self) -> str:
        """Short stable name for the entry directory."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def differences(self, other: EngineKey) -> list[str]:
        """Human-readable list of the components that differ from `other`."""
        return [
            f"{f.name} {getattr(other, f.name)!r} -> {getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineKey:
        names = {f.name for f in fields(cls)}
        return cls(**{k: str(v) for k, v in data.items() if k in names})


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
class CacheEntry:
    """A verified entry: where its engines are and what its manifest says."""

    directory: Path
    key: EngineKey
    manifest: dict[str, Any]

    def engine_path(self, graph: str) -> Path:
        return self.directory / self.manifest["engines"][graph]["file"]

    @property
    def graphs(self) -> list[str]:
        return list(self.manifest["engines"])

    @property
    def precision(self) -> dict[str, Any]:
        return dict(self.manifest.get("precision", {}))


@dataclass
class LookupResult:
    """`entry` when usable, otherwise None and the reason to rebuild."""

    entry: CacheEntry | None
    reason: str

    @property
    def hit(self) -> bool:
        return self.entry is not None


@dataclass
class EngineCache:
    """Engine entries under `root`, one directory per voice.

    `verify` is "sha256" (default: re-hash every engine at lookup; about a
    second per 300 MB on an Orin) or "size" (cheap: catches truncation only).
    `keep` is how many superseded entries per voice survive a cleanup, so a
    rollback to the previous TensorRT does not force a rebuild.
    """

    root: Path
    verify: str = "sha256"
    keep: int = 1
    _log: logging.Logger = field(default=log, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.verify not in ("sha256", "size"):
            raise ValueError(f"verify must be 'sha256' or 'size', got {self.verify!r}")

    def voice_dir(self, voice: str) -> Path:
        if not voice or "/" in voice or voice.startswith("."):
            raise ValueError(f"invalid voice name {voice!r}")
        return self.root / voice

    def entry_dir(self, voice: str, key: EngineKey) -> Path:
        return self.voice_dir(voice) / key.digest()

    # -------------------------------------------------------------------- read
    def lookup(self, voice: str, key: EngineKey) -> LookupResult:
        """The valid entry for `key`, or None with the reason it must be (re)built."""
        directory = self.entry_dir(voice, key)
        if not directory.is_dir():
            return LookupResult(None, self._why_missing(voice, key))
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
            stored_key = EngineKey.from_dict(manifest["key"])
            engines = manifest["engines"]
            if not isinstance(engines, dict) or not engines:
                raise ValueError("no engines listed")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return LookupResult(None, f"manifest unreadable ({exc.__class__.__name__}: {exc})")
        if stored_key != key:
            changes = ", ".join(key.differences(stored_key))
            return LookupResult(None, f"key changed: {changes}")
        for graph, info in engines.items():
            problem = self._check_file(directory, graph, info)
            if problem:
                return LookupResult(None, problem)
        return LookupResult(CacheEntry(directory, key, manifest), "engines valid")

    def _why_missing(self, voice: str, key: EngineKey) -> str:
        newest: EngineKey | None = None
        for manifest in sorted(
            self.voice_dir(voice).glob(f"*/{MANIFEST}"),
            key=lambda p: p.stat().st_mtime,
        ):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                newest = EngineKey.from_dict(json.loads(manifest.read_text())["key"])
        if newest is None:
            return "no engines built yet"
        return "key changed: " + ", ".join(key.differences(newest))

    def _check_file(self, directory: Path, graph: str, info: Mapping[str, Any]) -> str:
        try:
            path = directory / str(info["file"])
            size, checksum = int(info["size"]), str(info["sha256"])
        except (KeyError, TypeError, ValueError):
            return f"manifest unreadable (engine {graph!r} lacks file/size/sha256)"
        if path.parent != directory:
            return f"manifest unreadable (engine {graph!r} points outside its entry)"
        if not path.is_file():
            return f"engine {graph!r} missing ({path.name})"
        actual = path.stat().st_size
        if actual != size:
            return f"engine {graph!r} truncated or resized ({actual} of {size} bytes)"
        if self.verify == "sha256" and sha256_file(path) != checksum:
            return f"engine {graph!r} checksum mismatch"
        return ""

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
