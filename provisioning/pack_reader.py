"""Reading an untrusted pack (a folder or a `.tar`) without letting it do anything.

Everything that could make a reader write or read outside the pack is refused
before a payload byte is read: symbolic and hard links, devices, FIFOs and
sockets, absolute and `..` paths, names off the allow-list, duplicate and
case-colliding names, too many or too large files.  A tar's members are all
checked from their headers first; files are then read one by one as streams
(never `extractall`), so nothing is written unless `copy_to` asks for it, and
then only regular files, by this code, under names it chose.

`verify_pack` is what `kiosk verify` runs and what provisioning builds on:
signature over the exact manifest bytes by a trusted key, strict manifest,
exactly the listed files with their sizes and SHA-256, firmware, consent dates
and the precomputed arrays.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engines.voice_folder import VoiceFolderError, load_prompt
from provisioning.pack_format import (
    COMPONENT,
    MANIFEST,
    PACK_SUFFIX,
    PHRASES_BERT_FILE,
    PROMPT_FILE,
    SIGNATURE,
    SIGNATURE_BYTES,
    Limits,
    Manifest,
    check_payload_path,
    check_unique_paths,
    firmware_version,
    parse_manifest,
    version_tuple,
)
from provisioning.phrase_features import read_phrase_features
from provisioning.signing import TrustedKey, signer_of
from provisioning.strict_json import PackFormatError

CHUNK = 1 << 20
#: Payload files read into memory while hashing, to check their arrays.
_KEPT = (PROMPT_FILE, PHRASES_BERT_FILE)
_KEPT_MAX = 256 << 20
_ROOT_FILES = (MANIFEST, SIGNATURE)


@dataclass(frozen=True)
class Member:
    """A regular file of the pack: path relative to the pack folder, size from its header."""

    path: str
    size: int


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_name(rel: str, where: str) -> None:
    if rel in _ROOT_FILES:
        return
    try:
        check_payload_path(rel, where)
    except PackFormatError as exc:
        raise PackFormatError(f"{exc}; a pack holds only the files its manifest lists") from exc


class _Budget:
    """Counts files and bytes as members are found, refusing past the limits at once."""

    def __init__(self, where: str, limits: Limits) -> None:
        self.where, self.limits = where, limits
        self.files = 0
        self.bytes = 0

    def add(self, rel: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        if self.files > self.limits.max_files + len(_ROOT_FILES):
            raise PackFormatError(f"{self.where}: more than {self.limits.max_files} files")
        if size > self.limits.max_file_bytes:
            raise PackFormatError(
                f"{self.where}: {rel} is {size} bytes, over the limit of "
                f"{self.limits.max_file_bytes} per file"
            )
        if self.bytes > self.limits.max_total_bytes:
            raise PackFormatError(
                f"{self.where}: more than {self.limits.max_total_bytes} bytes in all "
                "(a tar bomb, or a pack too large for this box)"
            )


class PackSource:
    """A pack's regular files by relative path; `top` is the pack folder's name."""

    label: str
    top: str
    members: dict[str, Member]
    container: str

    def open(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds open."""

    def read(self, rel: str, limit: int) -> bytes:
        member = self.members[rel]
        if member.size > limit:
            raise PackFormatError(f"{self.label}: {rel} is {member.size} bytes, over {limit}")
        with self.open(rel) as handle:
            data = handle.read(limit + 1)
        if len(data) != member.size:
            raise PackFormatError(f"{self.label}: {rel} changed while it was read")
        return data


