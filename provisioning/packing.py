"""`kiosk pack`: official files, a reference clip and the family's consent -> an unsigned pack.

Everything a box needs to speak the approved phrases is computed here, once,
with the helper models the box will not have: the prompt (HuBERT tokens,
reference phones and BERT, the v2Pro/v2ProPlus speaker embedding, the timbre)
and the BERT features of every phrase.  The pack is written staged beside its
target and renamed into place; it is never signed here, so a curator can
listen before anyone signs (`kiosk sign`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.durable_files import fsync_dir
from engines.features import BertFeaturizer, FeatureModelError
from engines.text.lexicon import Lexicon
from engines.voice import HelperModels, OfficialFiles, Voice
from engines.voice_folder import SpeakDefaults, prompt_bytes
from engines.voice_prompt import segment_bert
from engines.wav_io import read_wav
from provisioning.pack_format import (
    ARCHIVAL_DIR,
    AUDIO_SUFFIXES,
    BERT_FOLDER,
    COMPONENT,
    GPT_FILE,
    ID_PATTERN,
    LEXICON_FILE,
    MANIFEST,
    PHRASES_BERT_FILE,
    PORTRAIT_SUFFIXES,
    PROMPT_FILE,
    REFERENCE_FILE,
    SOVITS_FILE,
    Archival,
    FileEntry,
    Manifest,
    Reference,
    VoiceDetails,
    pack_folder_name,
)
from provisioning.pack_inputs import read_bio, read_consent, read_phrases
from provisioning.phrase_features import phrase_features_bytes
from provisioning.reference_checks import ClipReport, require_good_reference
from provisioning.strict_json import PackFormatError

#: The first firmware that reads pack format 1.
MIN_FIRMWARE = "0.1.0"
BASE_DISPLAY_NAME = ("共享文本模型", "Shared text model (BERT)")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PackRequest:
    """What `kiosk pack` was given (paths as on the workstation)."""

    voice_id: str
    version: int
    gpt: Path
    sovits: Path
    reference: Path
    reference_text: str
    phrases: Path
    consent: Path
    out: Path
    reference_language: str = "zh"
    portrait: Path | None = None
    bio: Path | None = None
    archival: Path | None = None
    lexicon: Path | None = None
    pretrained: Path | None = None
    cut: str = SpeakDefaults.cut
    backend: str = "torch-eager"


@dataclass
class PackResult:
    path: Path
    manifest: Manifest
    clip: ClipReport
    uncovered: dict[str, list[str]] = field(default_factory=dict)
    """Per phrase id: words no dictionary or the lexicon covers."""


def _sha256_copy(src: Path, dst: Path) -> FileEntry:
    """Copy `src` to `dst` (a new file), hashing the bytes written; fsynced."""
    digest = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while block := fin.read(1 << 20):
            digest.update(block)
            fout.write(block)
            size += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    return FileEntry("", size, digest.hexdigest())


def _write_new(dst: Path, data: bytes) -> None:
    with open(dst, "xb") as fout:
        fout.write(data)
        fout.flush()
        os.fsync(fout.fileno())


def _refuse_existing(target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise PackFormatError(
            f"{target} exists; a version is packed once: give --version with a new "
            "number, or remove the old pack first"
        )


class _Stage:
    """The pack being written: a hidden folder beside the target, renamed into place at the end."""

    def __init__(self, out: Path, name: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.target = out / name
        _refuse_existing(self.target)
        self.root = out / f".{name}.staging-{os.getpid()}"
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir()
        self.files: list[FileEntry] = []

    def copy(self, src: Path, rel: str) -> None:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        entry = _sha256_copy(src, self.root / rel)
        self.files.append(FileEntry(rel, entry.size, entry.sha256))

    def write(self, rel: str, data: bytes) -> None:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_new(self.root / rel, data)
        self.files.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))

    def finish(self, manifest: Manifest) -> Path:
        _write_new(self.root / MANIFEST, manifest.to_bytes())
        for folder, _dirs, _files in os.walk(self.root):
            fsync_dir(Path(folder))
        os.rename(self.root, self.target)
        fsync_dir(self.target.parent)
        return self.target

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _check_file(path: Path | None, flag: str) -> None:
    if path is not None and not path.is_file():
        raise PackFormatError(f"{flag} {path}: no such file")


def _portrait_name(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in PORTRAIT_SUFFIXES:
        raise PackFormatError(f"--portrait {path}: use a PNG, JPEG or WebP image")
    head = path.read_bytes()[:12]
    magic_ok = {
        ".png": head.startswith(b"\x89PNG\r\n\x1a\n"),
        ".jpg": head.startswith(b"\xff\xd8\xff"),
        ".jpeg": head.startswith(b"\xff\xd8\xff"),
        ".webp": head[:4] == b"RIFF" and head[8:12] == b"WEBP",
    }[suffix]
    if not magic_ok:
        raise PackFormatError(f"--portrait {path}: the file is not the {suffix} image it says")
    return f"portrait{suffix}"


def _archival_files(folder: Path) -> list[tuple[Path, str, str]]:
    """(source, path in the pack, title) of every recording in `folder`."""
    if not folder.is_dir():
        raise PackFormatError(f"--archival {folder}: not a folder")
    out: list[tuple[Path, str, str]] = []
    used: set[str] = set()
    for i, src in enumerate(sorted(folder.iterdir()), start=1):
        if src.name.startswith("."):
            continue
        suffix = src.suffix.lower()
        if not src.is_file() or suffix not in AUDIO_SUFFIXES:
            raise PackFormatError(
                f"--archival {src}: only .wav and .flac recordings may be in the folder"
            )
        if suffix == ".wav":
            read_wav(src)  # refuses what is not a readable WAV
        elif src.read_bytes()[:4] != b"fLaC":
            raise PackFormatError(f"--archival {src}: not a FLAC file")
        name = src.stem + suffix
        if not COMPONENT.fullmatch(name) or name.casefold() in used:
            name = f"recording-{i:02d}{suffix}"
        used.add(name.casefold())
        out.append((src, f"{ARCHIVAL_DIR}/{name}", src.stem))
    if not out:
        raise PackFormatError(f"--archival {folder}: no .wav or .flac recordings in it")
    return out


def make_pack(request: PackRequest, progress: Progress = print) -> PackResult:
    """Check every input, compute the prompt and phrase features, write `OUT/ID-N.kvp/`."""
    r = request
    steps = 7
    if not ID_PATTERN.fullmatch(r.voice_id):
        raise PackFormatError(
            f"--id {r.voice_id!r}: use lowercase letters, digits, '-' and '_' (e.g. anna-lee)"
        )
    if not 1 <= r.version <= 10**9:
        raise PackFormatError(f"--version {r.version}: a whole number from 1")
    if r.reference_language not in ("zh", "en"):
        raise PackFormatError(f"--ref-lang {r.reference_language!r}: zh or en")
    name = pack_folder_name(r.voice_id, r.version)
    _refuse_existing(r.out / name)

    progress(
        f"[1/{steps}] reading {r.consent.name}, {r.phrases.name}"
        + (f", {r.bio.name}" if r.bio else "")
    )
    consent = read_consent(r.consent)
    phrases = read_phrases(r.phrases)
    bio = read_bio(r.bio) if r.bio else None
    progress(
        f"        consent: {consent.subject} ({consent.status}), authorised by "
        f"{consent.authorised_by} ({consent.relation}) on {consent.date}, valid until "
        f"{consent.valid_until}, text policy {consent.text_policy}; {len(phrases)} phrase(s)"
    )

    progress(f"[2/{steps}] checking the reference clip {r.reference.name}")
    for flag, path in (("--gpt", r.gpt), ("--sovits", r.sovits), ("--ref", r.reference)):
        _check_file(path, flag)
    _check_file(r.portrait, "--portrait")
    _check_file(r.lexicon, "--lexicon")
    clip = require_good_reference(r.reference)
    progress(f"        {clip.summary()}")
    for warning in clip.warnings:
        progress(f"        warning: {warning}")

    progress(f"[3/{steps}] checking the portrait, archival recordings and lexicon")
    portrait = _portrait_name(r.portrait) if r.portrait else None
    archival = _archival_files(r.archival) if r.archival else []
    if r.lexicon:
        Lexicon.from_file(r.lexicon)
    progress(
        f"        portrait: {portrait or 'none'}; {len(archival)} archival recording(s); "
        f"lexicon: {'yes' if r.lexicon else 'none'}"
    )

    progress(f"[4/{steps}] computing the prompt (HuBERT, BERT, speaker model)")
    helpers = HelperModels.in_folder(r.pretrained)
    if helpers.hubert is None:
        raise PackFormatError(
            f"--pretrained: give the folder holding {HelperModels.HUBERT_FOLDER}/, "
            f"{HelperModels.BERT_FOLDER}/ and {HelperModels.SV_FILE} (the GPT-SoVITS "
            "pretrained_models folder)"
        )
    needs_bert = r.reference_language == "zh" or any(p.lang == "zh" for p in phrases)
    if needs_bert and helpers.bert is None:
        raise PackFormatError(
            f"--pretrained {r.pretrained}: no {HelperModels.BERT_FOLDER}/; Mandarin text "
            "needs BERT features, computed here so the box needs no BERT"
        )
    files = OfficialFiles(
        gpt=r.gpt,
        sovits=r.sovits,
        reference=r.reference,
        reference_text=r.reference_text,
        reference_language=r.reference_language,
        lexicon=r.lexicon,
        voice_id=r.voice_id,
    )
    try:
        voice = Voice.load(files, helpers=helpers, backend=r.backend)
    except FeatureModelError as exc:
        raise PackFormatError(
            f"{exc}; kiosk pack finds the helper models under --pretrained DIR"
        ) from exc
    try:
        progress(
            f"        GPT {voice.gpt_version}, SoVITS {voice.sovits_version}, "
            f"{voice.prompt.semantic_tokens.numel()} prompt tokens, "
            f"{voice.prompt.phone_ids.numel()} reference phones"
        )
        progress(f"[5/{steps}] phrase BERT features ({len(phrases)} phrase(s))")
        features: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        uncovered: dict[str, list[str]] = {}
        for n, phrase in enumerate(phrases, start=1):
            segments = voice.segments(phrase.text, phrase.lang, r.cut)
            words = voice.uncovered(segments)
            if words:
                uncovered[phrase.id] = words
            features[phrase.id] = [
                (np.asarray(s.phone_ids, dtype=np.int64), segment_bert(s, voice.bert).numpy())
                for s in segments
            ]
            phones = sum(len(s.phone_ids) for s in segments)
            note = f"; not in any dictionary or the lexicon: {', '.join(words)}" if words else ""
            progress(
                f"        {n}/{len(phrases)} {phrase.id}: {len(segments)} segment(s), "
                f"{phones} phones{note}"
            )
        prompt = voice.prompt
        gpt_version, sovits_version = voice.gpt_version, voice.sovits_version
    finally:
        voice.close()
    if uncovered:
        progress(
            "        add the words above to the lexicon (--lexicon FILE) before the pack is "
            "signed, or they are spoken letter by letter or guessed"
        )

    progress(f"[6/{steps}] writing {name} (copying and hashing the files)")
    stage = _Stage(r.out, name)
    try:
        stage.copy(r.gpt, GPT_FILE)
        stage.copy(r.sovits, SOVITS_FILE)
        stage.copy(r.reference, REFERENCE_FILE)
        stage.write(PROMPT_FILE, prompt_bytes(prompt))  # what save_prompt writes
        stage.write(PHRASES_BERT_FILE, phrase_features_bytes(features))
        if portrait and r.portrait:
            stage.copy(r.portrait, portrait)
        if r.lexicon:
            stage.copy(r.lexicon, LEXICON_FILE)
        for src, rel, _title in archival:
            stage.copy(src, rel)
        manifest = Manifest(
            kind="voice",
            id=r.voice_id,
            version=r.version,
            display_name_zh=bio.name_zh if bio else consent.subject,
            display_name_en=bio.name_en if bio else consent.subject,
            min_firmware=MIN_FIRMWARE,
            files=tuple(sorted(stage.files, key=lambda f: f.path)),
            voice=VoiceDetails(
                model_version=sovits_version,
                gpt_version=gpt_version,
                consent=consent,
                reference=_reference(r),
                cut=r.cut,
                phrases=phrases,
                bio=bio,
                portrait=portrait,
                archival=tuple(Archival(rel, title) for _src, rel, title in archival),
                lexicon=LEXICON_FILE if r.lexicon else None,
            ),
        )
        progress(
            f"[7/{steps}] writing {MANIFEST} ({len(manifest.files)} files, "
            f"{manifest.total_bytes / 1e6:.1f} MB)"
        )
        path = stage.finish(manifest)
    except BaseException:
        stage.discard()
        raise
    progress(f"unsigned pack written: {path}; listen to it, then `kiosk sign {path} --key KEY`")
    return PackResult(path, manifest, clip, uncovered)


def _reference(r: PackRequest) -> Reference:
    return Reference(REFERENCE_FILE, r.reference_text.strip(), r.reference_language)


def make_base_pack(
    bert: Path, pack_id: str, version: int, out: Path, progress: Progress = print
) -> Path:
    """A base pack: the shared BERT folder, for free-text voices and phrases made on the box."""
    if not ID_PATTERN.fullmatch(pack_id):
        raise PackFormatError(f"--id {pack_id!r}: use lowercase letters, digits, '-' and '_'")
    progress(f"[1/3] checking the BERT folder {bert}")
    BertFeaturizer.from_folder(bert)  # refuses an incomplete or wrong model folder
    sources = []
    for src in sorted(p for p in bert.rglob("*") if p.is_file()):
        rel = src.relative_to(bert).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            progress(f"        skipped {rel} (hidden)")
            continue
        sources.append((src, f"{BERT_FOLDER}/{rel}"))
    name = pack_folder_name(pack_id, version)
    progress(f"[2/3] writing {name} ({len(sources)} files)")
    stage = _Stage(out, name)
    try:
        for src, rel in sources:
            stage.copy(src, rel)
        manifest = Manifest(
            kind="base",
            id=pack_id,
            version=version,
            display_name_zh=BASE_DISPLAY_NAME[0],
            display_name_en=BASE_DISPLAY_NAME[1],
            min_firmware=MIN_FIRMWARE,
            files=tuple(sorted(stage.files, key=lambda f: f.path)),
            bert_folder=BERT_FOLDER,
        )
        progress(f"[3/3] writing {MANIFEST}")
        path = stage.finish(manifest)
    except BaseException:
        stage.discard()
        raise
    progress(f"unsigned base pack written: {path}")
    return path


def tar_pack(folder: Path, tar_path: Path) -> Path:
    """A `.tar` of a pack folder as a box reads it: regular files only, no owners, fixed times."""
    folder = Path(folder)
    tmp = tar_path.with_name(f".{tar_path.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        top = tarfile.TarInfo(folder.name)
        top.type, top.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(top)
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            info = tarfile.TarInfo(f"{folder.name}/{rel}")
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise PackFormatError(f"{path}: not a regular file; a pack holds no links")
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            info.size, info.mode = path.stat().st_size, 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, tar_path)
    return tar_path
