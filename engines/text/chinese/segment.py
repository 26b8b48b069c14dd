"""Word segmentation with part-of-speech tags (jieba_fast), as the reference uses it.

Tone sandhi works on words, so the cut decides readings.  Custom-lexicon words
are kept whole without touching jieba's shared dictionary: the sentence is cut
around them and only the stretches in between go through jieba.  That is what
jieba itself does once a word is forced (its best path on either side of a
fixed word does not depend on the other side), it costs no memory per voice,
and no voice can hear another voice's lexicon.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import tempfile
import threading
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from engines.gc_tables import permanent

#: Tag given to custom-lexicon words: a common noun, like most dictionary words.
LEXICON_TAG = "n"

_lock = threading.Lock()


log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where the prefix dictionary is cached: the kiosk's cache folder, which outlives a boot.

    jieba's own default is the temporary folder, which a service with a private
    /tmp loses at every restart (and then spends seconds rebuilding it).
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kiosk" / "text"


@cache
def _jieba() -> tuple[Any, Any]:
    """(jieba tokenizer, POS tokenizer), loaded on first use (well under a second, cached)."""
    with _lock, permanent():
        import jieba_fast
        import jieba_fast.posseg

        jieba_fast.setLogLevel(logging.WARNING)
        _load_prefix_dict(jieba_fast.dt)
        return jieba_fast.dt, jieba_fast.posseg.dt


def _load_prefix_dict(tokenizer: Any) -> None:
    """jieba's prefix dictionary from our cache, else built by jieba and cached for next time.

    The cache is read in one piece and unmarshalled from memory: jieba's own
    `marshal.load(file)` reads it in thousands of small reads, about five times
    slower, and that second was most of a voice's boot.  The cache is keyed by
    the dictionary file's size and time, so an upgraded dictionary rebuilds it.
    """
    if tokenizer.initialized:
        return
    with tokenizer.get_dict_file() as dictionary:
        source = Path(dictionary.name)
    stat = source.stat()
    key = hashlib.sha256(f"{source}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    path = cache_dir() / f"jieba-{key}.marshal"
    try:
        freq, total = marshal.loads(path.read_bytes())
        if isinstance(freq, dict) and isinstance(total, int) and freq:
            tokenizer.FREQ, tokenizer.total, tokenizer.initialized = freq, total, True
            return
    except (OSError, EOFError, ValueError, TypeError):
        pass  # missing or damaged: built again below
    tokenizer.tmp_dir = tempfile.gettempdir()
    tokenizer.check_initialized()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jieba-")
        with os.fdopen(fd, "wb") as out:
            out.write(marshal.dumps((tokenizer.FREQ, tokenizer.total)))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # a read-only cache only costs time at the next start
        log.info("jieba dictionary cache not written to %s (%s)", path.parent, exc)


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