class FolderSource(PackSource):
    """A `.kvp` folder, walked without following any link, read through `openat`."""

    container = "folder"

    def __init__(self, path: Path, limits: Limits) -> None:
        self.label = str(path)
        self.top = path.name
        self.members = {}
        self._ids: dict[str, tuple[int, int]] = {}
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise PackFormatError(f"{path}: the pack is a symbolic link; give its real path")
        if not stat.S_ISDIR(st.st_mode):
            raise PackFormatError(f"{path}: not a folder")
        self._root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            self._walk(self._root, "", _Budget(self.label, limits), 0)
        except BaseException:
            self.close()
            raise

    def _walk(self, dir_fd: int, prefix: str, budget: _Budget, depth: int) -> None:
        for name in sorted(os.listdir(dir_fd)):
            rel = f"{prefix}{name}"
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 >= 4 or not COMPONENT.fullmatch(name):
                    _check_name(rel + "/x", self.label)  # names the problem
                    raise PackFormatError(f"{self.label}: {rel}/ is nested too deep")
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    self._walk(fd, rel + "/", budget, depth + 1)
                finally:
                    os.close(fd)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise PackFormatError(
                    f"{self.label}: {rel} is {_kind_of(st.st_mode)}; a pack holds regular "
                    "files only"
                )
            if st.st_nlink > 1:
                raise PackFormatError(
                    f"{self.label}: {rel} is a hard link ({st.st_nlink} names for one file); "
                    "copy the pack so every file stands alone"
                )
            _check_name(rel, self.label)
            budget.add(rel, st.st_size)
            self.members[rel] = Member(rel, st.st_size)
            self._ids[rel] = (st.st_dev, st.st_ino)

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        parts = rel.split("/")
        fds: list[int] = []
        try:
            dir_fd = self._root
            for part in parts[:-1]:
                dir_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                fds.append(dir_fd)
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise PackFormatError(f"{self.label}: {rel} became a symbolic link") from exc
                raise
            st = os.fstat(fd)
            if (
                not stat.S_ISREG(st.st_mode)
                or (st.st_dev, st.st_ino) != self._ids[rel]
                or st.st_nlink > 1
            ):
                os.close(fd)
                raise PackFormatError(f"{self.label}: {rel} was replaced while being checked")
            with os.fdopen(fd, "rb") as handle:
                yield handle
        finally:
            for fd_ in fds:
                os.close(fd_)

    def close(self) -> None:
        root, self._root = getattr(self, "_root", -1), -1
        if root >= 0:
            os.close(root)


_TAR_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)


class TarSource(PackSource):
    """An uncompressed `.tar` holding one `.kvp` folder; every header checked up front."""

    container = "tar"

    def __init__(self, path: Path, limits: Limits) -> None:
        self.label = str(path)
        self.members = {}
        self._tar_members: dict[str, tarfile.TarInfo] = {}
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise PackFormatError(f"{path}: is {_kind_of(st.st_mode)}, not a tar file")
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
        except (tarfile.ReadError, EOFError) as exc:
            raise PackFormatError(
                f"{path}: not an uncompressed tar file ({exc}); make it with `tar -cf`"
            ) from exc
        try:
            self._scan(limits)
        except BaseException:
            self.close()
            raise

    def _scan(self, limits: Limits) -> None:
        budget = _Budget(self.label, limits)
        tops: set[str] = set()
        count = 0
        try:
            for info in self._tar:
                count += 1
                if count > limits.max_files + 64:
                    raise PackFormatError(f"{self.label}: more than {limits.max_files} members")
                self._check_member(info, budget, tops)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise PackFormatError(f"{self.label}: a damaged or truncated tar ({exc})") from exc
        if not tops:
            raise PackFormatError(f"{self.label}: an empty tar; it must hold one .kvp folder")
        self.top = tops.pop()

    def _check_member(self, info: tarfile.TarInfo, budget: _Budget, tops: set[str]) -> None:
        name = info.name
        where = f"{self.label}: member {name!r}"
        if "\x00" in name or "\\" in name:
            raise PackFormatError(f"{where}: a NUL or backslash in the name")
        if name.startswith("/"):
            raise PackFormatError(f"{where}: an absolute path")
        parts = name.rstrip("/").split("/") if info.isdir() else name.split("/")
        if ".." in parts:
            raise PackFormatError(f"{where}: climbs out of the pack ('..')")
        if info.issym() or info.islnk():
            what = "a symbolic link" if info.issym() else "a hard link"
            raise PackFormatError(f"{where}: {what} (to {info.linkname!r}); packs hold no links")
        if info.ischr() or info.isblk() or info.isfifo():
            what = "a character device" if info.ischr() else "a block device"
            if info.isfifo():
                what = "a FIFO (named pipe)"
            raise PackFormatError(f"{where}: {what}; packs hold regular files only")
        if not (info.isdir() or (info.type in _TAR_REGULAR and not info.issparse())):
            raise PackFormatError(f"{where}: member type {info.type!r} is not a regular file")
        top = parts[0]
        if not top.endswith(PACK_SUFFIX) or not COMPONENT.fullmatch(top):
            raise PackFormatError(f"{where}: outside a NAME-VERSION.kvp/ folder")
        tops.add(top)
        if len(tops) > 1:
            raise PackFormatError(f"{self.label}: holds more than one folder ({sorted(tops)})")
        if info.isdir():
            if len(parts) > 1:
                _check_name("/".join(parts[1:]) + "/x", where)
            return
        if len(parts) < 2:
            raise PackFormatError(f"{where}: a file outside the .kvp folder")
        rel = "/".join(parts[1:])
        _check_name(rel, self.label)
        if rel in self.members:
            raise PackFormatError(f"{where}: appears twice in the tar")
        budget.add(rel, info.size)
        self.members[rel] = Member(rel, info.size)
        self._tar_members[rel] = info

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        handle = self._tar.extractfile(self._tar_members[rel])
        if handle is None:  # not a regular file: excluded by the scan
            raise PackFormatError(f"{self.label}: {rel} is not a regular file")
        with handle:
            yield handle  # type: ignore[misc]

    def close(self) -> None:
        tar = getattr(self, "_tar", None)
        if tar is not None:
            tar.close()


