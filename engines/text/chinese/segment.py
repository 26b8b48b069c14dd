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
import io
import logging
import marshal
import os
import sys
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
    """(jieba tokenizer, POS tokenizer), loaded on first use (a quarter of a second, cached)."""
    with _lock, permanent():
        import jieba_fast

        jieba_fast.setLogLevel(logging.WARNING)
        return _load_tables(jieba_fast)


def _load_tables(jieba_fast: Any) -> tuple[Any, Any]:
    """jieba's prefix dictionary and word tags from our cache, else built and cached.

    Both come from jieba's `dict.txt`: the prefix dictionary (jieba caches it
    itself, but reads its cache in thousands of small reads, about five times
    slower than one read and `marshal.loads`) and the word -> part-of-speech
    table that `jieba_fast.posseg` parses from the text file at import (0.4 s).
    With a cache, posseg is imported over an empty dictionary stream and given
    the cached table.  The cache is keyed by the dictionary file's path, size
    and time, so an upgraded dictionary rebuilds it; a damaged one is rebuilt.
    """
    tokenizer = jieba_fast.dt
    with tokenizer.get_dict_file() as dictionary:
        source = Path(dictionary.name)
    stat = source.stat()
    key = hashlib.sha256(f"{source}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    path = cache_dir() / f"jieba-{key}.marshal"
    fresh = not tokenizer.initialized and "jieba_fast.posseg" not in sys.modules
    tables = _read_tables(path) if fresh else None
    if tables is not None:
        freq, total, tags = tables
        tokenizer.FREQ, tokenizer.total, tokenizer.initialized = freq, total, True
        tokenizer.get_dict_file = lambda: io.BytesIO(b"")  # posseg's import-time parse
        try:
            import jieba_fast.posseg as posseg
        finally:
            del tokenizer.get_dict_file
        posseg.dt.word_tag_tab = tags
        return tokenizer, posseg.dt
    tokenizer.tmp_dir = tempfile.gettempdir()
    tokenizer.check_initialized()
    import jieba_fast.posseg as posseg

    if fresh:
        _write_tables(path, (tokenizer.FREQ, tokenizer.total, posseg.dt.word_tag_tab))
    return tokenizer, posseg.dt


def _read_tables(path: Path) -> tuple[dict[str, int], int, dict[str, str]] | None:
    try:
        tables = marshal.loads(path.read_bytes())
        freq, total, tags = tables
    except (OSError, EOFError, ValueError, TypeError):
        return None  # missing or damaged: built again
    if isinstance(freq, dict) and isinstance(total, int) and isinstance(tags, dict) and tags:
        return freq, total, tags
    return None


def _write_tables(path: Path, tables: tuple[dict[str, int], int, dict[str, str]]) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jieba-")
        with os.fdopen(fd, "wb") as out:
            out.write(marshal.dumps(tables))
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
