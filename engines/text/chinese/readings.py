"""Dictionary readings of words: pypinyin, overridden by a voice's custom lexicon.

A reading is two parallel lists, one entry per character: the initial ("zh",
"" for none) and the final with its tone digit ("ang3", "5" = neutral), in
pypinyin's strict style, because that is what the tone-sandhi rules inspect.
A punctuation mark reads as itself in both lists.  Characters without a usable
reading get an approximation or, failing that, `UNREADABLE`; they are
collected so the technician can add them to the voice's lexicon.
"""

from __future__ import annotations

from functools import lru_cache

from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

from .normalise import PUNCTUATION
from .syllables import APPROXIMATIONS, TONES, syllable_phones

#: Initial and final of a character nothing can read (becomes the phone "UNK").
UNREADABLE = "UNK"

Reading = tuple[tuple[str, ...], tuple[str, ...]]


def split_pinyin(syllable: str) -> tuple[str, str]:
    """Written pinyin with tone digit ("lv4", "yu2") -> strict (initial, final+tone)."""
    syllable = syllable.replace("v", "ü")
    return (
        to_initials(syllable, strict=True),
        to_finals_tone3(syllable, strict=True, neutral_tone_with_five=True),
    )


@lru_cache(maxsize=4096)
def lexicon_syllable(syllable: str) -> tuple[str, str]:
    """(initial, final) of a lexicon syllable; irregular ones (m2, hm5) approximated."""
    initial, final = split_pinyin(syllable)
    if syllable_phones(initial, final) is None:
        tone = syllable[-1] if syllable[-1:] in tuple(TONES) else "5"
        nearest = APPROXIMATIONS.get(syllable.rstrip(TONES).replace("v", "ü"))
        if nearest is not None:
            initial, final = split_pinyin(nearest + tone)
    return initial, final


def _usable(char: str, initial: str, final: str) -> bool:
    if char in PUNCTUATION:
        return initial == final == char
    return syllable_phones(initial, final) is not None


@lru_cache(maxsize=65536)
def _char_fallback(char: str) -> tuple[str, str]:
    """Best reading for a character whose dictionary reading is unusable."""
    if char in PUNCTUATION:
        return char, char
    initial = lazy_pinyin(char, style=Style.INITIALS, neutral_tone_with_five=True)[0]
    final = lazy_pinyin(char, style=Style.FINALS_TONE3, neutral_tone_with_five=True)[0]
    if syllable_phones(initial, final) is not None:
        return initial, final
    spelled = lazy_pinyin(char, style=Style.TONE3, neutral_tone_with_five=True)[0]
    tone = spelled[-1] if spelled[-1:] in tuple(TONES) else "5"
    toneless = spelled.rstrip(TONES)
    if toneless in APPROXIMATIONS:
        initial, final = split_pinyin(APPROXIMATIONS[toneless] + tone)
        if syllable_phones(initial, final) is not None:
            return initial, final
    return UNREADABLE, UNREADABLE


@lru_cache(maxsize=65536)
def dictionary_reading(word: str) -> Reading:
    """pypinyin's reading of `word` (phrase-aware), one entry per character."""
    initials = lazy_pinyin(word, style=Style.INITIALS, neutral_tone_with_five=True)
    finals = lazy_pinyin(word, style=Style.FINALS_TONE3, neutral_tone_with_five=True)
    if not len(initials) == len(finals) == len(word):
        # Runs of characters without pinyin come back as one item: go char by char.
        pairs = [_char_fallback(c) for c in word]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    fixed_i, fixed_f = list(initials), list(finals)
    for k, char in enumerate(word):
        if not _usable(char, initials[k], finals[k]):
            fixed_i[k], fixed_f[k] = _char_fallback(char)
    return tuple(fixed_i), tuple(fixed_f)


@lru_cache(maxsize=65536)
def has_regular_reading(char: str) -> bool:
    """False when pypinyin cannot give `char` a syllable of the phone set."""
    initial = lazy_pinyin(char, style=Style.INITIALS, neutral_tone_with_five=True)
    final = lazy_pinyin(char, style=Style.FINALS_TONE3, neutral_tone_with_five=True)
    return len(initial) == len(final) == 1 and _usable(char, initial[0], final[0])


class SentenceReader:
    """Readings for the words of one sentence, with lexicon entries laid over them.

    Lexicon words are found in the whole sentence (longest match first, left to
    right), so an override applies even where jieba merged the word with a
    neighbour (不 + word, 一 + word, tone-3 chains).
    """

    def __init__(self, sentence: str, lexicon: dict[str, list[str]] | None) -> None:
        self.overrides: dict[int, tuple[str, str]] = {}
        #: (start, end) of each lexicon word found, in order; jieba keeps them whole.
        self.spans: list[tuple[int, int]] = []
        if lexicon:
            self._lay_over(sentence, lexicon)

    def _lay_over(self, sentence: str, lexicon: dict[str, list[str]]) -> None:
        longest = max(len(w) for w in lexicon)
        at = 0
        while at < len(sentence):
            for size in range(min(longest, len(sentence) - at), 0, -1):
                syllables = lexicon.get(sentence[at : at + size])
                if syllables and len(syllables) == size:
                    for k, syllable in enumerate(syllables):
                        self.overrides[at + k] = lexicon_syllable(syllable)
                    self.spans.append((at, at + size))
                    at += size
                    break
            else:
                at += 1

    def reading(self, word: str, start: int) -> tuple[list[str], list[str]]:
        """Fresh (initials, finals) lists of `word` found at offset `start`."""
        initials, finals = dictionary_reading(word)
        initials, finals = list(initials), list(finals)
        for k in range(len(word)):
            override = self.overrides.get(start + k)
            if override is not None:
                initials[k], finals[k] = override
        return initials, finals

    def written(self, start: int, length: int) -> list[int]:
        """Positions (relative to `start`) of a word that the lexicon reads."""
        return [k for k in range(length) if start + k in self.overrides]

    def uncovered(self, sentence: str) -> list[str]:
        """Characters of `sentence` with no regular reading and no lexicon entry."""
        return [
            c
            for k, c in enumerate(sentence)
            if k not in self.overrides and not has_regular_reading(c)
        ]

    def finals(self, word: str, start: int) -> list[str]:
        """Just the finals (what the tone-3 merging rules look at)."""
        return self.reading(word, start)[1]
