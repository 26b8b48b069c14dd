"""Provisioning on the box: packs and revocation lists from a stick, installed atomically.

For each pack: its manifest's signature by a trusted key is checked first (so
nothing is copied for a pack the box would refuse), then no downgrade and no
same version with other content, free disk, then `verify_pack` copies it
while hashing into `staging/` (same file system), the voice folder is made,
the voice is loaded and says its first phrase, and only then is the finished
folder renamed into `voices/<id>/<version>/` and the `active` link swapped.
A refusal at any step leaves the active voice as it was, byte for byte.
Layout and the crash rules: `provisioning.state`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engines.durable_files import atomic_write_bytes, fsync_dir
from engines.onnx_graphs.contract import MANIFEST as GRAPH_MANIFEST
from engines.voice import HelperModels
from provisioning.health import HEALTH_MAX_TOKENS, Exporter, HealthCheckError, health_check
from provisioning.pack_format import MANIFEST, PACK_SUFFIX, SIGNATURE, Limits, parse_manifest
from provisioning.pack_reader import open_pack, verify_pack
from provisioning.pack_to_voice import write_voice_folder_from_pack
from provisioning.revocation import (
    SIG_SUFFIX,
    RevocationList,
    signature_path,
    verify_revocations,
)
from provisioning.signing import TrustedKey, load_trust, signer_of
from provisioning.state import ENGINES_DIR, PACK_DIR, TRUSTED_KEYS, VOICE_DIR, State
from provisioning.strict_json import PackFormatError

log = logging.getLogger(__name__)

REPORT_TXT = "kiosk-report.txt"
REPORT_JSON = "kiosk-report.json"
#: Free space left after an install, on top of twice the pack (its copy and the voice folder).
DISK_MARGIN = 64 << 20
#: Timestamped reports kept in `<state>/reports/`.
KEEP_REPORTS = 100


@dataclass
class ReportItem:
    """One line of the report: what was found on the stick and what became of it."""

    source: str
    kind: str
    voice: str | None
    version: int | None
    status: str  # activated | unchanged | refused | revoked
    reason: str
    seconds: float

    def line(self) -> str:
        what = f"{self.voice} v{self.version}" if self.voice else ""
        if self.status == "refused":
            return f"refused: {self.reason}"
        if self.status == "unchanged":
            return f"unchanged {what} ({self.source}{': ' + self.reason if self.reason else ''})"
        return f"{self.status} {what} ({self.source}, {self.seconds:.1f} s)"


def box_trust(config: Path) -> list[TrustedKey]:
    """Every `*.pub` of `<config>/trusted-keys/`."""
    folder = config / TRUSTED_KEYS
    if not folder.is_dir():
        raise PackFormatError(
            f"{folder}: no trusted-keys folder; copy the museum's NAME.pub there "
            "(made by `kiosk keygen`)"
        )
    return load_trust(folder)


class RefusedError(Exception):
    """A pack or list refused, with the reason for the report."""


class Provisioner:
    """One provisioning run over a source folder (the stick's mount point or the inbox)."""

    def __init__(
        self,
        state: State,
        trust: list[TrustedKey],
        *,
        allow_downgrade: bool = False,
        backend: str = "torch-eager",
        export: Exporter | None = None,
        health_tokens: int = HEALTH_MAX_TOKENS,
        target_lufs: float = -18.0,
        precache_tokens: int | None = None,
        today: dt.date | None = None,
        limits: Limits | None = None,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.state = state
        self.trust = trust
        self.allow_downgrade = allow_downgrade
        self.backend = backend
        self.export = export
        self.health_tokens = health_tokens
        #: Loudness of the cached phrases (LUFS); cap on their semantic tokens per segment
        #: (None: the voice's own caps; a test voice that never says EOS needs one).
        self.target_lufs = target_lufs
        self.precache_tokens = precache_tokens
        self.today = today or dt.date.today()
        self.limits = limits or Limits()
        self.progress = progress
        self.changed = False

    # --- the run ----------------------------------------------------------------------

    def run(self, source: Path) -> list[ReportItem]:
        if not source.is_dir():
            raise PackFormatError(f"{source}: not a folder; give the stick's mount point")
        items: list[ReportItem] = []
        with self.state.locked():
            cleaned = self.state.recover()
            if cleaned:
                log.info("cleaned after an interrupted run: %s", ", ".join(cleaned))
            lists, packs = _find_items(source)
            for path in lists:
                items += self._revocation_item(path)
            for path in packs:
                items.append(self._pack_item(path))
            if self.changed:
                notify_daemon(self.state)
        return items

    def _emit(self, item: ReportItem) -> ReportItem:
        self.progress(item.line())
        return item

    # --- revocation lists -------------------------------------------------------------

    def _revocation_item(self, path: Path) -> list[ReportItem]:
        start = time.perf_counter()
        try:
            revocations, signer = verify_revocations(path, self.trust, self.limits)
        except (PackFormatError, OSError) as exc:
            return [self._emit(ReportItem(path.name, "revocation", None, None, "refused",
                                          str(exc), time.perf_counter() - start))]  # fmt: skip
        self._store_revocations(path)
        removed = self._apply_revocations(revocations)
        if not removed:
            return [self._emit(ReportItem(path.name, "revocation", None, None, "unchanged",
                                          "nothing installed is covered",
                                          time.perf_counter() - start))]  # fmt: skip
        self.changed = True
        return [
            self._emit(ReportItem(path.name, "revocation", vid, version, "revoked",
                                  f"{reason} (signed by {signer.name})",
                                  time.perf_counter() - start))
            for vid, version, reason in removed
        ]  # fmt: skip

    def _store_revocations(self, path: Path) -> None:
        """Keep the list so that a revoked voice cannot come back from another stick."""
        data = path.read_bytes()
        name = hashlib.sha256(data).hexdigest()
        target = self.state.revocations / f"{name}.json"
        if not target.exists():
            self.state.revocations.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(signature_path(target), signature_path(path).read_bytes())
            atomic_write_bytes(target, data)

    def _apply_revocations(self, revocations: RevocationList) -> list[tuple[str, int, str]]:
        removed: list[tuple[str, int, str]] = []
        state = self.state
        for voice_id in state.ids("voice"):
            installed = state.installed(voice_id)
            covered = [(i, revocations.covers(voice_id, i.version)) for i in installed]
            hit = [(i, r) for i, r in covered if r is not None]
            if not hit:
                continue
            active = state.active(voice_id)
            left = [i for i, r in covered if r is None]
            if active is not None and any(i.folder == active.folder for i, _ in hit):
                if left:
                    state.activate(voice_id, left[-1].folder.name)
                else:
                    state.deactivate(voice_id)
            for item, entry in hit:
                state.discard(item.folder)
                removed.append((voice_id, item.version, entry.reason if entry else ""))
            if not left:
                state.remove_voice(voice_id)
        return removed

    def _stored_revocation(self, voice_id: str, version: int) -> str | None:
        folder = self.state.revocations
        if not folder.is_dir():
            return None
        for path in sorted(folder.glob("*.json")):
            try:
                revocations, _ = verify_revocations(path, self.trust, self.limits)
            except PackFormatError:
                continue  # signed by a key no longer trusted: it counts for nothing
            entry = revocations.covers(voice_id, version)
            if entry is not None:
                return entry.describe()
        return None

    # --- packs ------------------------------------------------------------------------

    def _pack_item(self, path: Path) -> ReportItem:
        start = time.perf_counter()
        item = ReportItem(path.name, "pack", None, None, "refused", "", 0.0)
        try:
            item.status, item.reason = self._install(path, item)
        except (RefusedError, PackFormatError, HealthCheckError, ValueError, OSError) as exc:
            item.status, item.reason = "refused", str(exc)
        item.seconds = time.perf_counter() - start
        return self._emit(item)

    def _install(self, path: Path, item: ReportItem) -> tuple[str, str]:
        manifest, sha, total = self._peek(path)
        kind = manifest.kind
        item.kind, item.voice, item.version = kind, manifest.id, manifest.version
        what = f"{manifest.id} v{manifest.version}"
        state = self.state
        revoked = self._stored_revocation(manifest.id, manifest.version)
        if kind == "voice" and revoked:
            raise RefusedError(f"{path.name}: {what} was revoked on this box ({revoked})")
        installed = state.installed(manifest.id, kind)
        active = state.active(manifest.id, kind)
        if active is not None and active.manifest_sha256 == sha:
            return "unchanged", "already active"
        if not self.allow_downgrade:
            if active is not None and manifest.version < active.version:
                raise RefusedError(
                    f"{path.name}: {what} is older than the active v{active.version}; use "
                    f"`kiosk rollback {manifest.id}` for a kept version, or --allow-downgrade"
                )
            other = [i for i in installed if i.version == manifest.version]
            if any(i.manifest_sha256 != sha for i in other):
                raise RefusedError(
                    f"{path.name}: {what} is installed already with other content (another "
                    "manifest); a changed pack needs a new version number (or --allow-downgrade)"
                )
        same = next((i for i in installed if i.manifest_sha256 == sha), None)
        if same is not None:  # a kept version: activate it again, nothing to copy
            state.activate(manifest.id, same.folder.name, kind)
            self.changed = True
            return "activated", "a kept copy"
        self._check_disk(path, total)
        stage = state.staging / f"{manifest.id}-{manifest.version}-{os.getpid()}"
        stage.mkdir(parents=True)
        try:
            checked = verify_pack(
                path, self.trust, limits=self.limits, today=self.today, copy_to=stage / PACK_DIR
            )
            if checked.manifest_sha256 != sha:
                raise RefusedError(f"{path.name}: the manifest changed while it was read")
            note = self._build(stage, checked.manifest, sha)
            fsync_dir(stage)
            parent = state.kind_root(kind) / manifest.id
            parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(parent.parent)
            name = str(manifest.version)
            if (parent / name).exists():
                name = f"{manifest.version}-{sha[:12]}"
                state.discard(parent / name)  # a same-content leftover is rebuilt
            os.replace(stage, parent / name)
            fsync_dir(parent)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        state.activate(manifest.id, name, kind)
        self.changed = True
        removed = state.prune(manifest.id, kind)
        if removed:
            note += f"; removed old version(s) {', '.join(f'v{v}' for v in removed)}"
        return "activated", note

    def _peek(self, path: Path) -> tuple[Any, str, int]:
        """The manifest, if a trusted key signed it (nothing is copied otherwise)."""
        source = open_pack(path, self.limits)
        try:
            if MANIFEST not in source.members:
                raise RefusedError(f"{path.name}: no {MANIFEST}; this is not a voice pack")
            data = source.read(MANIFEST, self.limits.max_manifest_bytes)
            if SIGNATURE not in source.members:
                raise RefusedError(
                    f"{path.name}: not signed ({SIGNATURE} is missing); sign it on the "
                    "workstation with `kiosk sign PACK --key NAME.key`"
                )
            signature = source.read(SIGNATURE, 128)
            signer_of(data, signature, self.trust, f"{path.name}: {MANIFEST}")
            manifest = parse_manifest(data, f"{path.name}: {MANIFEST}", self.limits)
            total = sum(m.size for m in source.members.values())
        finally:
            source.close()
        return manifest, hashlib.sha256(data).hexdigest(), total

    def _check_disk(self, path: Path, total: int) -> None:
        free = shutil.disk_usage(self.state.root).free
        need = 2 * total + DISK_MARGIN
        if free < need:
            raise RefusedError(
                f"{path.name}: needs {need / 2**20:.0f} MiB free in {self.state.root}, "
                f"{free / 2**20:.0f} MiB are; `kiosk remove` a voice first"
            )

    def _build(self, stage: Path, manifest: Any, manifest_sha256: str) -> str:
        """The voice folder, its engines and cached phrases, then the health check.

        Everything is made inside `stage` before the health check and the
        activation, so a power cut never leaves a half-cached active version.
        (A base pack: its BERT folder must load.)
        """
        pack = stage / PACK_DIR
        if manifest.kind != "voice":
            from engines.features import BertFeaturizer

            BertFeaturizer.from_folder(pack / manifest.bert_folder)
            return "BERT folder loads"
        from provisioning.precache_jobs import BuildSettings, build_version

        write_voice_folder_from_pack(pack, manifest, stage / VOICE_DIR)
        helpers = box_helpers(self.state)
        built, _changed = build_version(
            self.state.root,
            stage,
            manifest,
            manifest_sha256,
            settings=BuildSettings(
                backend=self.backend,
                target_lufs=self.target_lufs,
                max_new_tokens=self.precache_tokens,
                progress=False,
            ),
            helpers=helpers,
            export=self.export,
        )
        checked = health_check(
            stage / VOICE_DIR,
            pack,
            manifest,
            backend=self.backend,
            helpers=helpers,
            export=self.export,
            max_tokens=self.health_tokens,
        )
        return f"{checked}; {built}"


def box_helpers(state: State) -> HelperModels:
    """The helper models installed on the box: BERT from the active base pack, if any."""
    for base_id in state.ids("base"):
        active = state.active(base_id, "base")
        if active is not None and active.manifest.bert_folder:
            return HelperModels(bert=active.pack / active.manifest.bert_folder)
    return HelperModels()


def _find_items(source: Path) -> tuple[list[Path], list[Path]]:
    """Revocation lists (`*.json` with their `.sig`) and packs (`*.kvp`, `*.tar`) on the stick."""
    lists, packs = [], []
    for entry in sorted(source.iterdir()):
        name = entry.name
        if name.startswith(".") or name in (REPORT_TXT, REPORT_JSON):
            continue
        if name.endswith(PACK_SUFFIX) or name.endswith(".tar"):
            packs.append(entry)
        elif name.endswith(".json"):
            lists.append(entry)
        elif not name.endswith(".json" + SIG_SUFFIX):
            log.info("%s: not a pack or a revocation list; left alone", entry)
    return lists, packs


# --- reports and the daemon's hook ------------------------------------------------------


def report_files(items: list[ReportItem], now: dt.datetime) -> dict[str, bytes]:
    """The bytes of `kiosk-report.txt` and `kiosk-report.json` (the box's and the stick's)."""
    text = (
        "".join(f"{item.line()}\n" for item in items)
        or "nothing to do: no packs or revocation lists found\n"
    )
    payload = {"time": now.isoformat(), "items": [asdict(i) for i in items]}
    data = (json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()
    return {REPORT_TXT: text.encode(), REPORT_JSON: data}


def write_reports(state: State, items: list[ReportItem], now: dt.datetime | None = None) -> Path:
    """`kiosk-report.{txt,json}` into `<state>/reports/`: timestamped copies and the latest."""
    now = now or dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    state.reports.mkdir(parents=True, exist_ok=True)
    for name, content in report_files(items, now).items():
        atomic_write_bytes(state.reports / f"{stamp}-{name}", content)
        atomic_write_bytes(state.reports / name, content)
    old = sorted(state.reports.glob(f"*-{REPORT_JSON}"))[:-KEEP_REPORTS]
    for path in old:
        path.unlink(missing_ok=True)
        path.with_name(path.name.replace(REPORT_JSON, REPORT_TXT)).unlink(missing_ok=True)
    return state.reports / REPORT_TXT


def notify_daemon(state: State) -> None:
    """Tell a running daemon that voices changed: rewrite `voices.changed`, SIGHUP its PID."""
    counter = 0
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        counter = int(json.loads(state.changed_file.read_bytes())["counter"])
    record = {"counter": counter + 1, "time": dt.datetime.now(dt.timezone.utc).isoformat()}
    atomic_write_bytes(state.changed_file, (json.dumps(record) + "\n").encode())
    try:
        pid = int(state.pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 0)
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        log.info("%s names PID %d, which is not running", state.pid_file, pid)
    except PermissionError:
        log.warning("not allowed to signal PID %d (%s); run as the daemon's user", pid,
                    state.pid_file)  # fmt: skip


# --- kiosk voices / rollback / remove ---------------------------------------------------


def voices_listing(state: State, today: dt.date | None = None) -> list[dict[str, Any]]:
    """What `kiosk voices` prints: one entry per voice with an active version."""
    today = today or dt.date.today()
    out = []
    for voice_id in state.ids("voice"):
        active = state.active(voice_id)
        if active is None or active.manifest.voice is None:
            continue
        consent = active.manifest.voice.consent
        engines = built_engines(state, voice_id, active.voice_folder)
        out.append(
            {
                "id": voice_id,
                "version": active.version,
                "manifest_sha256": active.manifest_sha256,
                "text_policy": consent.text_policy,
                "valid_until": consent.valid_until,
                "enabled": not consent.expired(today),
                "path": str(active.voice_folder),
                "kept": [i.version for i in state.installed(voice_id) if i != active],
                "engines": engines,
                "cached": cached_listing(active.phrases),
            }
        )
    return out


def built_engines(state: State, voice_id: str, voice_folder: Path) -> list[str]:
    """Runtimes with engines built for the voice: `onnxruntime` when its exported graphs
    carry their manifest, `tensorrt` when the engine cache holds an entry for it."""
    found = []
    if (voice_folder / "graphs" / GRAPH_MANIFEST).is_file():
        found.append("onnxruntime")
    trt = state.root / ENGINES_DIR / voice_id
    if trt.is_dir() and any(p.is_dir() for p in trt.iterdir()):
        found.append("tensorrt")
    return found


def cached_listing(phrases: Path) -> dict[str, Any]:
    """What `phrases/index.json` lists: phrase and archival ids, and the loudness target.

    Read without hashing (the daemon checks every file's SHA-256 before it plays it).
    """
    try:
        index = json.loads((phrases / "index.json").read_bytes())
        items = [i for i in index["items"] if (phrases / str(i["file"])).is_file()]
        return {
            "phrases": [str(i["id"]) for i in items if i.get("kind") == "synthetic"],
            "archival": [str(i["id"]) for i in items if i.get("kind") == "archival"],
            "target_lufs": index.get("target_lufs"),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {"phrases": [], "archival": [], "target_lufs": None}


def rollback(state: State, voice_id: str, today: dt.date | None = None) -> str:
    """The kept version before the active one becomes active (one symlink swap)."""
    with state.locked():
        state.recover()
        installed = state.installed(voice_id)
        active = state.active(voice_id)
        if active is None:
            raise PackFormatError(f"{voice_id}: no such voice installed (see `kiosk voices`)")
        index = next(i for i, item in enumerate(installed) if item == active)
        if index == 0:
            raise PackFormatError(
                f"{voice_id}: v{active.version} is the oldest kept version; nothing to roll "
                "back to (provision an older pack with --allow-downgrade)"
            )
        target = installed[index - 1]
        details = target.manifest.voice
        if details is not None and details.consent.expired(today or dt.date.today()):
            raise PackFormatError(
                f"{voice_id}: the consent of v{target.version} ended on "
                f"{details.consent.valid_until}; it cannot be made active"
            )
        state.activate(voice_id, target.folder.name)
        notify_daemon(state)
    return f"{voice_id}: v{target.version} is active again (was v{active.version})"


def remove(state: State, voice_id: str) -> str:
    with state.locked():
        if not (state.voices / voice_id).exists():
            raise PackFormatError(f"{voice_id}: no such voice installed (see `kiosk voices`)")
        state.remove_voice(voice_id)
        notify_daemon(state)
    return f"{voice_id}: removed, with every installed version"


__all__ = [
    "Provisioner",
    "ReportItem",
    "box_helpers",
    "box_trust",
    "notify_daemon",
    "remove",
    "report_files",
    "rollback",
    "voices_listing",
    "write_reports",
]
