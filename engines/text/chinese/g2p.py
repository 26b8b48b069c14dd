"""Mandarin text -> phones, the entry point of the zh frontend.

Same pipeline and result as the reference's `clean_text(text, "zh", version)`:
normalise; cut the normalised text after every punctuation mark; per piece,
jieba words with tags -> regrouping -> pypinyin readings (custom lexicon laid
over them) -> tone sandhi -> erhua tones (v2) -> two phones per character, one
per punctuation mark.  v1 differs only in skipping erhua.  As in the
reference, a "￥" in the text makes every "," phone the pause "SP2" (and "^"
makes it "SP3"), and phones missing from the version's table become "UNK".
"""

from __future__ import annotations

import re

from ..lexicon import Lexicon
from ..phones import G2PResult
from ..symbols import UNKNOWN, symbol_ids
from .erhua import apply_erhua
from .normalise import PUNCTUATION, check_version, normalize_chinese
from .readings import UNREADABLE, SentenceReader
from .resources import traditional_to_simplified
from .segment import search_pieces, tagged_words, warm_up
from .syllables import syllable_phones
from .tone_sandhi import Word, apply_sandhi, merge_words

# Pause marks typed into the text: the first one present wins, as in the reference.
_PAUSE_MARKS = (("￥", "SP2"), ("^", "SP3"))
_PIECE = re.compile(r"[^!?…,.\-]+[!?…,.\-]?|[!?…,.\-]")
# Ideographs the normaliser has to drop (outside U+4E00..U+9FA5), reported as uncovered.
_DROPPED_IDEOGRAPH = re.compile(
    "[\u3007\u3400-\u4dbf\u9fa6-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)


def _sentence_phones(
    sentence: str, version: str, lexicon: dict[str, list[str]] | None
) -> tuple[list[str], list[int], list[str]]:
    """Phones, word2ph and uncovered characters of one punctuation-delimited piece."""
    reader = SentenceReader(sentence, lexicon)
    words, start = [], 0
    for text, tag in tagged_words(sentence, reader.spans):
        words.append(Word(text, tag, start))
        start += len(text)
    phones: list[str] = []
    word2ph: list[int] = []
    for word in merge_words(words, reader):
        initials, finals = reader.reading(word.text, word.start)
        written = reader.written(word.start, len(word.text))
        finals = apply_sandhi(word.text, word.tag, finals, search_pieces, written)
        if version != "v1":
            rhotic = apply_erhua(word.text, word.tag, finals)
            finals = [finals[k] if k in written else f for k, f in enumerate(rhotic)]
        for char, initial, final in zip(word.text, initials, finals, strict=True):
            if char in PUNCTUATION:
                sounds = [char]
            elif final == UNREADABLE:
                sounds = [UNKNOWN]
            else:
                sounds = syllable_phones(initial, final) or [UNKNOWN]
            phones += sounds
            word2ph.append(len(sounds))
    return phones, word2ph, reader.uncovered(sentence)


def preload() -> None:
    """Load jieba, pypinyin and the data files now (a few seconds), e.g. at boot."""
    warm_up()
    chinese_g2p("一个不好的东西儿12:30")


def chinese_g2p(text: str, version: str = "v2", lexicon: Lexicon | None = None) -> G2PResult:
    """Normalise Mandarin `text` and convert it to phones of symbol table `version`.

    Never raises on text: empty or unpronounceable input gives an empty result.
    `lexicon.zh` entries replace pypinyin's reading of their words (jieba keeps
    them whole) and are said with the tones written, except that 3-3 still
    becomes 2-3; neighbours react to them as to any reading (不 before a
    written fourth tone is bu2).
    Raises `TextFrontendError` only for an unknown `version`.
    """
    check_version(version)
    pause = next(((mark, sym) for mark, sym in _PAUSE_MARKS if mark in text), None)
    if pause is not None:
        text = text.replace(pause[0], ",")
    norm_text = normalize_chinese(text, version)
    words = lexicon.zh if lexicon is not None and lexicon.zh else None
    phones: list[str] = []
    word2ph: list[int] = []
    uncovered: list[str] = []
    for piece in _PIECE.findall(norm_text):
        piece_phones, piece_word2ph, piece_uncovered = _sentence_phones(piece, version, words)
        phones += piece_phones
        word2ph += piece_word2ph
        uncovered += piece_uncovered
    if pause is not None:
        phones = [pause[1] if p == "," else p for p in phones]
    table = symbol_ids(version)
    phones = [p if p in table else UNKNOWN for p in phones]
    uncovered += _DROPPED_IDEOGRAPH.findall(text.translate(traditional_to_simplified()))
    return G2PResult(norm_text, phones, word2ph, list(dict.fromkeys(uncovered)))
