"""Voice packs: `kiosk pack` → `sign` → `verify` on real files, and the inputs it must refuse.

One voice pack is made per module, by `kiosk pack` on official-format files
(a 2-layer GPT v2 and a full SoVITS v2 with formula weights, written as the
trainer writes them) with tiny Hugging Face HuBERT and BERT folders; keys are
real Ed25519 keys and tars are real tar files.  A test that damages a pack
works on a copy, or on a pack holding only a (re-signed) manifest when the
refusal comes before any payload is read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from appliance.cli import main
from devtools import sample_packs
from devtools.demo_voice import reference_tone
from devtools.sample_packs import PHRASES, REF_TEXT
from engines.voice import Voice
from engines.voice_folder import load_prompt
from engines.wav_io import write_wav
from provisioning.pack_format import MANIFEST, SIGNATURE, Limits, parse_manifest
from provisioning.pack_reader import check_pack, verify_pack
from provisioning.pack_to_voice import write_voice_folder_from_pack
from provisioning.packing import tar_pack
from provisioning.phrase_features import read_phrase_features
from provisioning.revocation import verify_revocations
from provisioning.signing import load_private_key, load_trust, sign_bytes
from provisioning.strict_json import PackFormatError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The curated consent of the kit (tests here and in test_provision edit it).
CONSENT = sample_packs.consent_text("curated")


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Official-format voice files, helper models and the curator's input files."""
    return sample_packs.write_kit(tmp_path_factory.mktemp("packs")).as_dict()


def pack_args(kit: dict[str, Path], out: Path, **changes: str | None) -> list[str]:
    inputs = kit["inputs"]
    flags: dict[str, str | None] = {
        "--id": "chen-ama",
        "--version": "1",
        "--gpt": str(kit["gpt"]),
        "--sovits": str(kit["sovits"]),
        "--ref": str(kit["ref"]),
        "--ref-text": REF_TEXT,
        "--ref-lang": "zh",
        "--phrases": str(inputs / "phrases.toml"),
        "--consent": str(inputs / "consent.toml"),
        "--portrait": str(inputs / "portrait.png"),
        "--bio": str(inputs / "bio.toml"),
        "--archival": str(inputs / "archival"),
        "--lexicon": str(inputs / "lexicon.txt"),
        "--pretrained": str(kit["pretrained"]),
        "--out": str(out),
    }
    for key, value in changes.items():
        flags["--" + key.replace("_", "-")] = value
    args = ["pack"]
    for flag, value in flags.items():
        if value is not None:
            args += [flag, value]
    return args


@pytest.fixture(scope="module")
def keys(kit: dict[str, Path]) -> dict[str, Path]:
    out = kit["root"] / "keys"
    assert main(["keygen", "museum", "--out", str(out)]) == 0
    assert main(["keygen", "stranger", "--out", str(out / "other")]) == 0
    return {
        "key": out / "museum.key",
        "pub": out / "museum.pub",
        "trust": out,  # a folder of *.pub: museum.pub only (stranger's lies one level down)
        "stranger": out / "other" / "stranger.key",
    }


@pytest.fixture(scope="module")
def made(kit: dict[str, Path], keys: dict[str, Path]) -> dict[str, object]:
    """The module's one pack: `kiosk pack` output (captured), signed by the museum key."""
    out = kit["root"] / "out"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(pack_args(kit, out))
    assert code == 0, buffer.getvalue()
    pack = out / "chen-ama-1.kvp"
    unsigned_listing = sorted(p.name for p in pack.iterdir())
    manifest_before = (pack / MANIFEST).read_bytes()
    assert main(["sign", str(pack), "--key", str(keys["key"])]) == 0
    return {
        "pack": pack,
        "log": buffer.getvalue(),
        "unsigned_listing": unsigned_listing,
        "manifest_before": manifest_before,
    }


