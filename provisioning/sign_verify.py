"""`kiosk sign` and `kiosk verify` for every signed thing: packs (folder or tar), base
packs, revocation lists.

Signing checks first, then signs the exact bytes it checked and never rewrites
them: a pack is signed only when its files match its manifest, a revocation
list only when it parses.  Verifying prints a summary a curator can read.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import tarfile
from pathlib import Path

from engines.durable_files import atomic_write_bytes
from provisioning.pack_format import MANIFEST, SIGNATURE, Limits
from provisioning.pack_reader import CheckedPack, check_pack, verify_pack
from provisioning.revocation import (
    RevocationList,
    read_revocations,
    signature_path,
    verify_revocations,
)
from provisioning.signing import TrustedKey, load_private_key, load_trust, sign_bytes
from provisioning.strict_json import PackFormatError

REVOCATION_SUFFIX = ".json"


def is_revocation_list(path: Path) -> bool:
    return path.suffix == REVOCATION_SUFFIX and not path.is_dir()


def sign_target(path: str | Path, key_file: str | Path, *, today: dt.date | None = None) -> str:
    """Sign a pack folder, a pack tar or a revocation list; returns what was done."""
    path = Path(path)
    key = load_private_key(key_file)
    if is_revocation_list(path):
        data, revocations = read_revocations(path)
        atomic_write_bytes(signature_path(path), sign_bytes(key, data))
        return f"signed {path} ({len(revocations.entries)} entries) -> {signature_path(path)}"
    checked = check_pack(path, None, today=today)
    signature = sign_bytes(key, checked.manifest_bytes)
    if checked.container == "folder":
        atomic_write_bytes(path / SIGNATURE, signature)
        target = path / SIGNATURE
    else:
        if checked.signed:
            raise PackFormatError(
                f"{path}: already signed; a tar is never rewritten: sign the pack folder "
                "and make the tar again"
            )
        _append_to_tar(path, f"{checked.manifest.folder_name}/{SIGNATURE}", signature)
        target = path
    m = checked.manifest
    return (
        f"signed {m.kind} pack {m.id} v{m.version} (manifest sha256 "
        f"{checked.manifest_sha256}) -> {target}"
    )


def _append_to_tar(path: Path, name: str, data: bytes) -> None:
    with tarfile.open(path, "a", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def verify_target(
    path: str | Path,
    trust_path: str | Path,
    *,
    today: dt.date | None = None,
    limits: Limits | None = None,
) -> str:
    """The summary of a trusted, valid pack or revocation list; PackFormatError otherwise."""
    path = Path(path)
    trust = load_trust(trust_path)
    if is_revocation_list(path):
        revocations, signer = verify_revocations(path, trust, limits)
        return revocation_summary(path, revocations, signer)
    return pack_summary(verify_pack(path, trust, today=today, limits=limits))


def revocation_summary(path: Path, revocations: RevocationList, signer: TrustedKey) -> str:
    lines = [
        f"{path.name}: a valid revocation list of {revocations.date}, signed by {signer.name} "
        f"(key {signer.fingerprint()})"
    ]
    lines += [f"  revokes {e.describe()}" for e in revocations.entries]
    return "\n".join(lines)


def pack_summary(checked: CheckedPack) -> str:
    m = checked.manifest
    signer = checked.signer
    by = f", signed by {signer.name} (key {signer.fingerprint()})" if signer else ", unsigned"
    lines = [
        f"{Path(checked.source).name}: a valid {m.kind} pack ({checked.container}){by}",
        f"  {m.id} v{m.version} \u201c{m.display_name_zh} / {m.display_name_en}\u201d, "
        f"needs firmware {m.min_firmware}",
        f"  {len(m.files)} files, {m.total_bytes / 1e6:.1f} MB, {MANIFEST} sha256 "
        f"{checked.manifest_sha256}",
    ]
    v = m.voice
    if v is None:
        lines.append(f"  carries {m.bert_folder}/")
        return "\n".join(lines)
    c = v.consent
    lines += [
        f"  GPT {v.gpt_version} + SoVITS {v.model_version}; reference ({v.reference.language}) "
        f"\u201c{v.reference.text}\u201d",
        f"  consent: {c.subject} ({c.status}), authorised by {c.authorised_by} ({c.relation}) "
        f"on {c.date}, valid until {c.valid_until}; text policy {c.text_policy}; exhibits "
        f"{', '.join(c.exhibits)}",
        f"  disclosure: {c.disclosure.zh} / {c.disclosure.en}",
        f"  {len(v.phrases)} phrase(s), {len(v.archival)} archival recording(s), portrait "
        f"{v.portrait or 'none'}, lexicon {v.lexicon or 'none'}, bio {'yes' if v.bio else 'none'}",
    ]
    return "\n".join(lines)
