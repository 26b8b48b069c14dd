"""Ed25519 keys and detached signatures (the `cryptography` package).

A signing key is a PEM file holding a PKCS#8 private key, readable by its
owner only (mode 0600); its public half is a PEM SubjectPublicKeyInfo file.
A signature is the raw 64 bytes Ed25519 makes over the exact bytes of the
signed file: no canonicalisation, so what was reviewed is what is trusted.
A box trusts a set of public keys (a `.pub` file or a folder of them); a key
is named by its file name without `.pub`.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engines.durable_files import atomic_write_bytes
from provisioning.pack_format import SIGNATURE_BYTES
from provisioning.strict_json import PackFormatError

KEY_SUFFIX = ".key"
PUB_SUFFIX = ".pub"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY_FILE = 16 << 10


@dataclass(frozen=True)
class TrustedKey:
    name: str
    key: Ed25519PublicKey

    def fingerprint(self) -> str:
        """First 16 hex digits of SHA-256 over the raw public key, for summaries and logs."""
        raw = self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(name: str, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `out_dir/NAME.key` (0600, created exclusively) and `out_dir/NAME.pub`."""
    if not KEY_NAME.fullmatch(name):
        raise PackFormatError(
            f"key name {name!r}: use letters, digits, '.', '_' and '-' (e.g. museum-2026)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / f"{name}{KEY_SUFFIX}", out / f"{name}{PUB_SUFFIX}"
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise PackFormatError(f"{path} exists; keys are never overwritten (choose a new NAME)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write_bytes(pub_path, public)
    return key_path, pub_path


def _read_small(path: Path, what: str) -> bytes:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PackFormatError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise PackFormatError(f"{path}: the {what} is not a regular file")
    if st.st_size > MAX_KEY_FILE:
        raise PackFormatError(f"{path}: too large for a {what}")
    return path.read_bytes()


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The signing key; refused when others may read it (as ssh does)."""
    path = Path(path)
    data = _read_small(path, "private key")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise PackFormatError(
            f"{path}: readable by others (mode {mode:04o}); run `chmod 600 {path.name}`"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PackFormatError(
            f"{path}: not an unencrypted PEM PKCS#8 private key ({exc}); "
            "make one with `kiosk keygen NAME --out DIR`"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PackFormatError(f"{path}: a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> TrustedKey:
    path = Path(path)
    data = _read_small(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PackFormatError(f"{path}: not a PEM SubjectPublicKeyInfo public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise PackFormatError(f"{path}: a {type(key).__name__}, not an Ed25519 key")
    return TrustedKey(path.name.removesuffix(PUB_SUFFIX), key)


def load_trust(path: str | Path) -> list[TrustedKey]:
    """A `.pub` file, or every `*.pub` regular file of a folder (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == PUB_SUFFIX and not p.is_symlink())
        keys = [load_public_key(p) for p in files if p.is_file()]
        if not keys:
            raise PackFormatError(f"{path}: no *.pub key files to trust")
        return keys
    if not path.exists():
        raise PackFormatError(f"{path}: no such key file or folder")
    return [load_public_key(path)]


def sign_bytes(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def signer_of(data: bytes, signature: bytes, trust: list[TrustedKey], what: str) -> TrustedKey:
    """The trusted key that made `signature` over `data`, or a refusal saying why."""
    if len(signature) != SIGNATURE_BYTES:
        raise PackFormatError(
            f"{what}: the signature is {len(signature)} bytes, not {SIGNATURE_BYTES} "
            "(a raw Ed25519 signature); sign it again with `kiosk sign`"
        )
    for trusted in trust:
        try:
            trusted.key.verify(signature, data)
        except InvalidSignature:
            continue
        return trusted
    names = ", ".join(t.name for t in trust)
    raise PackFormatError(
        f"{what}: the signature is not valid for any trusted key ({names}): the file was "
        "changed after signing, or it was signed by a key this box does not trust"
    )
