"""The TOML files a curator writes for `kiosk pack`: phrases, consent and bio.

They are read with `tomllib` and held to the manifest's own rules (the same
checks, the same key names), so a mistake is caught on the workstation with
the file and key named, not on a box in a gallery.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from provisioning.pack_format import (
    BIO_KEYS,
    CONSENT_KEYS,
    Bio,
    Consent,
    Phrase,
    parse_consent,
    parse_phrase_list,
)
from provisioning.strict_json import Obj, PackFormatError

MAX_TOML_BYTES = 4 << 20


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackFormatError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    if len(data) > MAX_TOML_BYTES:
        raise PackFormatError(f"{path}: larger than {MAX_TOML_BYTES} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PackFormatError(f"{path}: not UTF-8 ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PackFormatError(f"{path}: not valid TOML ({exc})") from exc


def _dates_to_text(value: Any, where: str) -> Any:
    """TOML dates (`date = 2026-03-14`) become the manifest's "YYYY-MM-DD" strings."""
    if isinstance(value, dt.datetime | dt.time):
        raise PackFormatError(f"{where}: give a date (YYYY-MM-DD), not a time")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _dates_to_text(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_dates_to_text(v, where) for v in value]
    return value


def read_phrases(path: str | Path) -> tuple[Phrase, ...]:
    """`phrases.toml`: `[[phrase]]` tables with id, text, lang, label_zh, label_en, and
    optionally button, speed, seed."""
    raw = read_toml(path, "phrase list")
    top = Obj(raw, "", ("phrase",), source=str(path))
    phrases = parse_phrase_list(top, "phrase", absent_ok=True)
    if not phrases:
        raise PackFormatError(f"{path}: no [[phrase]] tables; list the phrases the voice says")
    return phrases


def read_consent(path: str | Path) -> Consent:
    """`consent.toml`: every consent key of the manifest, `[disclosure]` with zh and en."""
    raw = _dates_to_text(read_toml(path, "consent file"), "consent")
    try:
        return parse_consent(Obj(raw, "", CONSENT_KEYS, source=str(path)))
    except PackFormatError as exc:
        raise PackFormatError(
            f"{exc}; a voice is packed only with its complete consent record"
        ) from exc


def read_bio(path: str | Path) -> Bio:
    """`bio.toml`: name_zh, name_en, dates, bio_zh, bio_en."""
    raw = _dates_to_text(read_toml(path, "bio"), "bio")
    o = Obj(raw, "", BIO_KEYS, source=str(path))
    return Bio(*(o.str(k, max_len=8000) for k in BIO_KEYS))
