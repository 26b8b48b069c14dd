"""Provenance marks: a C2PA manifest in every audio file the box makes, signed by the box.

Why: the EU AI Act (Art. 50(2)) asks that synthetic audio be marked as such in
a machine-readable way.  The visitor hears the consent's disclosure; a file
copied off the box carries the mark itself: a C2PA manifest (via
`c2pa-python`) whose `c2pa.actions` say `c2pa.created` with IPTC
digitalSourceType `trainedAlgorithmicMedia`, plus this project's assertion
(`ASSERTION_LABEL`) naming the voice, its version, the phrase and the consent
document's SHA-256.

Archival recordings are marked too, as *not* synthetic: `c2pa.opened` of the
pack's original file (a parent ingredient) and `c2pa.edited` (the loudness
gain), with the assertion's `kind` "original recording".  No digitalSourceType
is claimed for them: the box cannot vouch for how a 1958 tape was captured,
only that these samples are that recording, re-levelled.  Marking both kinds
means a file without a valid mark is suspect either way, and a synthetic file
relabelled "original" fails the signature check.

Format: FLAC.  c2pa-python 0.38 embeds manifests in both FLAC and WAV (checked
by signing, reading back and tampering with each); FLAC is lossless at about
half the size of WAV for speech, and its Vorbis comments carry the readable
metadata next to the manifest.

The signing certificate: the C2PA SDK wants a certificate chain, not a bare
key, and refuses a self-signed end-entity certificate.  So at first start the
box makes itself a small CA and one Ed25519 end-entity certificate (digital
signature key usage, e-mail protection / document signing extended key usage,
key identifiers), keeps the end-entity key (mode 0600) and the chain in
`<state>/provenance/`, and throws the CA's private key away: nothing else is
ever issued, so there is nothing to steal.  The box has no network, so no
time-stamp authority: the certificates are valid for decades, since a reader
checks the signature against the certificate's validity at reading time.
Readers that trust the box's CA (`box-ca.pem`, as `kiosk provenance` on the
box does) report "Trusted"; elsewhere a sound file reads "Valid".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from engines.durable_files import fsync_dir

PROVENANCE_DIR = "provenance"
KEY_FILE = "box.key"
CHAIN_FILE = "box-chain.pem"
CA_FILE = "box-ca.pem"
#: The file format every cached phrase is stored in (see the module docstring).
AUDIO_MIME = "audio/flac"
MIME_BY_SUFFIX = {".flac": "audio/flac", ".wav": "audio/wav"}
#: This project's C2PA assertion (reverse-domain label, as the spec asks).
ASSERTION_LABEL = "org.heritage-voice-kiosk.voice"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
SYNTHETIC = "AI-generated"
ORIGINAL = "original recording"
#: id-kp-documentSigning (RFC 9336), which C2PA's trust list accepts beside e-mail protection.
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
CA_YEARS = 40
SIGNER_YEARS = 30


class ProvenanceError(ValueError):
    """A file without a readable or valid provenance mark, or a signer that cannot be made."""


@dataclass(frozen=True)
class Mark:
    """What one file's manifest says (the custom assertion's fields)."""

    kind: str
    """SYNTHETIC ("AI-generated") or ORIGINAL ("original recording")."""
    voice: str
    """Voice id."""
    version: int
    """Voice version (the pack's)."""
    item: str
    """Phrase id, or the archival file's stem."""
    text: str
    """The phrase's text, or the archival recording's title."""
    consent_sha256: str
    """SHA-256 of the signed consent document (the pack's consent record)."""
    manifest_sha256: str
    """SHA-256 of the voice pack's manifest the audio was made from."""
    settings: Mapping[str, Any] | None = None
    """Synthesis settings (synthetic) or the normalisation gain (archival)."""

    def assertion(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "voice_id": self.voice,
            "voice_version": self.version,
            "item_id": self.item,
            "text": self.text,
            "consent_document_sha256": self.consent_sha256,
            "pack_manifest_sha256": self.manifest_sha256,
            "settings": dict(self.settings or {}),
        }


class BoxSigner:
    """The box's C2PA signing identity, from `<state>/provenance/` (made on first use)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        try:
            self.chain_pem = (folder / CHAIN_FILE).read_bytes()
            self.key_pem = (folder / KEY_FILE).read_bytes()
            self.ca_pem = (folder / CA_FILE).read_bytes()
        except OSError as exc:
            raise ProvenanceError(
                f"{folder}: the box's signing certificate is missing or unreadable ({exc}); "
                "remove the folder and run the build again to make a new one"
            ) from exc
        self.folder = folder
        self.fingerprint = (
            x509.load_pem_x509_certificates(self.chain_pem)[0].fingerprint(_sha256()).hex()
        )

    @classmethod
    def ensure(cls, folder: str | Path, name: str | None = None) -> BoxSigner:
        """The signer in `folder`, making the CA, certificate and key there the first time."""
        folder = Path(folder)
        if not (folder / CHAIN_FILE).exists():
            make_box_certificate(folder, name)
        return cls(folder)

    def _signer(self) -> c2pa.Signer:
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ED25519, self.chain_pem, self.key_pem, None)
        return c2pa.Signer.from_info(info)

    def sign(
        self,
        source: Path,
        dest: Path,
        mark: Mark,
        *,
        parent: Path | None = None,
        software: str = "heritage-voice-kiosk",
        software_version: str = "",
    ) -> None:
        """Write `dest`: `source` (FLAC or WAV) with a C2PA manifest for `mark` embedded.

        `parent` (archival only) is the original recording the file was levelled from.
        """
        mime = _mime(source)
        if mark.kind == SYNTHETIC:
            actions = [
                {
                    "action": "c2pa.created",
                    "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                    "softwareAgent": {"name": software, "version": software_version},
                    "description": "speech synthesised with a cloned voice (GPT-SoVITS)",
                }
            ]
        elif mark.kind == ORIGINAL:
            if parent is None:
                raise ProvenanceError("an original recording is marked with its parent file")
            actions = [
                {"action": "c2pa.opened", "parameters": {"ingredientIds": ["original"]}},
                {
                    "action": "c2pa.edited",
                    "description": "loudness normalised (ITU-R BS.1770), true-peak limited",
                    "softwareAgent": {"name": software, "version": software_version},
                },
            ]
        else:
            raise ProvenanceError(f"unknown mark kind {mark.kind!r}")
        manifest = {
            "claim_generator_info": [{"name": software, "version": software_version or "0"}],
            "title": dest.name,
            "format": mime,
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": actions}},
                {"label": ASSERTION_LABEL, "data": mark.assertion()},
            ],
        }
        try:
            with c2pa.Builder(manifest) as builder, self._signer() as signer:
                if parent is not None:
                    with open(parent, "rb") as original:
                        builder.add_ingredient(
                            {"title": parent.name, "relationship": "parentOf",
                             "label": "original"},
                            _mime(parent),
                            original,
                        )  # fmt: skip
                with open(source, "rb") as src, open(dest, "w+b") as dst:
                    builder.sign(signer, mime, src, dst)
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"{source}: C2PA signing failed ({exc})") from exc


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _mime(path: Path) -> str:
    mime = MIME_BY_SUFFIX.get(path.suffix.lower())
    if mime is None:
        raise ProvenanceError(f"{path}: only FLAC and WAV files are marked here")
    return mime


def make_box_certificate(folder: str | Path, name: str | None = None) -> Path:
    """Make the CA, the end-entity certificate and key in `folder` (atomically, once).

    Written into a sibling temporary folder and renamed into place, so a power
    cut leaves either no identity or a whole one; if another process won the
    race, its identity is kept.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    label = name or socket.gethostname() or "kiosk"
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    ca_key = ed25519.Ed25519PrivateKey.generate()
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Heritage Voice Kiosk"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{label} provenance CA"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, None)
    )
    key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Heritage Voice Kiosk"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{label} audio signer"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365 * SIGNER_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, None)
    )
    pem = serialization.Encoding.PEM
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        key_path = tmp / KEY_FILE
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        (tmp / CHAIN_FILE).write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
        (tmp / CA_FILE).write_bytes(ca.public_bytes(pem))
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(tmp)
        os.chmod(tmp, 0o700)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / CHAIN_FILE).exists():
                raise
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- reading ---------------------------------------------------------------------------


