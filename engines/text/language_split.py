"""Split mixed text into language runs: English words inside Chinese text, and the rest.

Museum labels mix Chinese with English names ("我今天用iPhone拍了很多照片").
The reference cuts such text at script changes: Latin-letter runs (with the
spaces, hyphens and dots between their words) are English, everything else
takes the chosen language; punctuation stays with the run before it; a run of
digits joins a neighbour by the reference's rules (the neighbour on the same
side of a sentence mark, else the longer one).  Only Mandarin and English are
spoken by this kiosk so far, so every non-Latin run is labelled "zh".
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

_SENTENCE_ENDS = frozenset(",.!?，。！？")
#: Language modes: "zh" Mandarin with English words, "en" all English, "auto" detect.
LANGUAGE_MODES = ("zh", "en", "auto")


@dataclass
class LangRun:
    """A run of text in one language ("zh", "en", or "digit" before assignment)."""

    lang: str
    text: str


def _kind(char: str) -> str:
    if ("a" <= char <= "z") or ("A" <= char <= "Z"):
        return "latin"
    if "0" <= char <= "9":
        return "digit"
    category = unicodedata.category(char)
    if category[0] in "PSZC":
        return "neutral"
    return "other"


def _raw_runs(text: str) -> list[LangRun]:
    """Script runs; neutral characters (spaces, punctuation) join the run before them."""
    runs: list[LangRun] = []
    pending = ""  # neutral characters not yet placed
    for char in text:
        kind = _kind(char)
        if kind == "neutral":
            pending += char
            continue
        lang = {"latin": "en", "digit": "digit"}.get(kind, "zh")
        if runs and runs[-1].lang == lang:
            runs[-1].text += pending + char
        elif runs:
            runs[-1].text += pending
            runs.append(LangRun(lang, char))
        else:
            runs.append(LangRun(lang, pending + char))
        pending = ""
    if pending:
        if runs:
            runs[-1].text += pending
        else:
            runs.append(LangRun("zh", pending))
    return runs


def _digit_language(prev: LangRun | None, run: LangRun, nxt: LangRun | None) -> str:
    """Which neighbour a run of digits belongs to (the reference's rules, in order)."""
    if nxt is None:
        return prev.lang if prev else "zh"
    if prev is None:
        return nxt.lang if nxt.lang != "digit" else "zh"
    if prev.lang == nxt.lang or prev.text[-1] in _SENTENCE_ENDS:
        return nxt.lang
    if nxt.text[0] in _SENTENCE_ENDS or run.text[-1] in "。." or len(prev.text) >= len(nxt.text):
        return prev.lang
    return nxt.lang


def _place_digits(runs: list[LangRun]) -> list[LangRun]:
    """Give each digit run a language and merge neighbours of the same language."""
    placed: list[LangRun] = []
    for i, run in enumerate(runs):
        if run.lang == "digit":
            nxt = runs[i + 1] if i + 1 < len(runs) else None
            lang = _digit_language(placed[-1] if placed else None, run, nxt)
            run.lang = "zh" if lang == "digit" else lang
        if placed and placed[-1].lang == run.lang:
            placed[-1].text += run.text
        else:
            placed.append(run)
    return placed


def split_languages(text: str) -> list[LangRun]:
    """Runs of "en" (Latin script) and "zh" (everything else), in order, none empty."""
    if not text:
        return []
    return _place_digits(_raw_runs(text))


def split_for_mode(text: str, mode: str) -> list[LangRun]:
    """Runs for a language mode: "en" keeps the whole text English; "zh"/"auto" mix."""
    if mode == "en":
        return [LangRun("en", text)] if text else []
    if mode not in LANGUAGE_MODES:
        raise ValueError(f"unknown language {mode!r}; use zh, en or auto")
    return split_languages(text)
