"""Precache: every listed phrase of a voice version, synthesised once, levelled and marked.

A visitor's button press should play at once and sound the same every time,
so the build step synthesises each curated phrase when a voice is installed
(`kiosk provision`, into the staging folder before activation) or rebuilt
(`kiosk build ID`), and the daemon only plays files.  Each file is:

* loudness-normalised to one target (`kiosk_build.loudness`: BS.1770, default
  -18 LUFS, true peak at or under -1 dBTP), archival recordings the same way;
* stored losslessly as FLAC (24-bit) with Vorbis comments a person can read:
  voice id and version, phrase id and text, settings, and the tag
  "AI-generated" or "original recording";
* marked with a signed C2PA manifest (`kiosk_build.provenance`).

The folder, `<version>/phrases/`, is laid out as appliance/README.md
("Cached phrases") specifies: `index.json` plus `synthetic/` and `archival/`.
File names carry the first 12 hex digits of the item's key, so a rebuilt item
never overwrites a file the index still lists.

Crash safety and idempotency: the index is the record of what is done.  Every
file is written under a temporary name, fsynced and renamed; the index is
rewritten atomically (`engines.durable_files`) after each item, and lists only
files that are whole and whose SHA-256 it holds.  A run first drops what the
index lists but no longer matches (a changed key, a missing or damaged file),
then deletes leftovers (temporary files, files no index entry names), then
makes only what is missing.  So a killed run loses at most the item it was
making, and a run over an unchanged voice writes nothing at all (and never
loads the voice).

The key of an item is a SHA-256 over the voice pack's manifest hash (which
covers the model files, the prompt, the phrase list and the phrases' BERT
features), the phrase's text and language, the settings it is spoken with,
the loudness target and ceiling, and `PRECACHE_VERSION` (bump it when this
module's output changes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from engines.durable_files import atomic_write_bytes, fsync_dir
from engines.voice import Voice

from .loudness import Loudness, measure, normalise
from .provenance import ORIGINAL, SYNTHETIC, BoxSigner, Mark

log = logging.getLogger(__name__)

#: Bump when the files this module writes change for the same inputs (forces a rebuild).
PRECACHE_VERSION = 1
INDEX_FILE = "index.json"
INDEX_FORMAT = "kiosk-phrases/1"
PHRASES_DIR = "phrases"
KIND_DIRS = {"synthetic": "synthetic", "archival": "archival"}
DEFAULT_TARGET_LUFS = -18.0
DEFAULT_TRUE_PEAK_DBTP = -1.0
#: 24-bit FLAC: lossless for the float samples' audible range, half the size of float WAV.
SUBTYPE = "PCM_24"
TMP_PREFIX = ".tmp-"


class PrecacheError(ValueError):
    """A phrase that cannot be cached (the message says which and what to do)."""


@dataclass(frozen=True)
class PhraseJob:
    """One curated phrase to synthesise."""

    id: str
    """The phrase id (manifest)."""
    text: str
    """What the voice says."""
    language: str
    """Language mode (zh, en, auto)."""
    cut: str
    """Segmentation method (the voice's)."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """The phrase's own settings (speed, seed) over the voice's defaults."""
    features: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
    """The pack's BERT features per segment, (phone ids, [1024, phones]); None: the box's BERT."""


@dataclass(frozen=True)
class ArchivalJob:
    """One original recording to level and mark."""

    id: str
    """The file's stem."""
    title: str
    """The curator's title."""
    source: Path
    """The verified copy in the pack (WAV or FLAC)."""
    sha256: str
    """Its SHA-256 (the manifest's)."""


@dataclass(frozen=True)
class PrecacheJobs:
    """Everything a voice version asks to have cached, and what names it."""

    voice_id: str
    """The voice's id."""
    version: int
    """The voice version (the pack's)."""
    manifest_sha256: str
    """SHA-256 of the pack's manifest: the version's identity in every key."""
    consent_sha256: str
    """SHA-256 of the signed consent document (named in every provenance mark)."""
    display_name: str
    """The voice's display name (the files' artist field)."""
    defaults: Mapping[str, Any]
    """The voice's speaking defaults (`SpeakDefaults` as a dict, from voice.json)."""
    phrases: tuple[PhraseJob, ...] = ()
    """Curated phrases, in the manifest's order."""
    archival: tuple[ArchivalJob, ...] = ()
    """Archival recordings, in the manifest's order."""
    max_new_tokens: int | None = None
    """Cap on semantic tokens per segment (None: the voice's own caps)."""


def firmware_version() -> str:
    try:
        return metadata.version("heritage-voice-kiosk")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _digest(record: Mapping[str, Any]) -> str:
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def phrase_settings(jobs: PrecacheJobs, job: PhraseJob) -> dict[str, Any]:
    """The settings a phrase is spoken with: the voice's defaults, the phrase's own, the cap."""
    settings = {k: v for k, v in jobs.defaults.items() if k not in ("language", "cut")}
    settings.update(job.overrides)
    settings["language"] = job.language
    settings["cut"] = job.cut
    settings["max_new_tokens"] = jobs.max_new_tokens
    return settings


def phrase_key(jobs: PrecacheJobs, job: PhraseJob, target: float, ceiling: float) -> str:
    return _digest(
        {
            "precache": PRECACHE_VERSION,
            "kind": "synthetic",
            "voice": jobs.manifest_sha256,
            "id": job.id,
            "text": job.text,
            "settings": phrase_settings(jobs, job),
            "target_lufs": target,
            "true_peak_dbtp": ceiling,
        }
    )


def archival_key(jobs: PrecacheJobs, job: ArchivalJob, target: float, ceiling: float) -> str:
    return _digest(
        {
            "precache": PRECACHE_VERSION,
            "kind": "archival",
            "voice": jobs.manifest_sha256,
            "id": job.id,
            "source_sha256": job.sha256,
            "target_lufs": target,
            "true_peak_dbtp": ceiling,
        }
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Plan:
    """One item to have: where it goes and how to make it."""

    kind: str
    id: str
    key: str
    file: str
    make: Callable[[Path, Voice | None], tuple[Loudness, int, float]]
    needs_voice: bool


def precache(
    voice: Voice | Callable[[], Voice],
    jobs: PrecacheJobs,
    out_dir: str | Path,
    *,
    target_lufs: float = DEFAULT_TARGET_LUFS,
    true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP,
    signer: BoxSigner,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Make `out_dir` (a version's `phrases/`) hold every job's file; returns the index.

    `voice` is a loaded voice or a zero-argument loader, called only if some
    phrase must be synthesised (the voice it returns is closed here).
    `progress`: a tqdm bar on stderr (None: when stderr is a terminal; else a
    log line per item).
    """
    out = Path(out_dir)
    for sub in KIND_DIRS.values():
        (out / sub).mkdir(parents=True, exist_ok=True)
    _remove_temporaries(out)
    plans = _plans(jobs, target_lufs, true_peak_dbtp, signer)
    old = _read_index(out, jobs)
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    for plan in plans:
        entry = old.get((plan.kind, plan.id))
        if entry is not None and entry.get("key") == plan.key and _whole(out, entry):
            kept[(plan.kind, plan.id)] = entry
    index = _index(jobs, target_lufs, plans, kept)
    if read_index(out) != index:  # only what changed is written: a no-op run writes nothing
        _write_index(out, index)
    _remove_unlisted(out, index)
    todo = [p for p in plans if (p.kind, p.id) not in kept]
    if not todo:
        log.info("phrases of %s v%d: all %d cached, nothing to do", jobs.voice_id, jobs.version,
                 len(plans))  # fmt: skip
        return index
    log.info("phrases of %s v%d: %d cached, making %d", jobs.voice_id, jobs.version,
             len(kept), len(todo))  # fmt: skip
    loaded: Voice | None = None
    owned = False
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(todo), desc=f"precache {jobs.voice_id} v{jobs.version}", unit="item",
               file=sys.stderr, disable=not show)  # fmt: skip
    try:
        for plan in todo:
            if plan.needs_voice and loaded is None:
                if isinstance(voice, Voice):
                    loaded = voice
                else:
                    loaded, owned = voice(), True
            start = time.perf_counter()
            target = out / plan.file
            tmp = target.with_name(f"{TMP_PREFIX}{target.name}.{os.getpid()}{target.suffix}")
            try:
                level, rate, seconds = plan.make(tmp, loaded)
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            fsync_dir(target.parent)
            kept[(plan.kind, plan.id)] = {
                "kind": plan.kind,
                "id": plan.id,
                "file": plan.file,
                "sha256": file_sha256(target),
                "sample_rate": rate,
                "seconds": round(seconds, 4),
                "lufs": round(level.lufs, 2),
                "true_peak_dbtp": round(level.true_peak_dbtp, 2),
                "key": plan.key,
            }
            index = _index(jobs, target_lufs, plans, kept)
            _write_index(out, index)
            took = time.perf_counter() - start
            line = (
                f"{plan.kind} {plan.id}: {seconds:.2f} s, {level.lufs:.1f} LUFS, "
                f"{level.true_peak_dbtp:.1f} dBTP, made in {took:.1f} s"
            )
            if show:
                bar.set_postfix_str(plan.id)
                log.debug(line)
            else:
                log.info(line)
            bar.update()
    finally:
        bar.close()
        if owned and loaded is not None:
            loaded.close()
    return index


def _plans(jobs: PrecacheJobs, target: float, ceiling: float, signer: BoxSigner) -> list[_Plan]:
    plans = []
    for phrase in jobs.phrases:
        key = phrase_key(jobs, phrase, target, ceiling)
        plans.append(
            _Plan(
                "synthetic",
                phrase.id,
                key,
                f"{KIND_DIRS['synthetic']}/{phrase.id}-{key[:12]}.flac",
                _phrase_maker(jobs, phrase, target, ceiling, signer),
                needs_voice=True,
            )
        )
    for item in jobs.archival:
        key = archival_key(jobs, item, target, ceiling)
        plans.append(
            _Plan(
                "archival",
                item.id,
                key,
                f"{KIND_DIRS['archival']}/{_safe_stem(item.id)}-{key[:12]}.flac",
                _archival_maker(jobs, item, target, ceiling, signer),
                needs_voice=False,
            )
        )
    seen: set[str] = set()
    for plan in plans:
        if plan.file in seen:
            raise PrecacheError(f"{jobs.voice_id}: two items named {plan.id!r}; rename one")
        seen.add(plan.file)
    return plans


def _safe_stem(stem: str) -> str:
    """A file-name-safe stand-in for an archival stem (spaces, CJK: kept readable)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._")
    return cleaned or "recording"


def _phrase_maker(
    jobs: PrecacheJobs, job: PhraseJob, target: float, ceiling: float, signer: BoxSigner
) -> Callable[[Path, Voice | None], tuple[Loudness, int, float]]:
    def make(path: Path, voice: Voice | None) -> tuple[Loudness, int, float]:
        assert voice is not None
        settings = phrase_settings(jobs, job)
        options = voice.options(
            **{k: v for k, v in settings.items() if k not in ("language", "cut", "max_new_tokens")}
        )
        if jobs.max_new_tokens is not None:
            options = replace(options, max_new_tokens=jobs.max_new_tokens)
        segments = voice.segments(job.text, job.language, job.cut)
        features = None
        if job.features is not None:
            if len(job.features) != len(segments) or any(
                s.phone_ids != np.asarray(ids).tolist()
                for s, (ids, _b) in zip(segments, job.features, strict=False)
            ):
                raise PrecacheError(
                    f"{jobs.voice_id} v{jobs.version}, phrase {job.id!r}: this firmware reads "
                    "the text as other phones than the workstation did; pack the voice again "
                    "with this firmware's tools"
                )
            features = [torch.from_numpy(np.asarray(b, dtype=np.float32)) for _i, b in job.features]
        audio = voice.synthesize(
            job.text,
            language=job.language,
            cut=job.cut,
            options=options,
            segments=segments,
            features=features,
        )
        try:
            samples, _level = normalise(audio.samples, audio.sample_rate, target, ceiling)
        except ValueError as exc:
            raise PrecacheError(
                f"{jobs.voice_id} v{jobs.version}, phrase {job.id!r}: {exc}"
            ) from exc
        record = {**settings, "backend": voice.backend, "precision": voice.precision}
        mark = Mark(SYNTHETIC, jobs.voice_id, jobs.version, job.id, job.text,
                    jobs.consent_sha256, jobs.manifest_sha256, record)  # fmt: skip
        return _store(path, samples, audio.sample_rate, jobs, mark, job.text, signer, None)

    return make


def _archival_maker(
    jobs: PrecacheJobs, job: ArchivalJob, target: float, ceiling: float, signer: BoxSigner
) -> Callable[[Path, Voice | None], tuple[Loudness, int, float]]:
    def make(path: Path, _voice: Voice | None) -> tuple[Loudness, int, float]:
        try:
            raw, rate = soundfile.read(str(job.source), dtype="float64", always_2d=True)
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise PrecacheError(f"{job.source}: not a readable recording ({exc})") from exc
        samples = raw[:, 0] if raw.shape[1] == 1 else raw
        try:
            before = measure(samples, rate)
            levelled, after = normalise(samples, rate, target, ceiling)
        except ValueError as exc:
            raise PrecacheError(f"{jobs.voice_id}, archival {job.id!r}: {exc}") from exc
        record = {
            "source_sha256": job.sha256,
            "source_lufs": round(before.lufs, 2),
            "gain_db": round(after.lufs - before.lufs, 2),
        }
        mark = Mark(ORIGINAL, jobs.voice_id, jobs.version, job.id, job.title,
                    jobs.consent_sha256, jobs.manifest_sha256, record)  # fmt: skip
        return _store(path, levelled, rate, jobs, mark, job.title, signer, job.source)

    return make


def _store(
    path: Path,
    samples: np.ndarray,
    rate: int,
    jobs: PrecacheJobs,
    mark: Mark,
    title: str,
    signer: BoxSigner,
    parent: Path | None,
) -> tuple[Loudness, int, float]:
    """FLAC with readable metadata, then the C2PA mark; returns what the file measures."""
    plain = path.with_name(path.name + ".plain.flac")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    comment = {
        "tag": mark.kind,
        "voice_id": jobs.voice_id,
        "voice_version": jobs.version,
        "item_id": mark.item,
        "text": mark.text,
        "settings": dict(mark.settings or {}),
    }
    version = firmware_version()
    try:
        with soundfile.SoundFile(str(plain), "w", rate, channels, SUBTYPE, format="FLAC") as f:
            f.title = title
            f.artist = f"{jobs.display_name} ({jobs.voice_id} v{jobs.version})"
            f.album = f"Heritage Voice Kiosk: {jobs.voice_id} v{jobs.version}"
            f.genre = mark.kind
            f.comment = json.dumps(comment, ensure_ascii=False, sort_keys=True)
            f.software = f"heritage-voice-kiosk {version} (precache {PRECACHE_VERSION})"
            f.write(samples)
        signer.sign(plain, path, mark, parent=parent, software_version=version)
    finally:
        with contextlib.suppress(FileNotFoundError):
            plain.unlink()
    stored, stored_rate = soundfile.read(str(path), dtype="float64")
    return measure(stored, stored_rate), stored_rate, stored.shape[0] / stored_rate


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The readable metadata of a cached file: title, artist, tag, and the comment record."""
    with soundfile.SoundFile(str(path)) as f:
        try:
            record = json.loads(f.comment) if f.comment else {}
        except ValueError:
            record = {}
        return {
            "title": f.title,
            "artist": f.artist,
            "album": f.album,
            "tag": f.genre,
            "software": f.software,
            "record": record,
        }


# --- the index --------------------------------------------------------------------------


def _index(
    jobs: PrecacheJobs,
    target: float,
    plans: list[_Plan],
    done: Mapping[tuple[str, str], Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "voice": jobs.voice_id,
        "version": jobs.version,
        "target_lufs": target,
        "items": [dict(done[(p.kind, p.id)]) for p in plans if (p.kind, p.id) in done],
    }


def _write_index(out: Path, index: Mapping[str, Any]) -> None:
    data = json.dumps(index, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(out / INDEX_FILE, data.encode("utf-8"), tmp_prefix=TMP_PREFIX)


def read_index(out_dir: str | Path) -> dict[str, Any] | None:
    """The index of a phrases folder, or None if there is none (or it is not one of ours)."""
    try:
        data = json.loads((Path(out_dir) / INDEX_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        return None
    return data


def _read_index(out: Path, jobs: PrecacheJobs) -> dict[tuple[str, str], dict[str, Any]]:
    data = read_index(out)
    if data is None or data.get("voice") != jobs.voice_id or data.get("version") != jobs.version:
        return {}
    found = {}
    for item in data.get("items") or []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            found[(str(item.get("kind")), item["id"])] = item
    return found


def _whole(out: Path, entry: Mapping[str, Any]) -> bool:
    """The listed file exists inside the folder and has the listed SHA-256."""
    rel = Path(str(entry.get("file", "")))
    if rel.is_absolute() or ".." in rel.parts:
        return False
    path = out / rel
    try:
        return path.is_file() and file_sha256(path) == entry.get("sha256")
    except OSError:
        return False


def _remove_temporaries(out: Path) -> None:
    for folder in (out, *(out / d for d in KIND_DIRS.values())):
        for entry in folder.iterdir():
            if entry.name.startswith(TMP_PREFIX) and entry.is_file():
                entry.unlink(missing_ok=True)


def _remove_unlisted(out: Path, index: Mapping[str, Any]) -> None:
    """Delete audio files the index does not name (stale keys, a killed run's last file)."""
    listed = {str(item["file"]) for item in index["items"]}
    for sub in KIND_DIRS.values():
        for entry in (out / sub).iterdir():
            if f"{sub}/{entry.name}" not in listed and entry.is_file():
                log.info("removing %s/%s (no longer listed)", sub, entry.name)
                entry.unlink(missing_ok=True)


def verify_index(out_dir: str | Path) -> list[str]:
    """Problems of a phrases folder: every listed file must exist whole (empty = sound)."""
    out = Path(out_dir)
    data = read_index(out)
    if data is None:
        return [f"{out / INDEX_FILE}: missing or not a {INDEX_FORMAT} index"]
    problems = []
    for item in data.get("items", []):
        if not _whole(out, item):
            problems.append(f"{item.get('file')}: missing or not the listed SHA-256")
    return problems


__all__ = [
    "DEFAULT_TARGET_LUFS",
    "INDEX_FILE",
    "INDEX_FORMAT",
    "PHRASES_DIR",
    "PRECACHE_VERSION",
    "ArchivalJob",
    "PhraseJob",
    "PrecacheError",
    "PrecacheJobs",
    "precache",
    "read_index",
    "read_metadata",
    "verify_index",
]