def read_provenance(path: str | Path, trust_anchors: bytes | None = None) -> dict[str, Any]:
    """The file's C2PA mark: validation state, actions, source type and our assertion.

    `trust_anchors` (PEM; on the box, its own `box-ca.pem`) turns "Valid" into
    "Trusted" for files this box signed.  Raises ProvenanceError for a file
    with no manifest at all; a damaged file reads back with state "Invalid" and
    the failures listed.
    """
    path = Path(path)
    mime = _mime(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"{path}: cannot be read ({exc})") from exc
    context = None
    if trust_anchors:
        context = c2pa.Context.from_dict(
            {"verify": {"verify_trust": True}, "trust": {"trust_anchors": trust_anchors.decode()}}
        )
    try:
        reader = (
            c2pa.Reader(mime, io.BytesIO(data), context=context)
            if context is not None
            else c2pa.Reader(mime, io.BytesIO(data))
        )
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            raise ProvenanceError(
                f"{path}: carries no provenance mark (no C2PA manifest): it was not made "
                "by the kiosk's build step, or its mark was stripped"
            ) from exc
        raise ProvenanceError(f"{path}: the C2PA manifest cannot be read ({exc})") from exc
    with reader:
        manifest = reader.get_active_manifest() or {}
        state = reader.get_validation_state() or "Unknown"
        results = reader.get_validation_results() or {}
    failures = [
        {"code": f.get("code"), "explanation": f.get("explanation")}
        for f in (results.get("activeManifest") or {}).get("failure", [])
    ]
    assertions = {a.get("label"): a.get("data") for a in manifest.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get(
        "actions", []
    )
    ours = assertions.get(ASSERTION_LABEL) or {}
    signature = manifest.get("signature_info") or {}
    return {
        "file": str(path),
        "validation_state": state,
        "failures": failures,
        "kind": ours.get("kind"),
        "digital_source_type": next(
            (a.get("digitalSourceType") for a in actions if a.get("digitalSourceType")), None
        ),
        "actions": [a.get("action") for a in actions],
        "voice_id": ours.get("voice_id"),
        "voice_version": ours.get("voice_version"),
        "item_id": ours.get("item_id"),
        "text": ours.get("text"),
        "consent_document_sha256": ours.get("consent_document_sha256"),
        "pack_manifest_sha256": ours.get("pack_manifest_sha256"),
        "settings": ours.get("settings"),
        "signer": {
            "common_name": signature.get("common_name"),
            "issuer": signature.get("issuer"),
            "alg": signature.get("alg"),
            "time": signature.get("time"),
        },
        "claim_generator": manifest.get("claim_generator_info"),
    }


def is_sound(record: Mapping[str, Any]) -> bool:
    """The mark is intact: "Valid" or "Trusted", and not a damaged asset or claim."""
    if record.get("validation_state") not in ("Valid", "Trusted"):
        return False
    return not any(
        str(f.get("code")) != "signingCredential.untrusted" for f in record.get("failures", [])
    )


def box_trust_anchors(folder: str | Path) -> bytes | None:
    """The box's CA (PEM), if this box has made its identity."""
    with contextlib.suppress(OSError):
        return (Path(folder) / CA_FILE).read_bytes()
    return None


def describe(record: Mapping[str, Any]) -> str:
    """A few lines for a technician (`kiosk provenance FILE`)."""
    lines = [
        f"{record['file']}: C2PA manifest, {record['validation_state']}",
        f"  kind: {record.get('kind') or 'not a kiosk mark'}"
        + (f" ({record['digital_source_type']})" if record.get("digital_source_type") else ""),
        f"  voice: {record.get('voice_id')} v{record.get('voice_version')}, "
        f"item {record.get('item_id')!r}: {record.get('text')}",
        f"  consent document sha256: {record.get('consent_document_sha256')}",
        f"  signed by: {record['signer'].get('common_name')} ({record['signer'].get('issuer')}, "
        f"{record['signer'].get('alg')})",
    ]
    for failure in record.get("failures", []):
        lines.append(f"  problem: {failure['code']}: {failure['explanation']}")
    return "\n".join(lines)


__all__ = [
    "ASSERTION_LABEL",
    "AUDIO_MIME",
    "ORIGINAL",
    "PROVENANCE_DIR",
    "SYNTHETIC",
    "TRAINED_ALGORITHMIC_MEDIA",
    "BoxSigner",
    "Mark",
    "ProvenanceError",
    "box_trust_anchors",
    "describe",
    "is_sound",
    "make_box_certificate",
    "read_provenance",
]
