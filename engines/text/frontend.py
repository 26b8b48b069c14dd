"""Text to phone ids, the whole frontend: segment, split languages, g2p, symbol ids.

`TextFrontend.segments()` is what synthesis asks for: a list of
`PhoneSegment`s, each with its phone ids and, per language part, what BERT
needs (normalised text and word-to-phone counts).  Every input yields phones
or a `TextFrontendError` that says what to change; never a traceback.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from engines.text.chinese import chinese_g2p
from engines.text.english import english_g2p
from engines.text.language_split import LANGUAGE_MODES, split_for_mode
from engines.text.lexicon import Lexicon
from engines.text.phones import G2PResult
from engines.text.segmentation import segment_text
from engines.text.symbols import SYMBOL_VERSIONS, phones_to_ids

#: Characters that become a silence symbol in Mandarin text (the reference's "special" marks).
_SPECIAL_SILENCES = {"￥": "SP2", "^": "SP3"}
#: A segment with fewer phones is redone with "." in front, as the reference does.
MIN_SEGMENT_PHONES = 6
_MULTI_SPACE = re.compile(r" {2,}")


class TextFrontendError(ValueError):
    """Text that cannot be spoken, with the reason and what to change."""


@dataclass(frozen=True)
class LanguagePart:
    """One language run of a segment: what BERT needs for it."""

    lang: str
    norm_text: str
    phones: list[str]
    word2ph: list[int] | None  # Mandarin only


@dataclass(frozen=True)
class PhoneSegment:
    """One synthesis segment: its text, phones, ids and language parts."""

    text: str
    parts: list[LanguagePart]
    phone_ids: list[int]
    uncovered: list[str] = field(default_factory=list)

    @property
    def phones(self) -> list[str]:
        return [p for part in self.parts for p in part.phones]

    @property
    def norm_text(self) -> str:
        return "".join(part.norm_text for part in self.parts)


class TextFrontend:
    """The text frontend of one voice: its symbol table and custom lexicon."""

    def __init__(self, symbols_version: str = "v2", lexicon: Lexicon | None = None) -> None:
        if symbols_version not in SYMBOL_VERSIONS:
            raise ValueError(f"symbols_version must be one of {SYMBOL_VERSIONS}")
        self.symbols_version = symbols_version
        self.lexicon = lexicon or Lexicon()

    def g2p(self, text: str, lang: str) -> G2PResult:
        """One language run through its cleaner (with the reference's special silences)."""
        if lang == "en":
            return english_g2p(text, self.symbols_version, self.lexicon)
        for mark, silence in _SPECIAL_SILENCES.items():
            if mark in text:
                result = chinese_g2p(text.replace(mark, ","), self.symbols_version, self.lexicon)
                phones = [silence if p == "," else p for p in result.phones]
                return G2PResult(result.norm_text, phones, result.word2ph, result.uncovered)
        return chinese_g2p(text, self.symbols_version, self.lexicon)

    def phones(self, text: str, language: str = "zh") -> PhoneSegment:
        """Phones of one segment, retried with "." in front when it has fewer than 6."""
        segment = self._phones_once(text, language)
        if len(segment.phone_ids) < MIN_SEGMENT_PHONES:
            segment = self._phones_once("." + text, language)
        return segment

    def _phones_once(self, text: str, language: str) -> PhoneSegment:
        parts, uncovered = [], []
        collapsed = _MULTI_SPACE.sub(" ", text)
        for run in split_for_mode(collapsed, language):
            result = self.g2p(run.text, run.lang)
            parts.append(LanguagePart(run.lang, result.norm_text, result.phones, result.word2ph))
            uncovered.extend(result.uncovered)
        ids = phones_to_ids([p for part in parts for p in part.phones], self.symbols_version)
        return PhoneSegment(text, parts, ids, uncovered)

    def segments(
        self, text: str, language: str = "zh", cut_method: str = "cut1"
    ) -> list[PhoneSegment]:
        """The whole text as synthesis segments; raises TextFrontendError if nothing is left."""
        if language not in LANGUAGE_MODES:
            raise TextFrontendError(
                f"unknown language {language!r}; use one of {', '.join(LANGUAGE_MODES)}"
            )
        if not text or not text.strip():
            raise TextFrontendError("the text is empty; give at least one word to say")
        pieces = segment_text(text, cut_method, language)
        segments = [self.phones(piece, language) for piece in pieces]
        segments = [s for s in segments if _speaks(s)]
        if not segments:
            raise TextFrontendError(
                f"nothing pronounceable in {_preview(text)}: this voice speaks Mandarin and "
                "English; other scripts, emoji and symbols are skipped"
            )
        return segments

    def uncovered(self, text: str, language: str = "zh") -> list[str]:
        """Words and characters of `text` that no dictionary or lexicon entry covers.

        Letters of unsupported scripts are listed too, so a technician sees
        everything that will not be pronounced as written.
        """
        found: list[str] = []
        for piece in segment_text(text, "cut0", language) if text.strip() else []:
            found.extend(self.phones(piece, language).uncovered)
        for char in text:
            if unicodedata.category(char).startswith("L") and not _is_supported_letter(char):
                found.append(char)
        return list(dict.fromkeys(found))


def _speaks(segment: PhoneSegment) -> bool:
    """A segment says something if it has a phone other than punctuation and silence."""
    silent = {"!", "?", "…", ",", ".", "-", "SP", "SP2", "SP3", "UNK", "_"}
    return any(p not in silent for p in segment.phones)


def _is_supported_letter(char: str) -> bool:
    code = ord(char)
    return char.isascii() or 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF


def _preview(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")
