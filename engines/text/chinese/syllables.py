"""From pypinyin's (initial, final+tone) to the model's two phones per syllable.

pypinyin in strict mode splits 约 into ("", "ve1") and 对 into ("d", "uei4");
the phone set is "opencpop-strict", keyed by the *written* syllable (yue, dui).
So the pair is first re-spelled as written pinyin (y/w added, uei -> ui,
iou -> iu, uen -> un), then looked up.  Syllables the table lacks (biang, hm,
ê, ...) crash the reference; here they fall back to the nearest pair of phones.
"""

from __future__ import annotations

from functools import cache

from .resources import pinyin_phones

TONES = "12345"
UNKNOWN = "UNK"

# Finals written shorter after an initial: d+uei -> dui.
_CONTRACTED = {"uei": "ui", "iou": "iu", "uen": "un"}
# Finals written as a whole syllable when there is no initial.
_ALONE = {"i": "yi", "in": "yin", "ing": "ying", "u": "wu"}
# Otherwise the first letter of a final without initial is written y/w/yu.
_ALONE_PREFIX = {"i": "y", "u": "w", "v": "yu"}

# Syllables outside Mandarin's regular inventory, said like their nearest
# regular neighbour (interjections and dialect readings pypinyin knows).
APPROXIMATIONS = {
    "hm": "hen",
    "hng": "heng",
    "m": "mu",
    "n": "en",
    "ng": "eng",
    "ê": "ei",
    "wong": "weng",
}


def written_syllable(initial: str, final: str) -> str:
    """Toneless pypinyin strict pair -> written pinyin spelling ("", "iou") -> "you"."""
    if initial:
        return initial + _CONTRACTED.get(final, final)
    if final in _ALONE:
        return _ALONE[final]
    if final[:1] in _ALONE_PREFIX:
        return _ALONE_PREFIX[final[0]] + final[1:]
    return final


@cache
def _known_phones() -> frozenset[str]:
    initials = {initial for initial, _ in pinyin_phones().values()}
    finals = {final for _, final in pinyin_phones().values()}
    return frozenset(initials | finals)


@cache
def toneless_phones(initial: str, final: str) -> tuple[str, str] | None:
    """(initial phone, final phone without tone), or None if there is no sensible pair."""
    found = pinyin_phones().get(written_syllable(initial, final))
    if found:
        return found
    # Irregular syllable with a regular initial and final (biang, fiao, din):
    # keep both halves, which the phone set has.
    final = _CONTRACTED.get(final, final)
    if initial and final and {initial, final} <= _known_phones():
        return initial, final
    return None


def syllable_phones(initial: str, final: str) -> list[str] | None:
    """Two phones for one syllable, e.g. ("d", "uei4") -> ["d", "ui4"]; None if impossible."""
    if len(final) < 2 or final[-1] not in TONES:
        return None
    pair = toneless_phones(initial, final[:-1])
    if pair is None:
        return None
    return [pair[0], pair[1] + final[-1]]
