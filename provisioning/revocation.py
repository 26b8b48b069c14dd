"""Revocation lists: signed JSON naming voices (and optionally versions) to remove.

A list is a `.json` file with a detached `<file>.sig` beside it, the raw
64-byte Ed25519 signature over the file's exact bytes, like a pack's
manifest.  A box that receives a list signed by a trusted key removes every
listed voice (all versions when `version` is null) and every file made from
it.  `kiosk revoke` adds one entry to a list (creating it if needed) and
signs the result.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engines.durable_files import atomic_write_bytes
from provisioning.pack_format import FORMAT_VERSION, ID_PATTERN, Limits
from provisioning.signing import TrustedKey, sign_bytes, signer_of
from provisioning.strict_json import DATE, Obj, PackFormatError, dumps_canonical, loads_strict

KIND = "revocation"
SIG_SUFFIX = ".sig"
MAX_ENTRIES = 10000


@dataclass(frozen=True)
class Revocation:
    id: str
    version: int | None
    """None: every version of the voice."""
    reason: str
    date: str

    def covers(self, voice_id: str, version: int) -> bool:
        return self.id == voice_id and (self.version is None or self.version == version)

    def describe(self) -> str:
        which = "every version" if self.version is None else f"v{self.version}"
        return f"{self.id} ({which}, {self.date}): {self.reason}"


@dataclass(frozen=True)
class RevocationList:
    date: str
    entries: tuple[Revocation, ...]

    def covers(self, voice_id: str, version: int) -> Revocation | None:
        return next((e for e in self.entries if e.covers(voice_id, version)), None)

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "date": self.date,
            "entries": [
                {"id": e.id, "version": e.version, "reason": e.reason, "date": e.date}
                for e in self.entries
            ],
        }
        return dumps_canonical(data)


def signature_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIG_SUFFIX)


def parse_revocations(data: bytes, source: str, limits: Limits | None = None) -> RevocationList:
    """Parse a list strictly: every key checked and named, nothing unknown."""
    limits = limits or Limits()
    if len(data) > limits.max_manifest_bytes:
        raise PackFormatError(f"{source}: larger than {limits.max_manifest_bytes} bytes")
    raw = loads_strict(data, source)
    if isinstance(raw, dict) and raw.get("kind") != KIND:
        raise PackFormatError(
            f"{source}: kind {raw.get('kind')!r} is not {KIND!r}; this is not a revocation list"
        )
    top = Obj(raw, "", ("format_version", "kind", "date", "entries"), source=source)
    if top.int("format_version") != FORMAT_VERSION:
        top.fail("format_version", f"this firmware reads format {FORMAT_VERSION} only")
    date = _date(top, "date")
    entries = []
    for i, item in enumerate(top.list("entries", empty=False, max_items=MAX_ENTRIES)):
        e = top.child(item, f"entries[{i}]", ("id", "version", "reason", "date"))
        entries.append(
            Revocation(
                id=e.str("id", pattern=ID_PATTERN),
                version=e.opt_int("version", 1, 10**9),
                reason=e.str("reason", max_len=2000),
                date=_date(e, "date"),
            )
        )
    return RevocationList(date, tuple(entries))


def _date(o: Obj, key: str) -> str:
    text = o.str(key, pattern=DATE)
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        o.fail(key, f"{text!r} is not a calendar date (YYYY-MM-DD)")
    return text


def read_revocations(
    path: str | Path, limits: Limits | None = None
) -> tuple[bytes, RevocationList]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackFormatError(f"{path}: cannot read the revocation list ({exc.strerror})") from exc
    return data, parse_revocations(data, str(path), limits)


def verify_revocations(
    path: str | Path, trust: list[TrustedKey], limits: Limits | None = None
) -> tuple[RevocationList, TrustedKey]:
    """The list, if its `.sig` is a trusted key's signature over its exact bytes."""
    path = Path(path)
    sig = signature_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackFormatError(f"{path}: cannot read the revocation list ({exc.strerror})") from exc
    if not sig.is_file() or sig.is_symlink():
        raise PackFormatError(
            f"{path}: not signed ({sig.name} is missing); a revocation list counts only when "
            "signed: `kiosk sign FILE --key NAME.key`"
        )
    signer = signer_of(data, sig.read_bytes()[:128], trust, str(path))
    return parse_revocations(data, str(path), limits), signer


def add_revocation(
    path: str | Path,
    voice_id: str,
    version: int | None,
    reason: str,
    key: Ed25519PrivateKey,
    today: dt.date | None = None,
) -> RevocationList:
    """Add one entry to the list at `path` (made if absent), write it, and sign it."""
    path = Path(path)
    today_text = (today or dt.date.today()).isoformat()
    entry_obj = Obj(
        {"id": voice_id, "version": version, "reason": reason, "date": today_text},
        "",
        ("id", "version", "reason", "date"),
    )
    entry = Revocation(
        id=entry_obj.str("id", pattern=ID_PATTERN),
        version=entry_obj.opt_int("version", 1, 10**9),
        reason=entry_obj.str("reason", max_len=2000),
        date=today_text,
    )
    entries: tuple[Revocation, ...] = ()
    if path.exists():
        _, existing = read_revocations(path)
        entries = tuple(
            e for e in existing.entries if (e.id, e.version) != (entry.id, entry.version)
        )
    revocations = RevocationList(today_text, (*entries, entry))
    data = revocations.to_bytes()
    atomic_write_bytes(path, data)
    atomic_write_bytes(signature_path(path), sign_bytes(key, data))
    return revocations
