"""Word segmentation with part-of-speech tags (jieba_fast), as the reference uses it.

Tone sandhi works on words, so the cut decides readings.  Custom-lexicon words
are kept whole without touching jieba's shared dictionary: the sentence is cut
around them and only the stretches in between go through jieba.  That is what
jieba itself does once a word is forced (its best path on either side of a
fixed word does not depend on the other side), it costs no memory per voice,
and no voice can hear another voice's lexicon.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

#: Tag given to custom-lexicon words: a common noun, like most dictionary words.
LEXICON_TAG = "n"

_lock = threading.Lock()


@cache
def _jieba() -> tuple[Any, Any]:
    """(jieba tokenizer, POS tokenizer), loaded on first use (about a second or two)."""
    with _lock:
        import jieba_fast
        import jieba_fast.posseg

        jieba_fast.setLogLevel(logging.WARNING)
        jieba_fast.dt.check_initialized()
        return jieba_fast.dt, jieba_fast.posseg.dt


def warm_up() -> None:
    """Load jieba's dictionary now rather than on the first sentence."""
    _jieba()


def tagged_words(sentence: str, fixed: Sequence[tuple[int, int]] = ()) -> list[tuple[str, str]]:
    """Words of `sentence` with jieba tags; the (start, end) spans in `fixed` stay whole."""
    _, tagger = _jieba()
    words: list[tuple[str, str]] = []
    at = 0
    for start, end in [*fixed, (len(sentence), len(sentence))]:
        if start > at:
            words += [(pair.word, pair.flag) for pair in tagger.lcut(sentence[at:start])]
        if end > start:
            words.append((sentence[start:end], LEXICON_TAG))
        at = end
    return words


@lru_cache(maxsize=65536)
def search_pieces(word: str) -> tuple[str, ...]:
    """jieba's search-mode cut of `word`: its known sub-words, then the words themselves."""
    tokenizer, _ = _jieba()
    return tuple(tokenizer.cut_for_search(word))
