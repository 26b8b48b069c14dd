"""Provenance marks: the box's own certificate, C2PA manifests in FLAC/WAV, reading them back.

Real parts only: certificates made with `cryptography`, manifests signed and
validated by the C2PA SDK (`c2pa-python`), files written by libsndfile.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID
from kiosk_build import provenance
from kiosk_build.provenance import ORIGINAL, SYNTHETIC, BoxSigner, Mark, ProvenanceError

from appliance.cli import main

CONSENT = "ab" * 32
PACK = "cd" * 32


def tone(path: Path, seconds: float = 1.0, rate: int = 32000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate,
                    subtype="PCM_24" if path.suffix == ".flac" else "PCM_16")  # fmt: skip
    return path


def synthetic_mark(item: str = "welcome") -> Mark:
    return Mark(SYNTHETIC, "chen-ama", 3, item, "欢迎来到博物馆。", CONSENT, PACK, {"seed": 3})


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def signer(state: Path) -> BoxSigner:
    return BoxSigner.ensure(state / provenance.PROVENANCE_DIR, name="test-box")


def test_box_certificate_is_made_once_with_the_extensions_c2pa_wants(state, signer) -> None:
    folder = state / provenance.PROVENANCE_DIR
    assert os.stat(folder / provenance.KEY_FILE).st_mode & 0o777 == 0o600
    ee, ca = x509.load_pem_x509_certificates((folder / provenance.CHAIN_FILE).read_bytes())
    assert ca == x509.load_pem_x509_certificate((folder / provenance.CA_FILE).read_bytes())
    assert isinstance(ee.public_key(), ed25519.Ed25519PublicKey)
    assert ee.issuer == ca.subject and ee.subject != ee.issuer  # not self-signed
    ee.verify_directly_issued_by(ca)
    assert ee.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ee.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = ee.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
    ee.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # the CA's private key is not kept; a second start reuses the identity
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [provenance.KEY_FILE, provenance.CHAIN_FILE, provenance.CA_FILE]
    )
    assert BoxSigner.ensure(folder).fingerprint == signer.fingerprint


@pytest.mark.parametrize("suffix", [".flac", ".wav"])
def test_synthetic_mark_round_trip(suffix, state, signer, tmp_path) -> None:
    plain = tone(tmp_path / f"plain{suffix}")
    marked = tmp_path / f"marked{suffix}"
    signer.sign(plain, marked, synthetic_mark())
    # still an ordinary audio file with the same samples
    a, _ = soundfile.read(str(plain))
    b, rate = soundfile.read(str(marked))
    assert rate == 32000 and np.array_equal(a, b)
    anchors = provenance.box_trust_anchors(state / provenance.PROVENANCE_DIR)
    record = provenance.read_provenance(marked, anchors)
    assert record["validation_state"] == "Trusted" and record["failures"] == []
    assert record["digital_source_type"] == provenance.TRAINED_ALGORITHMIC_MEDIA
    assert record["actions"] == ["c2pa.created"]
    assert (record["kind"], record["voice_id"], record["voice_version"], record["item_id"]) == (
        "AI-generated", "chen-ama", 3, "welcome")  # fmt: skip
    assert record["consent_document_sha256"] == CONSENT
    assert record["signer"]["alg"] == "Ed25519"
    # without the box's CA: intact but not trusted
    elsewhere = provenance.read_provenance(marked)
    assert elsewhere["validation_state"] == "Valid" and provenance.is_sound(elsewhere)


def test_archival_mark_names_its_parent_and_claims_no_synthesis(state, signer, tmp_path):
    original = tone(tmp_path / "interview.wav")
    levelled = tone(tmp_path / "levelled.flac")
    marked = tmp_path / "archival.flac"
    mark = Mark(ORIGINAL, "chen-ama", 3, "interview", "Interview, 1987", CONSENT, PACK,
                {"gain_db": 4.2})  # fmt: skip
    signer.sign(levelled, marked, mark, parent=original)
    record = provenance.read_provenance(
        marked, provenance.box_trust_anchors(state / provenance.PROVENANCE_DIR)
    )
    assert record["validation_state"] == "Trusted"
    assert record["kind"] == "original recording"
    assert record["actions"] == ["c2pa.opened", "c2pa.edited"]
    assert record["digital_source_type"] is None
    with pytest.raises(ProvenanceError, match="parent"):
        signer.sign(levelled, tmp_path / "x.flac", mark)


def test_kiosk_provenance_reads_fails_clearly_and_sees_tampering(state, signer, tmp_path, capsys):
    marked = tmp_path / "welcome.flac"
    signer.sign(tone(tmp_path / "p.flac", seconds=2.0), marked, synthetic_mark())
    capsys.readouterr()
    assert main(["provenance", str(marked), "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert "Trusted" in out and "AI-generated" in out and "trainedAlgorithmicMedia" in out
    assert main(["provenance", str(marked), "--json", "--state", str(state)]) == 0
    assert json.loads(capsys.readouterr().out)["voice_id"] == "chen-ama"

    # an unmarked file: an error that says what it means
    plain = tone(tmp_path / "plain.flac")
    assert main(["provenance", str(plain), "--state", str(state)]) == 2
    assert "no provenance mark" in capsys.readouterr().err

    # one audio byte changed: Invalid, with the hash failure named
    tampered = tmp_path / "tampered.flac"
    shutil.copyfile(marked, tampered)
    data = bytearray(tampered.read_bytes())
    data[-2000] ^= 0x01
    tampered.write_bytes(bytes(data))
    assert main(["provenance", str(tampered), "--state", str(state)]) == 1
    out = capsys.readouterr().out
    assert "Invalid" in out and "mismatch" in out

    assert not provenance.is_sound(provenance.read_provenance(tampered))

    # the claim relabelled inside the manifest ("AI-generated" -> "AI-GENERATED"): Invalid
    relabelled = tmp_path / "relabelled.flac"
    data = marked.read_bytes()
    assert data.count(b"AI-generated") == 1
    relabelled.write_bytes(data.replace(b"AI-generated", b"AI-GENERATED"))
    assert main(["provenance", str(relabelled), "--state", str(state)]) == 1
    assert "Invalid" in capsys.readouterr().out


def test_other_formats_are_refused(signer, tmp_path) -> None:
    odd = tmp_path / "clip.ogg"
    odd.write_bytes(b"OggS")
    with pytest.raises(ProvenanceError, match="FLAC and WAV"):
        signer.sign(odd, tmp_path / "out.ogg", synthetic_mark())
    with pytest.raises(ProvenanceError, match="FLAC and WAV"):
        provenance.read_provenance(odd)


def test_a_missing_identity_is_reported(tmp_path) -> None:
    with pytest.raises(ProvenanceError, match="missing or unreadable"):
        BoxSigner(tmp_path / "nothing")
