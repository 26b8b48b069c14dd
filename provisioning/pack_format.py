"""The voice-pack format: layout, manifest keys, path allow-list and size limits.

A pack is a folder `<id>-<version>.kvp/` (or an uncompressed `.tar` holding
exactly that folder) with `manifest.json`, its detached Ed25519 signature
`manifest.json.sig`, and the payload files the manifest lists.  The key names
here are an interface other tools implement; `PACK_FORMAT.md` beside this file
documents every one.  Parsing is strict: a key that is missing, unknown or of
the wrong type is refused with its name, so a pack means one thing to every
reader.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from provisioning.strict_json import (
    DATE,
    HEX64,
    Obj,
    PackFormatError,
    dumps_canonical,
    loads_strict,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
PACK_SUFFIX = ".kvp"
KINDS = ("voice", "base")
MODEL_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
GPT_VERSIONS = ("v1", "v2")
LANGUAGES = ("zh", "en")
CUTS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")

# Fixed payload names of a voice pack (the voice folder's names where they exist).
GPT_FILE = "gpt.ckpt"
SOVITS_FILE = "sovits.pth"
PROMPT_FILE = "prompt.npz"
PHRASES_BERT_FILE = "phrases_bert.npz"
LEXICON_FILE = "lexicon.txt"
REFERENCE_FILE = "reference.wav"
ARCHIVAL_DIR = "archival"
PORTRAIT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
AUDIO_SUFFIXES = (".wav", ".flac")
#: Folder of a base pack holding the BERT model (the helper models' folder name).
BERT_FOLDER = "chinese-roberta-wwm-ext-large"

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
PHRASE_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
FIRMWARE_PATTERN = re.compile(r"\d{1,4}(\.\d{1,4}){0,3}")
#: One path component: ASCII letters, digits, '.', '_' and '-', not starting with a dot.
COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_PATH_CHARS = 255
MAX_DEPTH = 4
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class Limits:
    """What a reader accepts before it reads a byte of payload (against packs that fill disks)."""

    max_file_bytes: int = 3 << 30
    """One payload file (a BERT model is 1.3 GB, a v2ProPlus SoVITS file under 200 MB)."""

    max_total_bytes: int = 6 << 30
    """The whole pack."""

    max_files: int = 2000
    """Payload files (and, in a tar, members of any kind)."""

    max_manifest_bytes: int = 4 << 20
    """`manifest.json`."""


def firmware_version() -> str:
    """This firmware's version (the installed package's), compared with `min_firmware`."""
    try:
        return metadata.version("heritage-voice-kiosk")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def pack_folder_name(voice_id: str, version: int) -> str:
    return f"{voice_id}-{version}{PACK_SUFFIX}"


def check_payload_path(path: str, where: str = "path") -> str:
    """Refuse any payload path outside the allow-list; returns it unchanged.

    Relative, '/'-separated, at most `MAX_DEPTH` components of `COMPONENT`
    characters: no absolute paths, '..', backslashes, NULs, empty or hidden
    components, and not the manifest or its signature.
    """
    if not isinstance(path, str) or not path:
        raise PackFormatError(f"{where}: empty path")
    if "\x00" in path:
        raise PackFormatError(f"{where}: {path!r} contains a NUL character")
    if "\\" in path:
        raise PackFormatError(f"{where}: {path!r} contains a backslash; use '/'")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        raise PackFormatError(f"{where}: {path!r} is an absolute path; paths are relative")
    parts = path.split("/")
    if ".." in parts:
        raise PackFormatError(f"{where}: {path!r} climbs out of the pack ('..')")
    if any(p in ("", ".") for p in parts):
        raise PackFormatError(f"{where}: {path!r} has an empty or '.' component")
    if len(path) > MAX_PATH_CHARS or len(parts) > MAX_DEPTH:
        raise PackFormatError(f"{where}: {path!r} is too long or too deep")
    for part in parts:
        if not COMPONENT.fullmatch(part):
            raise PackFormatError(
                f"{where}: {path!r}: {part!r} may hold only ASCII letters, digits, '.', '_' "
                "and '-', and must not start with '.'"
            )
    if path in (MANIFEST, SIGNATURE):
        raise PackFormatError(f"{where}: {path!r} is reserved for the manifest and signature")
    return path


def check_unique_paths(paths: list[str], where: str) -> None:
    """No duplicates, no two names equal but for case, no file that is also a folder."""
    seen: dict[str, str] = {}
    for path in paths:
        folded = path.casefold()
        if folded in seen:
            other = seen[folded]
            what = "twice" if other == path else f"and {other!r} differ only in case"
            raise PackFormatError(f"{where}: {path!r} {what}")
        seen[folded] = path
    for path in paths:
        parts = path.casefold().split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise PackFormatError(f"{where}: {path!r} lies under a file of the same name")


# --- the manifest ------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Disclosure:
    zh: str
    en: str


@dataclass(frozen=True)
class Consent:
    """Who allowed this voice, for what, until when, and what visitors must be told."""

    subject: str
    status: str
    authorised_by: str
    relation: str
    date: str
    document_sha256: str
    text_policy: str
    exhibits: tuple[str, ...]
    valid_until: str
    disclosure: Disclosure

    def expired(self, today: dt.date) -> bool:
        return dt.date.fromisoformat(self.valid_until) < today

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "status": self.status,
            "authorised_by": self.authorised_by,
            "relation": self.relation,
            "date": self.date,
            "document_sha256": self.document_sha256,
            "text_policy": self.text_policy,
            "exhibits": list(self.exhibits),
            "valid_until": self.valid_until,
            "disclosure": {"zh": self.disclosure.zh, "en": self.disclosure.en},
        }


CONSENT_KEYS = (
    "subject",
    "status",
    "authorised_by",
    "relation",
    "date",
    "document_sha256",
    "text_policy",
    "exhibits",
    "valid_until",
    "disclosure",
)
CONSENT_STATUS = ("living", "deceased")
TEXT_POLICIES = ("curated", "free")


@dataclass(frozen=True)
class Phrase:
    """One approved phrase: what it says, in which language, and how it is offered."""

    id: str
    text: str
    lang: str
    label_zh: str
    label_en: str
    button: int | None = None
    speed: float | None = None
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "lang": self.lang,
            "label_zh": self.label_zh,
            "label_en": self.label_en,
            "button": self.button,
            "speed": self.speed,
            "seed": self.seed,
        }


PHRASE_KEYS = ("id", "text", "lang", "label_zh", "label_en")
PHRASE_OPTIONAL = ("button", "speed", "seed")
MAX_BUTTON = 32


@dataclass(frozen=True)
class Bio:
    name_zh: str
    name_en: str
    dates: str
    bio_zh: str
    bio_en: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


BIO_KEYS = ("name_zh", "name_en", "dates", "bio_zh", "bio_en")


@dataclass(frozen=True)
class Reference:
    path: str
    text: str
    language: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "text": self.text, "language": self.language}


@dataclass(frozen=True)
class Archival:
    """An original recording of the elder: played as it is, always labelled as original."""

    path: str
    title: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "title": self.title}


@dataclass(frozen=True)
class VoiceDetails:
    """The keys only a voice pack has."""

    model_version: str
    gpt_version: str
    consent: Consent
    reference: Reference
    cut: str
    phrases: tuple[Phrase, ...]
    bio: Bio | None
    portrait: str | None
    archival: tuple[Archival, ...]
    lexicon: str | None


@dataclass(frozen=True)
class Manifest:
    """A parsed `manifest.json` of either kind; `voice` is None for a base pack."""

    kind: str
    id: str
    version: int
    display_name_zh: str
    display_name_en: str
    min_firmware: str
    files: tuple[FileEntry, ...]
    voice: VoiceDetails | None = None
    bert_folder: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def folder_name(self) -> str:
        return pack_folder_name(self.id, self.version)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "kind": self.kind,
            "id": self.id,
            "version": self.version,
            "display_name": {"zh": self.display_name_zh, "en": self.display_name_en},
            "min_firmware": self.min_firmware,
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
        }
        if self.kind == "base":
            out["bert_folder"] = self.bert_folder
            return out
        v = self.voice
        assert v is not None
        out.update(
            {
                "model_version": v.model_version,
                "gpt_version": v.gpt_version,
                "consent": v.consent.to_json(),
                "reference": v.reference.to_json(),
                "cut": v.cut,
                "phrases": [p.to_json() for p in v.phrases],
                "bio": v.bio.to_json() if v.bio else None,
                "portrait": v.portrait,
                "archival": [a.to_json() for a in v.archival],
                "lexicon": v.lexicon,
            }
        )
        return out

    def to_bytes(self) -> bytes:
        """The bytes to write as `manifest.json` (and to sign); parsing them gives self."""
        data = dumps_canonical(self.to_json())
        if parse_manifest(data) != self:
            raise PackFormatError("internal: the manifest does not read back as written")
        return data


COMMON_KEYS = ("format_version", "kind", "id", "version", "display_name", "min_firmware", "files")
VOICE_KEYS = (
    "model_version",
    "gpt_version",
    "consent",
    "reference",
    "cut",
    "phrases",
    "bio",
    "portrait",
    "archival",
    "lexicon",
)
BASE_KEYS = ("bert_folder",)


def parse_manifest(data: bytes, source: str = MANIFEST, limits: Limits | None = None) -> Manifest:
    """Parse and check a manifest completely (everything but the files themselves)."""
    limits = limits or Limits()
    if len(data) > limits.max_manifest_bytes:
        raise PackFormatError(f"{source}: larger than {limits.max_manifest_bytes} bytes")
    raw = loads_strict(data, source)
    if not isinstance(raw, dict):
        raise PackFormatError(f"{source}: expected a JSON object")
    # Kind and format first, so a wrong one is named as such rather than as key noise.
    if "format_version" in raw and raw["format_version"] != FORMAT_VERSION:
        fv = raw["format_version"]
        raise PackFormatError(
            f"{source}: format_version {fv!r} is not {FORMAT_VERSION}; "
            "this firmware reads format 1 only (update the box or the workstation tool)"
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise PackFormatError(
            f"{source}: kind {kind!r} is not a pack kind ({', '.join(KINDS)}); "
            "a revocation list is a .json file beside its .sig, not a pack"
        )
    extra = VOICE_KEYS if kind == "voice" else BASE_KEYS
    top = Obj(raw, "", (*COMMON_KEYS, *extra), source=source)
    top.int("format_version")
    voice_id = top.str("id", pattern=ID_PATTERN)
    version = top.int("version", 1, 10**9)
    name = top.obj("display_name", LANGUAGES)
    min_firmware = top.str("min_firmware", pattern=FIRMWARE_PATTERN)
    files = _parse_files(top, limits)
    paths = {f.path for f in files}
    common = {
        "kind": kind,
        "id": voice_id,
        "version": version,
        "display_name_zh": name.str("zh", max_len=200),
        "display_name_en": name.str("en", max_len=200),
        "min_firmware": min_firmware,
        "files": files,
    }
    if kind == "base":
        folder = top.str("bert_folder", choices=(BERT_FOLDER,))
        if not any(p.startswith(folder + "/") for p in paths):
            top.fail("bert_folder", f"no listed file lies in {folder}/")
        if any(not p.startswith(folder + "/") for p in paths):
            stray = sorted(p for p in paths if not p.startswith(folder + "/"))[0]
            top.fail("files", f"{stray!r} lies outside {folder}/")
        return Manifest(**common, bert_folder=folder)  # type: ignore[arg-type]
    return Manifest(**common, voice=_parse_voice(top, paths))  # type: ignore[arg-type]


def _parse_files(top: Obj, limits: Limits) -> tuple[FileEntry, ...]:
    items = top.list("files", empty=False, max_items=limits.max_files)
    entries = []
    for i, item in enumerate(items):
        o = top.child(item, f"files[{i}]", ("path", "size", "sha256"))
        path = _path(o, "path")
        size = o.int("size", 0, limits.max_file_bytes)
        entries.append(FileEntry(path, size, o.str("sha256", pattern=HEX64)))
    try:
        check_unique_paths([e.path for e in entries], top.name("files"))
    except PackFormatError as exc:
        top.fail("files", str(exc).removeprefix("files: "))
    total = sum(e.size for e in entries)
    if total > limits.max_total_bytes:
        top.fail("files", f"{total} bytes in all, over the limit of {limits.max_total_bytes}")
    return tuple(sorted(entries, key=lambda e: e.path))


def _path(o: Obj, key: str) -> str:
    try:
        return check_payload_path(o.str(key), "path")
    except PackFormatError as exc:
        o.fail(key, str(exc).removeprefix("path: "))


def _parse_voice(top: Obj, paths: set[str]) -> VoiceDetails:
    def listed(o: Obj, key: str, path: str) -> str:
        if path not in paths:
            o.fail(key, f"{path!r} is not in files")
        return path

    for required in (GPT_FILE, SOVITS_FILE, PROMPT_FILE, PHRASES_BERT_FILE):
        listed(top, "files", required)
    model_version = top.str("model_version", choices=MODEL_VERSIONS)
    gpt_version = top.str("gpt_version", choices=GPT_VERSIONS)
    consent = parse_consent(top.obj("consent", CONSENT_KEYS))
    ref = top.obj("reference", ("path", "text", "language"))
    ref_path = ref.str("path", choices=(REFERENCE_FILE,))
    reference = Reference(
        listed(ref, "path", ref_path),
        ref.str("text", max_len=1000),
        ref.str("language", choices=LANGUAGES),
    )
    cut = top.str("cut", choices=CUTS)
    phrases = parse_phrase_list(top)
    if consent.text_policy == "curated" and not phrases:
        top.fail("phrases", "a curated voice needs at least one phrase")
    bio_obj = top.opt_obj("bio", BIO_KEYS)
    bio = None
    if bio_obj is not None:
        bio = Bio(*(bio_obj.str(k, max_len=8000) for k in BIO_KEYS))
    portrait = top.opt_str("portrait")
    if portrait is not None:
        if (
            "/" in portrait
            or not portrait.startswith("portrait.")
            or not portrait.endswith(PORTRAIT_SUFFIXES)
        ):
            top.fail("portrait", f"{portrait!r} must be portrait.png, .jpg, .jpeg or .webp")
        listed(top, "portrait", portrait)
    archival = []
    archival_items = top.list("archival", max_items=500)
    for i, item in enumerate(archival_items):
        a = top.child(item, f"archival[{i}]", ("path", "title"))
        path = _path(a, "path")
        if not path.startswith(ARCHIVAL_DIR + "/") or not path.endswith(AUDIO_SUFFIXES):
            a.fail("path", f"{path!r} must be archival/NAME.wav or archival/NAME.flac")
        archival.append(Archival(listed(a, "path", path), a.str("title", max_len=500)))
    lexicon = top.opt_str("lexicon", choices=(LEXICON_FILE,))
    if lexicon is not None:
        listed(top, "lexicon", lexicon)
    known = {
        GPT_FILE,
        SOVITS_FILE,
        PROMPT_FILE,
        PHRASES_BERT_FILE,
        reference.path,
        *([portrait] if portrait else []),
        *([lexicon] if lexicon else []),
        *(a.path for a in archival),
    }
    stray = sorted(paths - known)
    if stray:
        top.fail("files", f"{stray[0]!r} has no role in a voice pack")
    return VoiceDetails(
        model_version=model_version,
        gpt_version=gpt_version,
        consent=consent,
        reference=reference,
        cut=cut,
        phrases=phrases,
        bio=bio,
        portrait=portrait,
        archival=tuple(archival),
        lexicon=lexicon,
    )


def parse_consent(c: Obj) -> Consent:
    """The consent block (from the manifest, or a `consent.toml` turned into JSON types)."""
    date = _date(c, "date")
    valid_until = _date(c, "valid_until")
    if valid_until < date:
        c.fail("valid_until", f"{valid_until} is before the consent date {date}")
    exhibits = c.list("exhibits", empty=False, max_items=100)
    for i, exhibit in enumerate(exhibits):
        if not isinstance(exhibit, str) or not exhibit.strip():
            c.fail(f"exhibits[{i}]", "expected a non-empty string")
    disclosure = c.obj("disclosure", LANGUAGES)
    return Consent(
        subject=c.str("subject", max_len=500),
        status=c.str("status", choices=CONSENT_STATUS),
        authorised_by=c.str("authorised_by", max_len=500),
        relation=c.str("relation", max_len=200),
        date=date,
        document_sha256=c.str("document_sha256", pattern=HEX64),
        text_policy=c.str("text_policy", choices=TEXT_POLICIES),
        exhibits=tuple(exhibits),
        valid_until=valid_until,
        disclosure=Disclosure(
            disclosure.str("zh", max_len=2000), disclosure.str("en", max_len=2000)
        ),
    )


def _date(o: Obj, key: str) -> str:
    text = o.str(key, pattern=DATE)
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        o.fail(key, f"{text!r} is not a calendar date (YYYY-MM-DD)")
    return text


def parse_phrase_list(
    top: Obj, key: str = "phrases", *, absent_ok: bool = False
) -> tuple[Phrase, ...]:
    """The phrases under `key`: ids and buttons unique.  In a manifest every phrase key is
    present (`button`, `speed`, `seed` may be null); in `phrases.toml` they may be left out
    (`absent_ok`)."""
    phrases = []
    ids: set[str] = set()
    buttons: set[int] = set()
    required = PHRASE_KEYS if absent_ok else (*PHRASE_KEYS, *PHRASE_OPTIONAL)
    optional = PHRASE_OPTIONAL if absent_ok else ()
    for i, item in enumerate(top.list(key, max_items=1000)):
        p = top.child(item, f"{key}[{i}]", required, optional)
        phrase = _phrase(p)
        if phrase.id in ids:
            p.fail("id", f"{phrase.id!r} is used by two phrases")
        ids.add(phrase.id)
        if phrase.button is not None:
            if phrase.button in buttons:
                p.fail("button", f"button {phrase.button} is given to two phrases")
            buttons.add(phrase.button)
        phrases.append(phrase)
    return tuple(phrases)


def _phrase(p: Obj) -> Phrase:
    return Phrase(
        id=p.str("id", pattern=PHRASE_ID_PATTERN),
        text=p.str("text", max_len=500),
        lang=p.str("lang", choices=LANGUAGES),
        label_zh=p.str("label_zh", max_len=200),
        label_en=p.str("label_en", max_len=200),
        button=p.opt_int("button", 1, MAX_BUTTON),
        speed=p.opt_float("speed", 0.5, 2.0),
        seed=p.opt_int("seed", 0, 2**31 - 1),
    )
