"""TensorRT engine cache, read side: how a runtime finds and trusts a voice's engines.

A serialized engine is only valid for the exact weights, TensorRT version,
GPU model and compute capability (and CUDA version) it was built with (spec
§7).  Each entry therefore lives in a directory named after a digest of that
key, next to a `manifest.json` holding the key, the build settings, the
precision decisions, the voice (GPT config, versions) and the size + sha256
of every engine file::

    <root>/<voice>/<key digest>/manifest.json
    <root>/<voice>/<key digest>/<graph>.engine

`lookup` re-verifies everything and says why it rejects an entry.  Writing
entries (atomically) is the build step's job (`kiosk build-engines`, whose
cache class extends `EngineCacheReader`); this module is what the runtime
needs, so the runtime never imports the build step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20
#: What builds engines when none are valid for this voice and device.
BUILD_COMMAND = "kiosk build-engines EXPORT_DIR ENGINE_DIR --voice NAME --gpt X --sovits Y"


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
class EngineCacheReader:
    """Engine entries under `root`, one directory per voice: the runtime's read side.

    `verify` is "sha256" (default: re-hash every engine at lookup; about a
    second per 300 MB on an Orin) or "size" (cheap: catches truncation only).
    The build step's `EngineCache` adds storing and cleanup.
    """

    root: Path
    verify: str = "sha256"
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

    def model_hashes(self, voice: str, device: tuple[str, str, str, str]) -> list[str]:
        """Model hashes of the entries built for `device` (trt, gpu, capability, cuda),
        newest first."""
        found = []
        manifests = sorted(
            self.voice_dir(voice).glob(f"*/{MANIFEST}"),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for manifest in manifests:
            try:
                key = EngineKey.from_dict(json.loads(manifest.read_text())["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (key.trt_version, key.gpu_name, key.compute_capability, key.cuda_version) == device:
                found.append(key.model_hash)
        return found


# ------------------------------------------------------------------- device
@dataclass(frozen=True)
class GpuInfo:
    """The device an engine is built for (part of the cache key)."""

    name: str
    compute_capability: str
    cuda_version: str = ""


def detect_gpu_info() -> GpuInfo:
    """Read the GPU through torch (present wherever TensorRT runs in this project)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: TensorRT engines are built for and run on a GPU")
    major, minor = torch.cuda.get_device_capability(0)
    return GpuInfo(torch.cuda.get_device_name(0), f"{major}.{minor}", torch.version.cuda or "")


@dataclass
class ValidationOutcome:
    """What a validator says about the engines of one group."""

    passed: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
