"""English text to GPT-SoVITS phones (the reference's `clean_text(text, "en", version)`).

Per token, first match wins:
  * a voice lexicon entry (any case) - overrides everything below;
  * no letters: the token itself (punctuation is a phone);
  * one letter: its dictionary reading, except a capital "A" reads "EY1";
  * a g2p_en homograph: the reading for its tag (see tokenise.py);
  * otherwise `_lookup`: dictionary, then the name dictionary for Title-case words,
    then words of 3 characters or fewer spelled letter by letter ("Wi" -> W I),
    then "'s" possessives, then a split into known words (wordsegment), and last
    the neural model (those words are reported in `uncovered`).
The phones are then filtered to the symbol table (g2p_en's bare "UW" and markers
are dropped, "'" becomes "-"), and a result shorter than 4 phones gets a leading ",".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType

from engines.text.english.dictionary import EnglishDictionaries, load_dictionaries
from engines.text.english.neural_g2p import predict_word
from engines.text.english.normalise import normalize_english
from engines.text.english.tokenise import tag, tokenize
from engines.text.lexicon import Lexicon
from engines.text.phones import G2PResult
from engines.text.symbols import SYMBOL_VERSIONS, UNKNOWN, symbol_ids


class EnglishFrontendError(ValueError):
    """A request the English frontend cannot serve (only: an unknown symbol-table version)."""


_HAS_LETTER = re.compile("[a-z]")
_POSSESSIVE = re.compile(r"[a-z]+'s")
_VOICELESS_ENDINGS = frozenset({"P", "T", "K", "F", "TH", "HH"})  # + S
_SIBILANT_ENDINGS = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})  # + AH0 Z
_DROPPED = frozenset({" ", "<pad>", "UW", "</s>", "<s>"})
MIN_PHONES = 4


@cache
def _segmenter() -> ModuleType:
    """wordsegment with its word counts loaded (once; about half a second)."""
    import wordsegment

    wordsegment.load()
    return wordsegment


@dataclass
class _Reader:
    """One call's lookup state: dictionaries, the voice lexicon and the misses."""

    dicts: EnglishDictionaries
    lexicon: dict[str, list[str]]
    uncovered: list[str] = field(default_factory=list)

    def token(self, token: str, pos: str) -> list[str]:
        word = token.lower()
        custom = self.lexicon.get(token.upper())
        if custom is not None and _HAS_LETTER.search(word):
            return list(custom)
        if not _HAS_LETTER.search(word):
            return [word]
        if len(word) == 1:
            return ["EY1"] if token == "A" else list(self.dicts.words[word])
        homograph = self.dicts.homographs.get(word)
        if homograph is not None:
            return list(homograph.pick(pos))
        return self.lookup(token)

    def lookup(self, token: str) -> list[str]:
        word = token.lower()
        custom = self.lexicon.get(word.upper())
        if custom is not None:
            return list(custom)
        if len(word) > 1 and word in self.dicts.words:
            return list(self.dicts.words[word])
        if token.istitle() and word in self.dicts.names:
            return list(self.dicts.names[word])
        if len(word) <= 3:
            return self._spell(word)
        if _POSSESSIVE.fullmatch(word):
            return self._possessive(word[:-2])
        pieces = _segmenter().segment(word)
        if len(pieces) <= 1:
            self.uncovered.append(word)
            return predict_word(word)
        return [phone for piece in pieces for phone in self.lookup(piece)]

    def _spell(self, word: str) -> list[str]:
        phones: list[str] = []
        for ch in word:
            if ch == "a":
                phones.append("EY1")
            elif not ch.isalpha():
                phones.append(ch)
            else:
                phones.extend(self.dicts.words[ch])
        return phones

    def _possessive(self, stem: str) -> list[str]:
        phones = self.lookup(stem)
        last = phones[-1] if phones else ""  # the model may give nothing: then "Z"
        if last in _VOICELESS_ENDINGS:
            return [*phones, "S"]
        if last in _SIBILANT_ENDINGS:
            return [*phones, "AH0", "Z"]
        return [*phones, "Z"]


def _to_symbols(raw: list[str]) -> list[str]:
    """Drop separators and g2p_en markers; keep what the v2 table knows; "'" -> "-"."""
    table = symbol_ids("v2")
    phones: list[str] = []
    for phone in raw:
        if phone in _DROPPED:
            continue
        if phone == "<unk>":
            phone = UNKNOWN
        if phone in table:
            phones.append(phone)
        elif phone == "'":
            phones.append("-")
    return phones


def english_g2p(text: str, version: str = "v2", lexicon: Lexicon | None = None) -> G2PResult:
    """Normalise `text` and convert it to phones of symbol table `version` ("v1" or "v2").

    English output is the same for v1 and v2 (every phone it can produce is in
    both tables).  Text without letters still gives phones: at least [","].
    """
    if version not in SYMBOL_VERSIONS:
        raise EnglishFrontendError(
            f"unknown version {version!r}; expected one of {SYMBOL_VERSIONS}"
        )
    norm_text = normalize_english(text)
    reader = _Reader(load_dictionaries(), lexicon.en if lexicon is not None else {})
    raw: list[str] = []
    for token, pos in tag(tokenize(norm_text)):
        raw.extend(reader.token(token, pos))
    phones = _to_symbols(raw)
    if len(phones) < MIN_PHONES:
        phones = [",", *phones]
    table = symbol_ids(version)
    phones = [p if p in table else UNKNOWN for p in phones]
    return G2PResult(norm_text=norm_text, phones=phones, word2ph=None, uncovered=reader.uncovered)
