"""Cached audio: the precached phrases in RAM within a budget, free-text results on disk.

A visitor's press must reach the speaker in milliseconds while a free-text
synthesis may be running, so a curated phrase is never synthesised on the
box: the build step wrote it once per voice version (`phrases/index.json`,
layout in appliance/README.md), and `PhraseCache` holds the samples at the
sound card's rate, ready to hand to the player.  Button phrases are taken
into RAM first, then the other phrases, then archival recordings, while they
fit `[cache] ram_mb`; the rest is read (and resampled) from disk when asked
for.  Each file's SHA-256 is checked against the index when a version is
added; a damaged or missing file is left out with a clear problem line (the
health page shows it) and the voice's other phrases keep working.

`FreeTextCache` keeps what visitors typed, keyed by `Voice.phrase_key` (the
voice version's identity, the normalised text and phones, every setting, the
backend), as 16-bit WAV files in one folder, least recently used deleted
first beyond `[cache] free_text_disk_mb`.  A full disk or a damaged file is
a logged miss, never an error for the visitor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from appliance.audio.resample import resample

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_FORMAT = "kiosk-phrases/1"
KINDS = ("synthetic", "archival")
PHRASES_DIR = "phrases"


class PhraseIndexError(ValueError):
    """A phrases/index.json that cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class CachedItem:
    """One entry of a version's phrases/index.json."""

    kind: str
    """"synthetic" (a curated phrase, made by the build step) or "archival" (a recording)."""

    id: str
    """The phrase id, or the archival file's stem."""

    path: Path
    """The audio file (absolute)."""

    sha256: str
    """Hex SHA-256 of the file, checked before it is played from RAM."""

    sample_rate: int
    """The file's sample rate."""

    seconds: float
    """Its length."""

    key: str
    """The synthesis key (`Voice.phrase_key`) of a synthetic phrase; empty for archival."""

    lufs: float | None = None
    """Integrated loudness after normalisation (for the health page)."""


@dataclass(frozen=True)
class PhraseIndex:
    """A version's phrases as the build step listed them."""

    voice: str
    version: int
    target_lufs: float | None
    items: tuple[CachedItem, ...]


def read_index(folder: Path) -> PhraseIndex:
    """The parsed `folder/index.json` (folder: a version's `phrases/`)."""
    path = folder / INDEX_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise PhraseIndexError(f"{path}: missing (the build step writes it)") from exc
    except (OSError, ValueError) as exc:
        raise PhraseIndexError(f"{path}: unreadable ({exc}); provision the voice again") from exc
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise PhraseIndexError(f"{path}: format {found!r}, expected {INDEX_FORMAT!r}")
    items = []
    try:
        for raw in data["items"]:
            kind = str(raw["kind"])
            if kind not in KINDS:
                raise PhraseIndexError(f"{path}: item kind {kind!r} is not one of {KINDS}")
            rel = Path(str(raw["file"]))
            if rel.is_absolute() or ".." in rel.parts:
                raise PhraseIndexError(f"{path}: file {rel} leaves the phrases folder")
            items.append(
                CachedItem(
                    kind=kind,
                    id=str(raw["id"]),
                    path=folder / rel,
                    sha256=str(raw["sha256"]).lower(),
                    sample_rate=int(raw["sample_rate"]),
                    seconds=float(raw["seconds"]),
                    key=str(raw.get("key") or ""),
                    lufs=float(raw["lufs"]) if raw.get("lufs") is not None else None,
                )
            )
        target = data.get("target_lufs")
        return PhraseIndex(
            voice=str(data["voice"]),
            version=int(data["version"]),
            target_lufs=float(target) if target is not None else None,
            items=tuple(items),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PhraseIndexError):
            raise
        raise PhraseIndexError(f"{path}: malformed entry ({exc!r})") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_audio(path: Path, rate: int) -> np.ndarray:
    """A file's samples as mono float32 at `rate` (resampled once, here, never in the
    audio callback)."""
    samples, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return resample(mono, int(file_rate), rate)


@dataclass
class _Version:
    voice: str
    version: int
    items: dict[tuple[str, str], CachedItem]
    problems: list[str] = field(default_factory=list)