def open_pack(path: str | Path, limits: Limits | None = None) -> PackSource:
    """A folder or a `.tar` pack, its members listed and checked (no payload read yet)."""
    path = Path(path)
    limits = limits or Limits()
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise PackFormatError(f"{path}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
        return FolderSource(path, limits)
    return TarSource(path, limits)


@dataclass(frozen=True)
class CheckedPack:
    """A pack whose manifest and files agree (and, when `signer` is set, trusted)."""

    manifest: Manifest
    manifest_bytes: bytes
    signer: TrustedKey | None
    source: str
    container: str
    signed: bool

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()


def check_pack(
    path: str | Path,
    trust: list[TrustedKey] | None,
    *,
    limits: Limits | None = None,
    today: dt.date | None = None,
    firmware: str | None = None,
    copy_to: str | Path | None = None,
) -> CheckedPack:
    """Everything `kiosk verify` checks; with `trust` None the signature is not required.

    With `copy_to` (a folder that must not exist yet, on the destination file
    system), every file is copied there while it is hashed, so what was
    checked is what was copied; the copies are fsynced.  Raises
    PackFormatError with the first reason to refuse.
    """
    limits = limits or Limits()
    source = open_pack(path, limits)
    try:
        return _check(source, trust, limits, today or dt.date.today(), firmware, copy_to)
    except (tarfile.TarError, EOFError) as exc:
        raise PackFormatError(f"{path}: a damaged or truncated tar ({exc})") from exc
    finally:
        source.close()


def verify_pack(
    path: str | Path,
    trust: list[TrustedKey],
    *,
    limits: Limits | None = None,
    today: dt.date | None = None,
    firmware: str | None = None,
    copy_to: str | Path | None = None,
) -> CheckedPack:
    """A signed, trusted, complete and well-formed pack, or PackFormatError naming why not."""
    if not trust:
        raise PackFormatError("no trusted keys given")
    return check_pack(path, trust, limits=limits, today=today, firmware=firmware, copy_to=copy_to)


def _check(
    source: PackSource,
    trust: list[TrustedKey] | None,
    limits: Limits,
    today: dt.date,
    firmware: str | None,
    copy_to: str | Path | None,
) -> CheckedPack:
    label = source.label
    if MANIFEST not in source.members:
        raise PackFormatError(f"{label}: no {MANIFEST}; this is not a voice pack")
    manifest_bytes = source.read(MANIFEST, limits.max_manifest_bytes)
    signed = SIGNATURE in source.members
    signer = None
    if trust is not None:
        if not signed:
            raise PackFormatError(
                f"{label}: not signed ({SIGNATURE} is missing); sign it with "
                "`kiosk sign PACK --key NAME.key`"
            )
        signature = source.read(SIGNATURE, SIGNATURE_BYTES * 2)
        signer = signer_of(manifest_bytes, signature, trust, f"{label}: {MANIFEST}")
    manifest = parse_manifest(manifest_bytes, f"{label}: {MANIFEST}", limits)
    if source.top != manifest.folder_name:
        raise PackFormatError(
            f"{label}: the pack folder is {source.top!r}, but its manifest is for "
            f"{manifest.folder_name!r} (id {manifest.id}, version {manifest.version})"
        )
    present = sorted(set(source.members) - set(_ROOT_FILES))
    check_unique_paths(present, label)
    listed = {f.path for f in manifest.files}
    missing = sorted(listed - set(present))
    if missing:
        raise PackFormatError(f"{label}: {missing[0]} is listed in {MANIFEST} but missing")
    extra = sorted(set(present) - listed)
    if extra:
        raise PackFormatError(f"{label}: {extra[0]} is in the pack but not listed in {MANIFEST}")
    firmware = firmware or firmware_version()
    if version_tuple(manifest.min_firmware) > version_tuple(firmware):
        raise PackFormatError(
            f"{label}: needs firmware {manifest.min_firmware} or later; this is {firmware} "
            "(update the box first)"
        )
    if manifest.voice is not None and manifest.voice.consent.expired(today):
        raise PackFormatError(
            f"{label}: the consent for {manifest.id} ended on "
            f"{manifest.voice.consent.valid_until}; a pack with renewed consent is needed"
        )
    for entry in manifest.files:
        if source.members[entry.path].size != entry.size:
            raise PackFormatError(
                f"{label}: {entry.path} is {source.members[entry.path].size} bytes, the "
                f"manifest says {entry.size}"
            )
    dest = Path(copy_to) if copy_to is not None else None
    if dest is not None:
        dest.mkdir(parents=False, exist_ok=False)
    kept: dict[str, bytes] = {}
    for entry in manifest.files:
        keep = entry.path in _KEPT and entry.size <= _KEPT_MAX
        data = _hash_file(source, entry.path, entry.size, entry.sha256, dest, keep)
        if keep:
            kept[entry.path] = data
    if dest is not None:
        for rel in (MANIFEST, *((SIGNATURE,) if signed else ())):
            (dest / rel).write_bytes(source.read(rel, limits.max_manifest_bytes))
            _fsync(dest / rel)
        _fsync_tree(dest)
    if manifest.voice is not None:
        _check_arrays(label, manifest, kept)
    return CheckedPack(manifest, manifest_bytes, signer, label, source.container, signed)


def _hash_file(
    source: PackSource, rel: str, size: int, sha256: str, dest: Path | None, keep: bool
) -> bytes:
    digest = hashlib.sha256()
    kept: list[bytes] = []
    seen = 0
    out = None
    if dest is not None:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        out = os.fdopen(fd, "wb")
    try:
        with source.open(rel) as handle:
            while block := handle.read(min(CHUNK, size + 1 - seen)):
                seen += len(block)
                if seen > size:
                    break
                digest.update(block)
                if keep:
                    kept.append(block)
                if out is not None:
                    out.write(block)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    if seen != size:
        raise PackFormatError(f"{source.label}: {rel} changed size while it was read")
    if digest.hexdigest() != sha256:
        raise PackFormatError(
            f"{source.label}: {rel} does not match its SHA-256 in {MANIFEST}: the file was "
            "changed or damaged (copy the pack again)"
        )
    return b"".join(kept)


def _check_arrays(label: str, manifest: Manifest, kept: dict[str, bytes]) -> None:
    """The precomputed prompt and phrase features load as plain arrays of the right shapes."""
    voice = manifest.voice
    assert voice is not None
    if set(kept) != set(_KEPT):
        raise PackFormatError(f"{label}: {PROMPT_FILE} or {PHRASES_BERT_FILE} is too large")
    with tempfile.TemporaryDirectory(prefix="kvp-check-") as tmp:
        prompt_path = Path(tmp) / PROMPT_FILE
        prompt_path.write_bytes(kept[PROMPT_FILE])
        try:
            prompt = load_prompt(prompt_path)
        except VoiceFolderError as exc:
            raise PackFormatError(f"{label}: {PROMPT_FILE}: {str(exc).split(': ', 1)[-1]}") from exc
    uses_sv = voice.model_version in ("v2Pro", "v2ProPlus")
    if uses_sv != (prompt.timbre.sv_proj is not None):
        raise PackFormatError(
            f"{label}: {PROMPT_FILE} {'lacks' if uses_sv else 'has'} the speaker embedding a "
            f"{voice.model_version} voice {'needs' if uses_sv else 'does not use'}"
        )
    read_phrase_features(
        kept[PHRASES_BERT_FILE], [p.id for p in voice.phrases], f"{label}: {PHRASES_BERT_FILE}"
    )


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, _files in os.walk(root):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