@pytest.fixture
def copy_of(made: dict[str, object], tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """Copies of the signed pack (removed after the test: each is ~90 MB)."""
    copies: list[Path] = []

    def make() -> Path:
        target = tmp_path / f"c{len(copies)}" / "chen-ama-1.kvp"
        shutil.copytree(made["pack"], target)  # type: ignore[arg-type]
        copies.append(target.parent)
        return target

    yield make
    for folder in copies:
        shutil.rmtree(folder, ignore_errors=True)


def resign(pack: Path, keys: dict[str, Path]) -> None:
    """Sign the manifest as it now is with the trusted key, so deeper checks are reached."""
    data = (pack / MANIFEST).read_bytes()
    (pack / SIGNATURE).write_bytes(sign_bytes(load_private_key(keys["key"]), data))


def manifest_only(tmp_path: Path, data: bytes, keys: dict[str, Path], name: str) -> Path:
    """A pack folder holding just a manifest and a trusted signature over it."""
    pack = tmp_path / name
    pack.mkdir(parents=True)
    (pack / MANIFEST).write_bytes(data)
    resign(pack, keys)
    return pack


def good_manifest(made: dict[str, object]) -> dict:
    return json.loads((made["pack"] / MANIFEST).read_bytes())  # type: ignore[operator]


def refused(pack: Path, keys: dict[str, Path], **kwargs: object) -> str:
    with pytest.raises(PackFormatError) as info:
        verify_pack(pack, load_trust(keys["trust"]), **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --- the round trip ------------------------------------------------------------------------


def test_pack_sign_verify_round_trip(made, keys, capsys) -> None:
    pack: Path = made["pack"]  # type: ignore[assignment]
    log: str = made["log"]  # type: ignore[assignment]
    for step in range(1, 8):
        assert f"[{step}/7]" in log
    assert "reference clip" in log and "4.0 s, 32000 Hz" in log
    uncovered = log.split("not in any dictionary or the lexicon:")[1].split("\n")[0].lower()
    assert "zorb" in uncovered and "nguyen" not in uncovered  # Nguyen: in the lexicon
    assert "manifest.json.sig" not in made["unsigned_listing"]  # type: ignore[operator]
    # sign never rewrites the manifest
    assert (pack / MANIFEST).read_bytes() == made["manifest_before"]
    assert len((pack / SIGNATURE).read_bytes()) == 64

    assert main(["verify", str(pack), "--trust", str(keys["pub"])]) == 0
    out = capsys.readouterr().out
    assert "a valid voice pack (folder), signed by museum" in out
    assert "chen-ama v1" in out and "text policy curated" in out and "3 phrase(s)" in out

    checked = verify_pack(pack, load_trust(keys["trust"]))
    m = checked.manifest
    assert (m.kind, m.id, m.version, m.display_name_en) == ("voice", "chen-ama", 1, "Chen Ama")
    v = m.voice
    assert v is not None
    assert (v.model_version, v.gpt_version, v.portrait, v.lexicon) == (
        "v2",
        "v2",
        "portrait.png",
        "lexicon.txt",
    )
    assert {a.title for a in v.archival} == {"山歌 1958", "interview"}
    assert {a.path for a in v.archival} == {"archival/recording-02.wav", "archival/interview.wav"}
    paths = {f.path for f in m.files}
    assert {"gpt.ckpt", "sovits.pth", "prompt.npz", "phrases_bert.npz", "reference.wav"} <= paths
    # the official files are carried unchanged
    for name, src in (("gpt.ckpt", "chen-e10.ckpt"), ("sovits.pth", "chen_e8_s80.pth")):
        assert (pack / name).read_bytes() == (made["pack"].parents[1] / src).read_bytes()  # type: ignore[union-attr]
    # the manifest is canonical: parsing and writing it again gives the same bytes
    assert m.to_bytes() == (pack / MANIFEST).read_bytes()


def test_phrase_features_are_the_voices_own(made, kit) -> None:
    """phrases_bert.npz holds what the voice's frontend and BERT give for each phrase."""
    pack: Path = made["pack"]  # type: ignore[assignment]
    m = parse_manifest((pack / MANIFEST).read_bytes())
    assert m.voice is not None
    features = read_phrase_features(
        (pack / "phrases_bert.npz").read_bytes(), [p.id for p in m.voice.phrases], "x"
    )
    from engines.features import BertFeaturizer
    from engines.text.frontend import TextFrontend
    from engines.text.lexicon import Lexicon
    from engines.voice_prompt import segment_bert

    frontend = TextFrontend("v2", Lexicon.from_file(pack / "lexicon.txt"))
    bert = BertFeaturizer.from_folder(kit["pretrained"] / "chinese-roberta-wwm-ext-large")
    song = next(p for p in m.voice.phrases if p.id == "song")
    segments = frontend.segments(song.text, song.lang, m.voice.cut)
    assert len(features["song"]) == len(segments) == 2  # cut5: split at the comma
    for (ids, feats), segment in zip(features["song"], segments, strict=True):
        assert ids.tolist() == segment.phone_ids
        np.testing.assert_allclose(feats, segment_bert(segment, bert).numpy(), atol=1e-5)
    assert np.abs(features["song"][0][1]).max() > 0  # real features, not zeros
    ids, feats = features["hello-en"][0]
    assert feats.shape == (1024, ids.size) and not feats.any()  # English: zeros, as the engine


def test_voice_folder_from_a_verified_tar_without_helper_models(made, keys, tmp_path) -> None:
    """tar → verify while copying → voice folder → the voice speaks with no HuBERT/BERT/SV."""
    tar = tar_pack(made["pack"], tmp_path / "chen-ama-1.tar")  # type: ignore[arg-type]
    copy = tmp_path / "staged"
    checked = verify_pack(tar, load_trust(keys["pub"]), copy_to=copy)
    assert checked.container == "tar"
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        p.name
        for p in made["pack"].iterdir()  # type: ignore[union-attr]
    )
    folder = write_voice_folder_from_pack(copy, checked.manifest, tmp_path / "voices" / "chen")
    original = load_prompt(copy / "prompt.npz")
    with Voice.load(folder, backend="torch-eager") as voice:
        assert torch.equal(voice.prompt.semantic_tokens, original.semantic_tokens)
        options = voice.options(top_k=1)
        audio = voice.synthesize(
            "Hello.", language="en", options=replace(options, max_new_tokens=4)
        )
    assert audio.samples.size > 0 and np.isfinite(audio.samples).all()
    shutil.rmtree(copy)
    shutil.rmtree(folder)


def test_tar_sign_appends_the_signature_and_verifies(made, keys, tmp_path, capsys) -> None:
    unsigned = tmp_path / "unsigned" / "chen-ama-1.kvp"
    shutil.copytree(made["pack"], unsigned)  # type: ignore[arg-type]
    (unsigned / SIGNATURE).unlink()
    tar = tar_pack(unsigned, tmp_path / "chen-ama-1.tar")
    shutil.rmtree(unsigned.parent)
    assert main(["verify", str(tar), "--trust", str(keys["trust"])]) == 2
    assert "not signed" in capsys.readouterr().err
    assert main(["sign", str(tar), "--key", str(keys["key"])]) == 0
    assert main(["verify", str(tar), "--trust", str(keys["trust"])]) == 0
    assert "a valid voice pack (tar), signed by museum" in capsys.readouterr().out
    assert main(["sign", str(tar), "--key", str(keys["key"])]) == 2
    assert "already signed" in capsys.readouterr().err
    tar.unlink()


def test_keygen_writes_pkcs8_0600_and_spki(keys) -> None:
    key, pub = keys["key"], keys["pub"]
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    assert main(["keygen", "museum", "--out", str(key.parent)]) == 2  # never overwritten


def test_revocation_list_round_trip(made, keys, tmp_path, capsys) -> None:
    listing = tmp_path / "revocations.json"
    args = ["revoke", "chen-ama", "--reason", "family withdrew consent", "--key", str(keys["key"])]
    assert main([*args, "--out", str(listing)]) == 0
    assert main([*args[:2], "--version", "2", *args[2:], "--out", str(listing)]) == 0
    assert main(["verify", str(listing), "--trust", str(keys["trust"])]) == 0
    out = capsys.readouterr().out
    assert "a valid revocation list" in out and "chen-ama (every version" in out
    revocations, signer = verify_revocations(listing, load_trust(keys["trust"]))
    assert signer.name == "museum"
    assert revocations.covers("chen-ama", 1) is not None
    assert [e.version for e in revocations.entries] == [None, 2]
    # kiosk sign re-signs a list as it is
    (listing.with_name(listing.name + ".sig")).unlink()
    assert main(["sign", str(listing), "--key", str(keys["key"])]) == 0
    assert main(["verify", str(listing), "--trust", str(keys["trust"])]) == 0


# --- refusals: signatures and keys ----------------------------------------------------------


def test_refuses_a_bad_signature(copy_of, keys) -> None:
    pack = copy_of()
    sig = bytearray((pack / SIGNATURE).read_bytes())
    sig[10] ^= 1
    (pack / SIGNATURE).write_bytes(bytes(sig))
    assert "not valid for any trusted key" in refused(pack, keys)


def test_refuses_a_manifest_changed_after_signing(copy_of, keys) -> None:
    pack = copy_of()
    data = (pack / MANIFEST).read_bytes().replace(b'"curated"', b'"free"')
    (pack / MANIFEST).write_bytes(data)
    assert "changed after signing" in refused(pack, keys)


def test_refuses_an_untrusted_key(copy_of, keys) -> None:
    pack = copy_of()
    data = (pack / MANIFEST).read_bytes()
    (pack / SIGNATURE).write_bytes(sign_bytes(load_private_key(keys["stranger"]), data))
    assert "not valid for any trusted key (museum)" in refused(pack, keys)


def test_refuses_an_unsigned_pack_and_a_truncated_signature(copy_of, keys) -> None:
    pack = copy_of()
    (pack / SIGNATURE).write_bytes((pack / SIGNATURE).read_bytes()[:63])
    assert "63 bytes, not 64" in refused(pack, keys)
    (pack / SIGNATURE).unlink()
    assert "not signed" in refused(pack, keys)


def test_refuses_a_world_readable_signing_key(keys, made, tmp_path, capsys) -> None:
    key = tmp_path / "loose.key"
    shutil.copyfile(keys["key"], key)
    key.chmod(0o644)
    assert main(["sign", str(made["pack"]), "--key", str(key)]) == 2
    assert "chmod 600" in capsys.readouterr().err


# --- refusals: the files ----------------------------------------------------------------


def test_refuses_a_missing_file(copy_of, keys) -> None:
    pack = copy_of()
    (pack / "portrait.png").unlink()
    assert "portrait.png is listed in manifest.json but missing" in refused(pack, keys)


def test_refuses_an_extra_file(copy_of, keys) -> None:
    pack = copy_of()
    (pack / "archival" / "extra.wav").write_bytes(b"RIFF")
    assert "archival/extra.wav is in the pack but not listed" in refused(pack, keys)


def test_refuses_a_modified_file(copy_of, keys) -> None:
    pack = copy_of()
    data = bytearray((pack / "gpt.ckpt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (pack / "gpt.ckpt").write_bytes(bytes(data))
    assert "gpt.ckpt does not match its SHA-256" in refused(pack, keys)


def test_refuses_a_size_mismatch(copy_of, keys) -> None:
    pack = copy_of()
    with open(pack / "reference.wav", "ab") as handle:
        handle.write(b"\0")
    reason = refused(pack, keys)
    assert "reference.wav is" in reason and "the manifest says" in reason


def test_refuses_a_symlink(copy_of, keys) -> None:
    pack = copy_of()
    (pack / "portrait.png").unlink()
    (pack / "portrait.png").symlink_to("lexicon.txt")
    assert "portrait.png is a symbolic link" in refused(pack, keys)


def test_refuses_a_hard_link(copy_of, keys, tmp_path) -> None:
    pack = copy_of()
    os.link(pack / "lexicon.txt", tmp_path / "elsewhere.txt")
    assert "lexicon.txt is a hard link" in refused(pack, keys)


def test_refuses_a_fifo(copy_of, keys) -> None:
    pack = copy_of()
    (pack / "portrait.png").unlink()
    os.mkfifo(pack / "portrait.png")
    assert "portrait.png is a FIFO" in refused(pack, keys)


def test_refuses_an_oversized_file(made, keys) -> None:
    reason = refused(made["pack"], keys, limits=Limits(max_file_bytes=1 << 20))  # type: ignore[arg-type]
    assert "over the limit of 1048576 per file" in reason


def test_refuses_a_pack_folder_named_for_another_version(copy_of, keys) -> None:
    pack = copy_of()
    renamed = pack.rename(pack.with_name("chen-ama-2.kvp"))
    assert "its manifest is for 'chen-ama-1.kvp'" in refused(renamed, keys)


def test_refuses_expired_consent(made, keys) -> None:
    reason = refused(made["pack"], keys, today=dt.date(2100, 1, 1))  # type: ignore[arg-type]
    assert "consent for chen-ama ended on 2099-12-31" in reason


def test_refuses_a_prompt_without_the_speaker_embedding_of_a_pro_voice(copy_of, keys) -> None:
    pack = copy_of()
    data = (
        (pack / MANIFEST)
        .read_bytes()
        .replace(b'"model_version": "v2"', b'"model_version": "v2Pro"')
    )
    (pack / MANIFEST).write_bytes(data)
    resign(pack, keys)
    assert "lacks the speaker embedding a v2Pro voice needs" in refused(pack, keys)


# --- refusals: the manifest ---------------------------------------------------------------


def _with(manifest: dict, change: Callable[[dict], None]) -> bytes:
    change(manifest)
    return json.dumps(manifest, ensure_ascii=False).encode()


MANIFEST_CASES = {
    "malformed JSON": (lambda m: None, b'{"format_version": 1,', "not valid JSON"),
    "duplicate key": (None, None, "key 'kind' appears twice"),
    "path traversal": (
        lambda m: m["files"][0].update(path="../../etc/cron.d/x"),
        None,
        "climbs out of the pack",
    ),
    "absolute path": (lambda m: m["files"][0].update(path="/etc/passwd"), None, "absolute path"),
    "backslash": (lambda m: m["files"][0].update(path="archival\\x.wav"), None, "backslash"),
    "NUL in a path": (lambda m: m["files"][0].update(path="a\u0000b"), None, "NUL"),
    "case collision": (
        lambda m: m["files"].append({**m["files"][0], "path": m["files"][0]["path"].upper()}),
        None,
        "differ only in case",
    ),
    "duplicate file": (lambda m: m["files"].append(dict(m["files"][0])), None, "twice"),
    "missing consent field": (lambda m: m["consent"].pop("relation"), None, "consent.relation"),
    "bad text_policy": (
        lambda m: m["consent"].update(text_policy="anything"),
        None,
        "consent.text_policy: 'anything' is not one of curated, free",
    ),
    "unknown key": (lambda m: m.update(extra=1), None, "unknown key(s) extra"),
    "wrong kind": (lambda m: m.update(kind="firmware"), None, "kind 'firmware' is not a pack kind"),
    "revocation as a pack": (lambda m: m.update(kind="revocation"), None, "not a pack kind"),
    "version as a string": (lambda m: m.update(version="1"), None, "version: expected an integer"),
    "version as a boolean": (lambda m: m.update(version=True), None, "expected an integer"),
    "bad sha256": (lambda m: m["files"][0].update(sha256="XYZ"), None, "sha256"),
    "unknown model version": (
        lambda m: m.update(model_version="v3"),
        None,
        "model_version: 'v3' is not one of",
    ),
    "file without a role": (
        lambda m: m["files"].append({"path": "notes.txt", "size": 1, "sha256": "0" * 64}),
        None,
        "'notes.txt' has no role",
    ),
    "future format": (lambda m: m.update(format_version=2), None, "format_version 2 is not 1"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_refuses_a_bad_manifest_even_when_signed(case, made, keys, tmp_path) -> None:
    change, raw, expected = MANIFEST_CASES[case]
    manifest = good_manifest(made)
    if raw is not None:
        data = raw
    elif change is None:  # duplicate key: the same key twice in the top object
        data = json.dumps(manifest, ensure_ascii=False).encode()
        data = data[:-1] + b', "kind": "voice"}'
    else:
        data = _with(manifest, change)
    pack = manifest_only(tmp_path, data, keys, "chen-ama-1.kvp")
    reason = refused(pack, keys)
    assert expected in reason, reason


def test_refuses_newer_firmware(copy_of, keys) -> None:
    pack = copy_of()
    data = (
        (pack / MANIFEST)
        .read_bytes()
        .replace(b'"min_firmware": "0.1.0"', b'"min_firmware": "99.0"')
    )
    (pack / MANIFEST).write_bytes(data)
    resign(pack, keys)
    assert "needs firmware 99.0 or later" in refused(pack, keys)


# --- refusals: tar files ----------------------------------------------------------------


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


TOP = "chen-ama-1.kvp"
TAR_CASES = {
    "symlink member": (
        [_info(f"{TOP}/portrait.png", tarfile.SYMTYPE, linkname="/etc/passwd")],
        "a symbolic link",
    ),
    "hard link member": (
        [_info(f"{TOP}/portrait.png", tarfile.LNKTYPE, linkname=f"{TOP}/{MANIFEST}")],
        "a hard link",
    ),
    "char device member": (
        [_info(f"{TOP}/portrait.png", tarfile.CHRTYPE, devmajor=1, devminor=3)],
        "a character device",
    ),
    "fifo member": ([_info(f"{TOP}/portrait.png", tarfile.FIFOTYPE)], "a FIFO"),
    "absolute member": ([(_info("/etc/cron.d/x"), b"x")], "an absolute path"),
    "dot-dot member": ([(_info(f"{TOP}/../../x"), b"x")], "climbs out"),
    "member outside the folder": ([(_info("x.txt"), b"x")], "outside a NAME-VERSION.kvp/"),
    "two folders": ([(_info("other-1.kvp/x.txt"), b"x")], "more than one folder"),
    "duplicate member": ([(_info(f"{TOP}/{MANIFEST}"), b"{}")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(TAR_CASES))
def test_refuses_a_bad_tar_before_extracting(case, made, keys, tmp_path) -> None:
    extra, expected = TAR_CASES[case]
    manifest = (made["pack"] / MANIFEST).read_bytes()  # type: ignore[operator]
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info(TOP, tarfile.DIRTYPE), None),
        (_info(f"{TOP}/{MANIFEST}"), manifest),
    ]
    for item in extra:
        members.append(item if isinstance(item, tuple) else (item, None))
    tar = _tar(tmp_path / "bad.tar", members)
    reason = refused(tar, keys)
    assert expected in reason, reason
    assert not any(p.name != "bad.tar" for p in tmp_path.iterdir())  # nothing extracted


def test_refuses_a_tar_bomb(made, keys, tmp_path) -> None:
    """Declared sizes over the limits are refused from the headers, before any data is read."""
    members = [(_info(TOP, tarfile.DIRTYPE), None)]
    members += [(_info(f"{TOP}/archival/x{i}.wav"), bytes(300_000)) for i in range(4)]
    tar = _tar(tmp_path / "bomb.tar", members)
    reason = refused(tar, keys, limits=Limits(max_total_bytes=1_000_000))
    assert "tar bomb" in reason
    # one header claiming 10 GB (and no data behind it)
    huge = _info(f"{TOP}/gpt.ckpt", size=10 * 10**9)
    with open(tmp_path / "huge.tar", "wb") as handle:
        handle.write(_info(TOP, tarfile.DIRTYPE).tobuf(tarfile.PAX_FORMAT))
        handle.write(huge.tobuf(tarfile.PAX_FORMAT))
    assert "over the limit" in refused(tmp_path / "huge.tar", keys)


def test_refuses_a_compressed_or_foreign_file(keys, tmp_path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(zlib.compress(b"not a tar" * 100))
    assert "not an uncompressed tar" in refused(path, keys)


# --- refusals: revocation lists ---------------------------------------------------------


def test_refuses_an_unsigned_or_altered_revocation_list(keys, tmp_path, capsys) -> None:
    listing = tmp_path / "revocations.json"
    base = ["--reason", "withdrawn", "--key", str(keys["key"]), "--out", str(listing)]
    assert main(["revoke", "chen-ama", *base]) == 0
    listing.write_bytes(listing.read_bytes().replace(b"chen-ama", b"chen-amb"))
    assert main(["verify", str(listing), "--trust", str(keys["trust"])]) == 2
    assert "not valid for any trusted key" in capsys.readouterr().err
    listing.with_name(listing.name + ".sig").unlink()
    assert main(["verify", str(listing), "--trust", str(keys["trust"])]) == 2
    assert "not signed" in capsys.readouterr().err
    # a pack manifest is not a revocation list, even when signed
    other = tmp_path / "manifest-as-list.json"
    other.write_bytes(b'{"kind": "voice"}')
    (tmp_path / "manifest-as-list.json.sig").write_bytes(
        sign_bytes(load_private_key(keys["key"]), other.read_bytes())
    )
    assert main(["verify", str(other), "--trust", str(keys["trust"])]) == 2
    assert "not a revocation list" in capsys.readouterr().err


# --- refusals: kiosk pack's inputs -------------------------------------------------------


def _clip(path: Path, samples: np.ndarray, rate: int = 32000) -> Path:
    return write_wav(path, samples.astype(np.float32), rate)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("too short", "too short: 2.0 s"),
        ("too long", "too long: 11.0 s"),
        ("silent", "silent"),
        ("clipped", "clipped"),
        ("mostly silent", "mostly silent"),
        ("low rate", "sample rate 8000 Hz is too low"),
    ],
)
def test_kiosk_pack_refuses_a_bad_reference_clip(case, expected, kit, tmp_path, capsys) -> None:
    tone = reference_tone(3, seconds=4.0)
    clip = {
        "too short": lambda: _clip(tmp_path / "r.wav", reference_tone(3, seconds=2.0)),
        "too long": lambda: _clip(tmp_path / "r.wav", reference_tone(3, seconds=11.0)),
        "silent": lambda: _clip(tmp_path / "r.wav", np.zeros(4 * 32000)),
        "clipped": lambda: _clip(tmp_path / "r.wav", np.clip(tone * 6, -1, 1)),
        "mostly silent": lambda: _clip(
            tmp_path / "r.wav", np.concatenate([tone[:16000], np.zeros(4 * 32000)])
        ),
        "low rate": lambda: _clip(tmp_path / "r.wav", tone[::4], 8000),
    }[case]()
    assert main(pack_args(kit, tmp_path / "out", ref=str(clip))) == 2
    err = capsys.readouterr().err
    assert "reference clip refused" in err and expected in err, err
    assert len(err.strip().splitlines()) == 1  # one clear line, no traceback
    assert not (tmp_path / "out" / "chen-ama-1.kvp").exists()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace('relation = "granddaughter"\n', ""), "missing key(s) relation"),
        (lambda t: t.replace('"curated"', '"whatever"'), "text_policy: 'whatever' is not one of"),
        (lambda t: t.replace('status = "deceased"', 'status = "unknown"'), "status"),
        (lambda t: t.replace("valid_until = 2099-12-31", "valid_until = 2020-01-01"), "before"),
        (lambda t: t.replace('en = "This voice is generated by AI."', ""), "disclosure.en"),
        (lambda t: "subject = 'twice'\n" + t, "not valid TOML"),
    ],
)
def test_kiosk_pack_refuses_an_incomplete_consent_file(
    edit, expected, kit, tmp_path, capsys
) -> None:
    consent = tmp_path / "consent.toml"
    consent.write_text(edit(CONSENT), encoding="utf-8")
    assert main(pack_args(kit, tmp_path / "out", consent=str(consent))) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1


def test_kiosk_pack_refuses_bad_phrases_and_an_existing_pack(made, kit, tmp_path, capsys) -> None:
    phrases = tmp_path / "phrases.toml"
    phrases.write_text(PHRASES.replace('id = "song"', 'id = "welcome"'), encoding="utf-8")
    assert main(pack_args(kit, tmp_path / "out", phrases=str(phrases))) == 2
    assert "'welcome' is used by two phrases" in capsys.readouterr().err
    phrases.write_text(PHRASES.replace('lang = "en"', 'lang = "fr"'), encoding="utf-8")
    assert main(pack_args(kit, tmp_path / "out", phrases=str(phrases))) == 2
    assert "phrase[2].lang: 'fr' is not one of zh, en" in capsys.readouterr().err
    out = made["pack"].parent  # type: ignore[union-attr]
    assert main(pack_args(kit, out)) == 2
    assert "exists; a version is packed once" in capsys.readouterr().err


def test_check_pack_without_trust_checks_everything_but_the_signature(made) -> None:
    checked = check_pack(made["pack"], None)  # type: ignore[arg-type]
    assert checked.signer is None and checked.signed


def test_base_pack_round_trip_and_refusals(kit, keys, tmp_path, capsys) -> None:
    bert = kit["pretrained"] / "chinese-roberta-wwm-ext-large"
    out = tmp_path / "out"
    assert main(["pack-base", "--bert", str(bert), "--version", "3", "--out", str(out)]) == 0
    pack = out / "base-3.kvp"
    assert main(["sign", str(pack), "--key", str(keys["key"])]) == 0
    assert main(["verify", str(pack), "--trust", str(keys["trust"])]) == 0
    text = capsys.readouterr().out
    assert "a valid base pack (folder), signed by museum" in text
    assert "carries chinese-roberta-wwm-ext-large/" in text
    checked = verify_pack(pack, load_trust(keys["trust"]))
    assert checked.manifest.kind == "base" and checked.manifest.voice is None
    assert {f.path for f in checked.manifest.files} == {
        f"chinese-roberta-wwm-ext-large/{p.name}" for p in bert.iterdir()
    }
    # a base pack carries the BERT folder and nothing else
    manifest = json.loads((pack / MANIFEST).read_bytes())
    manifest["files"].append({"path": "gpt.ckpt", "size": 1, "sha256": "0" * 64})
    bad = manifest_only(tmp_path / "bad", json.dumps(manifest).encode(), keys, "base-3.kvp")
    assert "'gpt.ckpt' lies outside chinese-roberta-wwm-ext-large/" in refused(bad, keys)
    # voice keys in a base pack are unknown keys
    manifest = json.loads((pack / MANIFEST).read_bytes())
    manifest["consent"] = {}
    bad = manifest_only(tmp_path / "bad2", json.dumps(manifest).encode(), keys, "base-3.kvp")
    assert "unknown key(s) consent" in refused(bad, keys)
