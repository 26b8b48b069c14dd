"""The box's state folder: where installed voices, staging, reports and hooks live.

Every path of the layout is made here, so provisioning, `kiosk voices`,
`kiosk say --voice` and the daemon agree on it:

    <state>/
      voices/<id>/<version>/        one installed version (a rename of a finished staging folder)
        pack/                       the verified copy of the pack (manifest.json, .sig, payload)
        voice/                      the voice folder made from it (engines.voice_folder)
        phrases/                    its cached phrases and archival recordings, levelled and
                                    marked (kiosk_build.precache; layout: appliance/README.md)
      voices/<id>/active            symlink to `<version>` (relative), swapped with os.replace
      voices/<id>/.active-tmp-*     a temporary symlink a killed run may leave (cleaned)
      base/<id>/<version>/pack/     an installed base pack (the shared BERT folder); `active` too
      revocations/<sha256>.json     trusted revocation lists accepted so far (+ `.sig`)
      provenance/                   the box's C2PA signing identity, made at its first build
                                    (box.key 0600, box-chain.pem, box-ca.pem)
      engines/                      TensorRT engines of the installed voices (GPU boxes only)
      staging/                      work in progress and folders being deleted (emptied each run)
      reports/                      kiosk-report.{txt,json} (latest) and timestamped copies
      voices.changed                a counter and time, rewritten after every change
      kioskd.pid                    the daemon's PID, if one runs (SIGHUP after a change)
      provision.lock                flock held by whoever changes the state

A version folder appears only by a rename of a complete, fsynced staging
folder, and disappears only by a rename into `staging/` before it is deleted,
so a power cut at any moment leaves whole versions and an `active` link that
names one of them (the old or the new).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engines.durable_files import fsync_dir
from provisioning.pack_format import MANIFEST, Manifest, parse_manifest
from provisioning.strict_json import PackFormatError

DEFAULT_STATE = "/var/lib/kiosk"
DEFAULT_CONFIG = "/etc/kiosk"
TRUSTED_KEYS = "trusted-keys"
ACTIVE = "active"
TMP_LINK_PREFIX = ".active-tmp-"
PACK_DIR = "pack"
VOICE_DIR = "voice"
#: The build step's names (kiosk_build.precache, .provenance), repeated here so that
#: reading the layout never imports the build step.
PHRASES_DIR = "phrases"
PROVENANCE_DIR = "provenance"
ENGINES_DIR = "engines"
#: Versions kept besides the active one (for `kiosk rollback`).
KEEP_PREVIOUS = 2
_VERSION_DIR = re.compile(r"[0-9]{1,10}(-[0-9a-f]{12})?")


def state_dir(given: str | Path | None) -> Path:
    """`--state`, else $KIOSK_STATE_DIR, else $STATE_DIRECTORY (systemd), else the default."""
    for value in (given, os.environ.get("KIOSK_STATE_DIR"), os.environ.get("STATE_DIRECTORY")):
        if value:
            # systemd may list several folders separated by ':'; the first is ours.
            return Path(str(value).split(":")[0])
    return Path(DEFAULT_STATE)


def config_dir(given: str | Path | None) -> Path:
    """`--config-dir`, else $KIOSK_CONFIG_DIR, else /etc/kiosk."""
    for value in (given, os.environ.get("KIOSK_CONFIG_DIR")):
        if value:
            return Path(value)
    return Path(DEFAULT_CONFIG)


@dataclass(frozen=True)
class Installed:
    """One installed version: its folder, parsed manifest and manifest hash."""

    folder: Path
    manifest: Manifest
    manifest_sha256: str

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def pack(self) -> Path:
        return self.folder / PACK_DIR

    @property
    def voice_folder(self) -> Path:
        return self.folder / VOICE_DIR

    @property
    def phrases(self) -> Path:
        return self.folder / PHRASES_DIR

    def sort_key(self) -> tuple[int, int]:
        """Version first; for the same version, the later install (mtime) last."""
        return (self.version, os.stat(self.folder).st_mtime_ns)


class State:
    """The state folder of one box (see the module docstring for the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def voices(self) -> Path:
        return self.root / "voices"

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def revocations(self) -> Path:
        return self.root / "revocations"

    @property
    def changed_file(self) -> Path:
        return self.root / "voices.changed"

    @property
    def pid_file(self) -> Path:
        return self.root / "kioskd.pid"

    def kind_root(self, kind: str) -> Path:
        return self.voices if kind == "voice" else self.base

    def ensure(self) -> None:
        for folder in (self.root, self.voices, self.base, self.staging, self.reports):
            folder.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time (udev import, inbox, a technician); the kernel drops the
        lock of a killed process."""
        self.ensure()
        fd = os.open(self.root / "provision.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- reading ----------------------------------------------------------------------

    def ids(self, kind: str = "voice") -> list[str]:
        root = self.kind_root(kind)
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def installed(self, voice_id: str, kind: str = "voice") -> list[Installed]:
        """Every complete version folder of a voice, oldest first."""
        folder = self.kind_root(kind) / voice_id
        if not folder.is_dir():
            return []
        out = []
        for entry in folder.iterdir():
            if entry.is_symlink() or not _VERSION_DIR.fullmatch(entry.name):
                continue
            try:
                data = (entry / PACK_DIR / MANIFEST).read_bytes()
                manifest = parse_manifest(data, str(entry / PACK_DIR / MANIFEST))
            except (OSError, PackFormatError):
                continue  # not a version folder this firmware made
            out.append(Installed(entry, manifest, hashlib.sha256(data).hexdigest()))
        return sorted(out, key=Installed.sort_key)

    def active(self, voice_id: str, kind: str = "voice") -> Installed | None:
        link = self.kind_root(kind) / voice_id / ACTIVE
        try:
            target = os.readlink(link)
        except OSError:
            return None
        for item in self.installed(voice_id, kind):
            if item.folder.name == target:
                return item
        return None

    # --- changing (call with the lock held) -----------------------------------------

    def activate(self, voice_id: str, folder_name: str, kind: str = "voice") -> None:
        """Point `active` at `folder_name` in one rename of a fresh symlink."""
        parent = self.kind_root(kind) / voice_id
        tmp = parent / f"{TMP_LINK_PREFIX}{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(folder_name, tmp)
        os.replace(tmp, parent / ACTIVE)
        fsync_dir(parent)

    def discard(self, path: Path) -> None:
        """Remove a folder so that it is gone whole: rename into staging, then delete."""
        if not path.exists() and not path.is_symlink():
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        trash = self.staging / f"trash-{path.parent.name}-{path.name}-{os.getpid()}"
        os.replace(path, trash)
        fsync_dir(path.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def deactivate(self, voice_id: str, kind: str = "voice") -> None:
        """Remove the `active` link (the voice stops speaking at once), then its folder."""
        parent = self.kind_root(kind) / voice_id
        with contextlib.suppress(FileNotFoundError):
            (parent / ACTIVE).unlink()
            fsync_dir(parent)

    def remove_voice(self, voice_id: str, kind: str = "voice") -> None:
        """The voice and every file made from it; the link goes first."""
        self.deactivate(voice_id, kind)
        self.discard(self.kind_root(kind) / voice_id)

    def prune(self, voice_id: str, kind: str = "voice", keep: int = KEEP_PREVIOUS) -> list[int]:
        """Keep the active version and the `keep` latest others; returns the versions removed."""
        active = self.active(voice_id, kind)
        others = [i for i in self.installed(voice_id, kind) if active is None or i != active]
        removed = []
        for item in others[: max(0, len(others) - keep)]:
            self.discard(item.folder)
            removed.append(item.version)
        return removed

    def recover(self) -> list[str]:
        """After a killed run: empty `staging/`, drop temporary links; returns what was cleaned."""
        cleaned: list[str] = []
        if self.staging.is_dir():
            for entry in sorted(self.staging.iterdir()):
                cleaned.append(f"staging/{entry.name}")
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        for kind in ("voice", "base"):
            root = self.kind_root(kind)
            for voice_id in self.ids(kind):
                folder = root / voice_id
                for entry in folder.iterdir():
                    if entry.name.startswith(TMP_LINK_PREFIX) or entry.name.startswith(".tmp-"):
                        entry.unlink(missing_ok=True)
                        cleaned.append(f"{folder.name}/{entry.name}")
                if not any(
                    p.name == ACTIVE or _VERSION_DIR.fullmatch(p.name) for p in folder.iterdir()
                ):
                    shutil.rmtree(folder, ignore_errors=True)
        return cleaned
