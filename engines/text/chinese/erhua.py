"""Erhua (儿化) tones, v2 only.

The v2 frontend keeps 儿 as its own syllable (two phones, so BERT alignment
stays one character = one syllable) but gives a rhotacised 儿 the tone of the
syllable it attaches to: 小院儿 -> yuan4 er4, 玩儿 -> wan2 er2.  A word-final
er1 is first read er2.  Words where 儿 means "child" (女儿, 婴儿), adjectives,
abbreviations and personal names keep their own 儿.
"""

from __future__ import annotations

from .resources import erhua_words
from .tone_sandhi import tone_of

_TAGS_WITHOUT_ERHUA = ("a", "j", "nr")


def apply_erhua(text: str, tag: str, finals: list[str]) -> list[str]:
    """Finals of one word after the erhua tone rule."""
    finals = list(finals)
    if not finals or len(finals) != len(text) or text[-1] != "儿":
        return finals
    if finals[-1] == "er1":
        finals[-1] = "er2"
    always, never = erhua_words()
    if text not in always and (text in never or tag in _TAGS_WITHOUT_ERHUA):
        return finals
    if len(text) >= 2 and finals[-1] in ("er2", "er5") and text[-2:] not in never:
        host_tone = tone_of(finals[-2])
        if host_tone:
            finals[-1] = "er" + host_tone
    return finals