class PhraseCache:
    """Every installed voice version's cached phrases, as float32 samples at `rate`."""

    def __init__(self, rate: int, ram_bytes: int) -> None:
        self.rate = rate
        self.ram_bytes = ram_bytes
        self._versions: dict[str, _Version] = {}
        self._ram: dict[tuple[str, str, str], np.ndarray] = {}
        self._lock = threading.Lock()
        self.disk_reads = 0

    # --- filling ----------------------------------------------------------------------

    def add_version(
        self, voice: str, version: int, folder: Path, *, first: Iterable[str] = ()
    ) -> list[str]:
        """Take a version's phrases (replacing the voice's previous version); returns the
        problems found (empty when all is well).  `first`: phrase ids to hold in RAM
        before the others (the ones on buttons)."""
        index = read_index(folder)
        if index.voice != voice or index.version != version:
            raise PhraseIndexError(
                f"{folder / INDEX_FILE}: lists {index.voice} v{index.version}, but the folder "
                f"holds {voice} v{version}; provision the voice again"
            )
        entry = _Version(voice, version, {})
        for item in index.items:
            try:
                found = _sha256(item.path)
            except OSError as exc:
                entry.problems.append(f"{voice} v{version}: {item.kind} {item.id}: {exc}")
                continue
            if found != item.sha256:
                entry.problems.append(
                    f"{voice} v{version}: {item.kind} {item.id}: {item.path.name} is damaged "
                    "(its SHA-256 differs from the index); provision the voice again"
                )
                continue
            entry.items[(item.kind, item.id)] = item
        for problem in entry.problems:
            log.error("phrase cache: %s", problem)
        with self._lock:
            self._versions[voice] = entry
            for key in [k for k in self._ram if k[0] == voice]:
                del self._ram[key]
        self._fill(voice, set(first))
        return entry.problems

    def _fill(self, voice: str, first: set[str]) -> None:
        """Load the voice's items into RAM in priority order while the budget allows."""
        entry = self._versions[voice]

        def priority(item: CachedItem) -> tuple[int, str]:
            if item.kind == "synthetic":
                return (0 if item.id in first else 1, item.id)
            return (2, item.id)

        for item in sorted(entry.items.values(), key=priority):
            size = int(item.seconds * self.rate * 4) + 4096
            if self.ram_used() + size > self.ram_bytes:
                log.info(
                    "phrase cache: %s %s %s stays on disk (RAM budget %.0f MB used)",
                    voice,
                    item.kind,
                    item.id,
                    self.ram_bytes / 1e6,
                )
                continue
            try:
                samples = read_audio(item.path, self.rate)
            except (OSError, RuntimeError, ValueError) as exc:
                entry.problems.append(f"{voice}: {item.kind} {item.id}: unreadable ({exc})")
                log.error("phrase cache: %s", entry.problems[-1])
                entry.items.pop((item.kind, item.id), None)
                continue
            samples.setflags(write=False)
            with self._lock:
                self._ram[(voice, item.kind, item.id)] = samples

    def remove(self, voice: str) -> None:
        with self._lock:
            self._versions.pop(voice, None)
            for key in [k for k in self._ram if k[0] == voice]:
                del self._ram[key]

    # --- reading ----------------------------------------------------------------------

    def item(self, voice: str, kind: str, item_id: str) -> CachedItem | None:
        entry = self._versions.get(voice)
        return entry.items.get((kind, item_id)) if entry else None

    def version(self, voice: str) -> int | None:
        entry = self._versions.get(voice)
        return entry.version if entry else None

    def samples(self, voice: str, kind: str, item_id: str) -> np.ndarray:
        """The item's samples at the cache's rate (from RAM, else read from disk now).

        Raises KeyError for an item the cache does not have, OSError / RuntimeError
        for a file that went bad since it was added."""
        held = self._ram.get((voice, kind, item_id))
        if held is not None:
            return held
        item = self.item(voice, kind, item_id)
        if item is None:
            raise KeyError(f"{voice}: no cached {kind} {item_id!r}")
        self.disk_reads += 1
        samples = read_audio(item.path, self.rate)
        if samples.size == 0:
            raise RuntimeError(f"{item.path}: no audio")
        return samples

    def in_ram(self, voice: str, kind: str, item_id: str) -> bool:
        return (voice, kind, item_id) in self._ram

    def ram_used(self) -> int:
        with self._lock:
            return sum(a.nbytes for a in self._ram.values())

    def problems(self) -> list[str]:
        return [p for entry in list(self._versions.values()) for p in entry.problems]

    def summary(self) -> dict[str, object]:
        with self._lock:
            items = sum(len(v.items) for v in self._versions.values())
            in_ram = len(self._ram)
        return {
            "items": items,
            "in_ram": in_ram,
            "ram_mb": round(self.ram_used() / 1e6, 2),
            "ram_budget_mb": round(self.ram_bytes / 1e6, 2),
            "disk_reads": self.disk_reads,
        }


class FreeTextCache:
    """Synthesised free text by cache key, as WAV files, least recently used dropped first."""

    SUFFIX = ".wav"

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.problem: str | None = None
        self._lock = threading.Lock()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".tmp-*"):
                stale.unlink(missing_ok=True)
        except OSError as exc:
            self.problem = f"free-text cache {folder}: {exc}"
            log.error("%s; free text is synthesised every time", self.problem)

    def _path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key {key!r} is not a hex digest")
        return self.folder / f"{key}{self.SUFFIX}"

    def get(self, key: str) -> tuple[np.ndarray, int] | None:
        """(samples, rate) of a cached result, or None (a damaged file is deleted)."""
        path = self._path(key)
        try:
            samples, rate = soundfile.read(str(path), dtype="float32")
        except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
            if path.exists():
                log.warning("free-text cache: %s is damaged (%s); deleted", path.name, exc)
                path.unlink(missing_ok=True)
            self.misses += 1
            return None
        if samples.ndim != 1 or samples.size == 0:
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        self.hits += 1
        return samples, int(rate)

    def put(self, key: str, samples: np.ndarray, rate: int) -> bool:
        """Store a result; False (logged) when the disk is full or the folder is gone."""
        path = self._path(key)
        tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}{self.SUFFIX}")
        try:
            soundfile.write(str(tmp), samples, rate, subtype="PCM_16")
            os.replace(tmp, path)
        except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.problem = f"free-text cache: cannot write ({exc})"
            log.warning("%s; the text plays, but is not kept", self.problem)
            return False
        self.problem = None
        self._evict()
        return True

    def _evict(self) -> None:
        with self._lock:
            try:
                files = [(p.stat(), p) for p in self.folder.glob(f"*{self.SUFFIX}")]
            except OSError:
                return
            total = sum(s.st_size for s, _ in files)
            for stat, path in sorted(files, key=lambda f: f[0].st_mtime_ns):
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= stat.st_size

    def size_bytes(self) -> int:
        try:
            return sum(p.stat().st_size for p in self.folder.glob(f"*{self.SUFFIX}"))
        except OSError:
            return 0
