"""Lexical data files of the Mandarin frontend, read once and cached.

The data lives in `data/` beside this module (origin and licences in README.md)
so that the product needs nothing outside the package at run time.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).with_name("data")


def _json(name: str) -> dict[str, Any]:
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


def _tsv_rows(name: str) -> list[list[str]]:
    rows = []
    for line in (DATA_DIR / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            rows.append(line.split("\t"))
    return rows


@cache
def traditional_to_simplified() -> dict[int, str]:
    """str.translate table: traditional character -> simplified character."""
    return {ord(trad): simp for trad, simp in _tsv_rows("traditional_to_simplified.txt")}


@cache
def pinyin_phones() -> dict[str, tuple[str, str]]:
    """Toneless pinyin syllable -> (initial phone, final phone), opencpop-strict."""
    return {py: (initial, final) for py, initial, final in _tsv_rows("pinyin_phones.txt")}


@cache
def normalisation_tables() -> dict[str, Any]:
    """Unit names, measure words and symbol names used by the normaliser."""
    return _json("normalisation.json")


@cache
def neutral_tone_words() -> frozenset[str]:
    """Words whose last syllable is said in the neutral tone (衣服, 东西, ...)."""
    return frozenset(_json("tone_sandhi_words.json")["neutral_tone_words"])


@cache
def never_neutral_words() -> frozenset[str]:
    """Words the neutral-tone rules must leave alone (男子, 人人, ...)."""
    return frozenset(_json("tone_sandhi_words.json")["never_neutral_words"])


@cache
def erhua_words() -> tuple[frozenset[str], frozenset[str]]:
    """(words always read with erhua, words whose 儿 is a full syllable)."""
    data = _json("erhua_words.json")
    return frozenset(data["always_erhua"]), frozenset(data["never_erhua"])
