"""A voice's custom lexicon: pronunciations that override the dictionaries.

Dialect words, place names and the elders' own names are often missing from,
or wrong in, the stock dictionaries.  A voice pack can carry a UTF-8 text file
with one entry per line:

    # comment
    zh 阿嬷 a1 ma1          (Mandarin: word, then one pinyin syllable per character)
    en Nguyen W IH1 N       (English: word, then ARPAbet phones)

Pinyin carries its tone as a digit 1-5 (5 = neutral).  Lines are checked
when the file is read; a bad line is an error naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_PINYIN = re.compile(r"^[a-zü]+[1-5]$")
_ARPABET = re.compile(r"^[A-Z]{1,2}[0-2]?$")


class LexiconError(ValueError):
    """A lexicon file or entry that cannot be used; names the line."""


@dataclass
class Lexicon:
    """Word -> pronunciation overrides, per language."""

    zh: dict[str, list[str]] = field(default_factory=dict)
    en: dict[str, list[str]] = field(default_factory=dict)

    def add(self, language: str, word: str, pronunciation: list[str]) -> None:
        """Add one entry after checking it (raises LexiconError)."""
        if not word or not pronunciation:
            raise LexiconError("an entry needs a word and its pronunciation")
        if language == "zh":
            syllables = [p.lower().replace("v", "ü") for p in pronunciation]
            bad = [p for p in syllables if not _PINYIN.match(p)]
            if bad:
                raise LexiconError(f"{word}: {bad[0]!r} is not pinyin with a tone digit 1-5")
            if len(syllables) != len(word):
                raise LexiconError(f"{word}: {len(word)} characters but {len(syllables)} syllables")
            self.zh[word] = [p.replace("ü", "v") for p in syllables]
        elif language == "en":
            phones = [p.upper() for p in pronunciation]
            bad = [p for p in phones if not _ARPABET.match(p)]
            if bad:
                raise LexiconError(f"{word}: {bad[0]!r} is not an ARPAbet phone")
            self.en[word.upper()] = phones
        else:
            raise LexiconError(f"unknown language {language!r}; use zh or en")

    @classmethod
    def from_file(cls, path: str | Path) -> Lexicon:
        """Read a lexicon file (format in the module docstring)."""
        lexicon = cls()
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LexiconError(f"{path}: cannot read the lexicon ({exc})") from exc
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) < 3:
                raise LexiconError(f"{path}:{number}: expected 'LANG WORD PRONUNCIATION...'")
            try:
                lexicon.add(parts[0], parts[1], parts[2:])
            except LexiconError as exc:
                raise LexiconError(f"{path}:{number}: {exc}") from exc
        return lexicon
