"""`kiosk review PACK --out DIR`: every phrase said by the pack's own voice, on one sheet.

Curators and the family listen to every phrase and approve before the pack
is signed, so the review takes an unsigned pack: its structure, every file's
size and SHA-256 and its arrays are checked exactly as `kiosk verify` checks
them, but no signature is required (a signature, if present, is reported;
with `trust` it is checked, and a signer outside `trust` is said, not fatal).
The pack is copied while it is hashed into a temporary folder, the voice
folder is made from that copy as a box makes it, and each phrase is said the
way the box says it: the pack's own BERT features, the phrase's speed and
seed, this firmware's text frontend (a phrase it reads as other phones than
the workstation did is listed as a problem: the box would refuse the pack).

DIR receives:

    index.html     the sheet: inline CSS, no script, no network; every text
                   from the pack is HTML-escaped
    audio/ID.wav   each phrase as synthesised (32 kHz mono, before the box's
                   loudness normalisation)
    archival/NN.*  copies of the original recordings, under plain names
    portrait.*     the portrait, if any
    review.json    the same facts for tools (and the mark of a review folder)

The audio is in files beside the page, referenced by relative `<audio src>`,
not embedded as base64: base64 makes the sheet a third larger than its audio
(tens of MB for a long phrase list), browsers parse such a page slowly, and a
curator can open one WAV in an editor or send it on by itself.  The folder is
the unit to keep or zip; nothing in it reaches outside it.  DIR is written
beside itself under a temporary name and renamed into place, so a review that
fails leaves no half sheet; an earlier review in DIR is replaced, any other
non-empty folder is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import soundfile
from kiosk_build.loudness import LoudnessError, measure

from engines.voice import Voice
from engines.wav_io import write_wav
from provisioning.health import phrase_input
from provisioning.pack_format import MANIFEST, SIGNATURE, Limits, Manifest, firmware_version
from provisioning.pack_reader import check_pack
from provisioning.pack_to_voice import write_voice_folder_from_pack
from provisioning.signing import TrustedKey, signer_of
from provisioning.strict_json import PackFormatError

log = logging.getLogger(__name__)

INDEX = "index.html"
SUMMARY = "review.json"
AUDIO_DIR = "audio"
ARCHIVAL_DIR = "archival"
FORMAT = "kiosk-review/1"


class ReviewError(ValueError):
    """A pack that cannot be reviewed (not a voice pack, a folder that is not a review)."""


@dataclass
class PhraseReview:
    """One phrase as the voice said it, and what a listener should look at."""

    id: str
    text: str
    lang: str
    label_zh: str
    label_en: str
    button: int | None
    speed: float | None
    seed: int | None
    segments: list[dict[str, Any]] = field(default_factory=list)
    """Per segment: `text` (normalised) and `phones`."""
    uncovered: list[str] = field(default_factory=list)
    """Words no dictionary or lexicon covers (said letter by letter or guessed)."""
    file: str | None = None
    """The WAV, relative to the review folder."""
    seconds: float | None = None
    lufs: float | None = None
    true_peak_dbtp: float | None = None
    problem: str | None = None
    """Why the phrase could not be said or measured, or what the box will refuse."""


@dataclass
class ArchivalReview:
    title: str
    source: str
    """Its path in the pack."""
    file: str
    """The copy, relative to the review folder."""
    seconds: float | None


@dataclass
class Review:
    """What `render_review` wrote."""

    folder: Path
    voice_id: str
    version: int
    manifest_sha256: str
    signed: bool
    signer: str | None
    """The trusted key that signed it (only when `trust` was given and it verifies)."""
    signature_note: str
    phrases: list[PhraseReview]
    archival: list[ArchivalReview]
    backend: str
    firmware: str
    seconds: float

    @property
    def index(self) -> Path:
        return self.folder / INDEX

    @property
    def problems(self) -> list[str]:
        return [f"{p.id}: {p.problem}" for p in self.phrases if p.problem]


def render_review(
    pack: str | Path,
    out: str | Path,
    *,
    backend: str = "torch-eager",
    trust: list[TrustedKey] | None = None,
    max_tokens: int | None = None,
    today: dt.date | None = None,
    limits: Limits | None = None,
    progress: Callable[[str], None] = print,
) -> Review:
    """Check the pack (no signature needed), say every phrase, write the review folder."""
    start = time.perf_counter()
    pack, out = Path(pack), Path(out)
    _check_target(out)
    stage = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory(prefix="kiosk-review-") as tmp:
            work = Path(tmp)
            checked = check_pack(pack, None, limits=limits, today=today, copy_to=work / "pack")
            manifest = checked.manifest
            if manifest.voice is None:
                raise ReviewError(
                    f"{pack}: a {manifest.kind} pack holds no voice; review the voice packs"
                )
            signer, note = _signature(work / "pack", checked.manifest_bytes, checked.signed, trust)
            progress(f"{pack.name}: {manifest.id} v{manifest.version} checked ({note})")
            voice_folder = write_voice_folder_from_pack(work / "pack", manifest, work / "voice")
            phrases, used_backend = _say_phrases(
                voice_folder, work / "pack", manifest, stage, backend, max_tokens, progress
            )
            archival = _copy_archival(work / "pack", manifest, stage)
            portrait = _copy_portrait(work / "pack", manifest, stage)
        review = Review(
            folder=out,
            voice_id=manifest.id,
            version=manifest.version,
            manifest_sha256=checked.manifest_sha256,
            signed=checked.signed,
            signer=signer,
            signature_note=note,
            phrases=phrases,
            archival=archival,
            backend=used_backend,
            firmware=firmware_version(),
            seconds=time.perf_counter() - start,
        )
        (stage / INDEX).write_text(review_html(review, manifest, portrait), encoding="utf-8")
        (stage / SUMMARY).write_text(
            json.dumps(_summary(review, manifest), ensure_ascii=False, indent=2) + "\n",
            encoding="utf-8",
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return review


def _check_target(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ReviewError(f"--out {out}: not a folder; give a new folder for the review")
    if out.is_dir() and any(out.iterdir()) and not (out / SUMMARY).is_file():
        raise ReviewError(
            f"--out {out}: the folder holds other files; give a new folder (an earlier "
            "review there would be replaced)"
        )


def _signature(
    pack_copy: Path, manifest_bytes: bytes, signed: bool, trust: list[TrustedKey] | None
) -> tuple[str | None, str]:
    """Who signed it, and a sentence for the sheet (a review never needs a signature)."""
    if not signed:
        return None, "not signed yet: sign it with `kiosk sign` once it is approved"
    if not trust:
        return None, "signed (the signature was not checked: no --trust given)"
    try:
        signature = (pack_copy / SIGNATURE).read_bytes()
        key = signer_of(manifest_bytes, signature, trust, MANIFEST)
    except PackFormatError as exc:
        return None, f"signed, but not by a trusted key ({exc})"
    return key.name, f"signed by {key.name} (key {key.fingerprint()})"


def _say_phrases(
    voice_folder: Path,
    pack_dir: Path,
    manifest: Manifest,
    stage: Path,
    backend: str,
    max_tokens: int | None,
    progress: Callable[[str], None],
) -> tuple[list[PhraseReview], str]:
    details = manifest.voice
    assert details is not None
    (stage / AUDIO_DIR).mkdir()
    voice = Voice.load(voice_folder, backend=backend)
    out: list[PhraseReview] = []
    try:
        for phrase in details.phrases:
            item = PhraseReview(
                phrase.id, phrase.text, phrase.lang, phrase.label_zh, phrase.label_en,
                phrase.button, phrase.speed, phrase.seed,
            )  # fmt: skip
            out.append(item)
            try:
                segments = voice.segments(phrase.text, phrase.lang, details.cut)
            except ValueError as exc:
                item.problem = f"this firmware cannot read the text: {exc}"
                continue
            item.segments = [{"text": s.norm_text, "phones": s.phones} for s in segments]
            item.uncovered = voice.uncovered(segments)
            try:
                spoken = phrase_input(voice, pack_dir, manifest, phrase.id)
            except PackFormatError as exc:
                item.problem = str(exc)
                continue
            options = voice.options(**spoken.overrides)
            if max_tokens is not None:
                options = replace(options, max_new_tokens=max_tokens)
            audio = voice.synthesize(
                phrase.text,
                language=phrase.lang,
                cut=details.cut,
                options=options,
                segments=spoken.segments,
                features=spoken.features,
            )
            item.file = f"{AUDIO_DIR}/{phrase.id}.wav"
            write_wav(stage / item.file, audio.samples, audio.sample_rate)
            item.seconds = audio.seconds
            try:
                loudness = measure(audio.samples, audio.sample_rate)
                item.lufs, item.true_peak_dbtp = loudness.lufs, loudness.true_peak_dbtp
            except LoudnessError as exc:
                item.problem = f"the audio cannot be measured: {exc}"
            progress(
                f"  {phrase.id}: {item.seconds:.2f} s, {_db(item.lufs, 'LUFS')}, "
                f"{len(item.uncovered)} uncovered word(s)"
            )
        used = voice.backend
    finally:
        voice.close()
    return out, used


def _copy_archival(pack_dir: Path, manifest: Manifest, stage: Path) -> list[ArchivalReview]:
    details = manifest.voice
    assert details is not None
    out = []
    for index, item in enumerate(details.archival, 1):
        (stage / ARCHIVAL_DIR).mkdir(exist_ok=True)
        rel = f"{ARCHIVAL_DIR}/{index:02d}{Path(item.path).suffix.lower()}"
        shutil.copyfile(pack_dir / item.path, stage / rel)
        seconds = None
        with contextlib.suppress(RuntimeError, soundfile.LibsndfileError):
            seconds = soundfile.info(str(stage / rel)).duration
        out.append(ArchivalReview(item.title, item.path, rel, seconds))
    return out


def _copy_portrait(pack_dir: Path, manifest: Manifest, stage: Path) -> str | None:
    details = manifest.voice
    assert details is not None
    if not details.portrait:
        return None
    shutil.copyfile(pack_dir / details.portrait, stage / details.portrait)
    return details.portrait


def _summary(review: Review, manifest: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "voice": review.voice_id,
        "version": review.version,
        "manifest_sha256": review.manifest_sha256,
        "signed": review.signed,
        "signer": review.signer,
        "backend": review.backend,
        "firmware": review.firmware,
        "consent": manifest.voice.consent.to_json() if manifest.voice else None,
        "phrases": [asdict(p) for p in review.phrases],
        "archival": [asdict(a) for a in review.archival],
        "problems": review.problems,
    }


# --- the sheet ------------------------------------------------------------------------------

_CSS = """
body { font-family: "Noto Sans", "Noto Sans CJK SC", sans-serif; margin: 2rem auto;
       max-width: 62rem; padding: 0 1rem; color: #1d1d1d; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.muted { color: #5b5b5b; } .mono { font-family: "Noto Sans Mono", monospace; font-size: 0.85rem;
       word-break: break-all; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; vertical-align: top;
       padding: 0.35rem 0.5rem; border-bottom: 1px solid #ddd; }
th { width: 12rem; font-weight: 600; }
.phrase { border: 1px solid #ccc; border-radius: 6px; padding: 0.8rem 1rem; margin: 1rem 0; }
.phrase h3 { margin: 0 0 0.4rem 0; font-size: 1.05rem; } .text { font-size: 1.25rem; }
.phones { font-family: "Noto Sans Mono", monospace; font-size: 0.85rem; color: #333; }
.warn { background: #fff3cd; border-left: 4px solid #c98a00; padding: 0.4rem 0.6rem; }
.bad { background: #fde2e1; border-left: 4px solid #b3261e; padding: 0.4rem 0.6rem; }
.ok { background: #e3f4e1; border-left: 4px solid #2e7d32; padding: 0.4rem 0.6rem; }
audio { width: 100%; margin-top: 0.4rem; } img.portrait { max-width: 14rem; float: right;
       margin: 0 0 1rem 1rem; border-radius: 4px; }
.approve { margin-top: 0.5rem; } .approve span { display: inline-block; width: 1rem;
       height: 1rem; border: 1px solid #555; vertical-align: middle; margin-right: 0.3rem; }
@media print { audio { display: none; } .phrase { break-inside: avoid; } }
"""


def _e(value: object) -> str:
    """HTML-escaped text (quotes too: it may land in an attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def _db(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if value == float("-inf"):
        return f"silence (-inf {unit})"
    return f"{value:.1f} {unit}"


def _rows(rows: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)


def _zh(text: str) -> str:
    return f'<span lang="zh">{_e(text)}</span>'


def review_html(review: Review, manifest: Manifest, portrait: str | None) -> str:
    """The whole sheet; `_e` on every text that came from the pack."""
    details = manifest.voice
    assert details is not None
    consent = details.consent
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    status_class = "ok" if review.signer else "warn"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Review: {_e(manifest.display_name_en)} ({_e(manifest.id)} "
        f"v{manifest.version})</title>",
        f"<style>{_CSS}</style></head><body>",
    ]
    if portrait:
        parts.append(f'<img class="portrait" src="{_e(portrait)}" alt="portrait">')
    parts += [
        f"<h1>{_zh(manifest.display_name_zh)} / {_e(manifest.display_name_en)}</h1>",
        f'<p class="muted">Voice pack <b>{_e(manifest.id)}</b> version {manifest.version}. '
        f"Review sheet made {generated} by firmware {_e(review.firmware)} on the "
        f"{_e(review.backend)} backend. Listen to every phrase and tick it before the pack "
        "is signed.</p>",
        f'<p class="{status_class}">Signature: {_e(review.signature_note)}. The pack\'s '
        "files match its manifest (sizes and SHA-256 checked).</p>",
    ]
    if review.problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in review.problems)
        parts.append(
            f'<div class="bad"><b>{len(review.problems)} problem(s): fix them and pack '
            f"again before signing.</b><ul>{items}</ul></div>"
        )
    parts += [
        "<h2>Consent</h2><table>",
        _rows(
            [
                ("Subject", _zh(consent.subject)),
                ("Status", _e(consent.status)),
                ("Authorised by", f"{_zh(consent.authorised_by)} ({_e(consent.relation)})"),
                ("Date", _e(consent.date)),
                ("Valid until", _e(consent.valid_until)),
                ("Text policy", _e(_policy(consent.text_policy))),
                ("Exhibits", _e(", ".join(consent.exhibits))),
                (
                    "Consent document",
                    f'<span class="mono">sha256 {_e(consent.document_sha256)}</span>',
                ),
            ]
        ),
        "</table>",
        "<h2>What visitors are told</h2><table>",
        _rows(
            [
                ("Disclosure (zh)", _zh(consent.disclosure.zh)),
                ("Disclosure (en)", _e(consent.disclosure.en)),
            ]
        ),
        "</table>",
    ]
    if details.bio is not None:
        bio = details.bio
        parts += [
            "<h2>Biography</h2><table>",
            _rows(
                [
                    ("Name", f"{_zh(bio.name_zh)} / {_e(bio.name_en)}"),
                    ("Dates", _e(bio.dates)),
                    ("Biography (zh)", _zh(bio.bio_zh)),
                    ("Biography (en)", _e(bio.bio_en)),
                ]
            ),
            "</table>",
        ]
    parts.append(
        f'<h2>Phrases ({len(review.phrases)})</h2><p class="muted">As synthesised, before '
        "the box brings every phrase to one loudness. Uncovered words are in no dictionary "
        "or lexicon: listen to them closely, and add them to the voice's lexicon if they "
        "sound wrong.</p>"
    )
    for phrase in review.phrases:
        parts.append(_phrase_html(phrase))
    parts.append(f"<h2>Original recordings ({len(review.archival)})</h2>")
    if review.archival:
        parts.append("<table>")
        for item in review.archival:
            seconds = f"{item.seconds:.1f} s" if item.seconds is not None else ""
            parts.append(
                f'<tr><th>{_e(item.title)}</th><td><span class="muted">{_e(item.source)} '
                f"{_e(seconds)}, played as it is, labelled as original</span>"
                f'<audio controls preload="none" src="{_e(item.file)}"></audio></td></tr>'
            )
        parts.append("</table>")
    else:
        parts.append('<p class="muted">none</p>')
    parts += [
        "<h2>The pack</h2><table>",
        _rows(
            [
                ("Manifest SHA-256", f'<span class="mono">{_e(review.manifest_sha256)}</span>'),
                ("Signed", _e("yes" if review.signed else "no")),
                ("Models", _e(f"GPT {details.gpt_version}, SoVITS {details.model_version}")),
                (
                    "Reference clip",
                    f"{_zh(details.reference.text)} ({_e(details.reference.language)})",
                ),
                ("Text split", _e(details.cut)),
                ("Lexicon", _e(details.lexicon or "none")),
                ("Needs firmware", _e(manifest.min_firmware)),
            ]
        ),
        "</table>",
        '<p class="muted">Approved by: ______________________ Date: ____________</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _policy(policy: str) -> str:
    if policy == "curated":
        return "curated: the voice says only these phrases"
    return "free: visitors may also type their own text"


def _phrase_html(p: PhraseReview) -> str:
    facts = [f"language {_e(p.lang)}"]
    if p.button is not None:
        facts.append(f"button {p.button}")
    if p.speed is not None:
        facts.append(f"speed {p.speed:g}")
    if p.seed is not None:
        facts.append(f"seed {p.seed}")
    if p.seconds is not None:
        facts.append(f"{p.seconds:.2f} s")
    facts.append(f"loudness {_e(_db(p.lufs, 'LUFS'))}")
    facts.append(f"true peak {_e(_db(p.true_peak_dbtp, 'dBTP'))}")
    lang = ' lang="zh"' if p.lang == "zh" else ""
    out = [
        f'<div class="phrase" id="phrase-{_e(p.id)}">',
        f"<h3>{_zh(p.label_zh)} / {_e(p.label_en)} "
        f'<span class="muted mono">({_e(p.id)})</span></h3>',
        f'<div class="text"{lang}>{_e(p.text)}</div>',
        f'<div class="muted">{", ".join(facts)}</div>',
    ]
    for number, segment in enumerate(p.segments, 1):
        phones = " ".join(segment["phones"])
        out.append(
            f'<div class="phones">{number}. <span{lang}>{_e(segment["text"])}</span> &rarr; '
            f"{_e(phones)}</div>"
        )
    if p.uncovered:
        out.append(f'<div class="warn">Uncovered words: {_e(", ".join(p.uncovered))}</div>')
    if p.problem:
        out.append(f'<div class="bad">{_e(p.problem)}</div>')
    if p.file:
        out.append(f'<audio controls preload="none" src="{_e(p.file)}"></audio>')
    out.append('<div class="approve"><span></span>approved</div></div>')
    return "\n".join(out)


__all__ = [
    "ArchivalReview",
    "PhraseReview",
    "Review",
    "ReviewError",
    "render_review",
    "review_html",
]
