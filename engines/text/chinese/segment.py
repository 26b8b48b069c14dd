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
import os
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from engines.cache_folder import cache_folder
from engines.durable_files import write_atomically
from engines.gc_tables import permanent

#: Tag given to custom-lexicon words: a common noun, like most dictionary words.
LEXICON_TAG = "n"

#: Layout of the word table file; another value means "build it again".
TABLE_FORMAT = "kiosk-jieba-1"
# Parameters per lookup query (SQLite's smallest compiled-in limit is 999).
_QUERY_PARAMS = 900

_load_lock = threading.Lock()
# jieba's tokenizers are shared; a cut swaps in its own small tables, so cuts take turns.
_cut_lock = threading.Lock()

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where the word table file is kept: the kiosk's cache folder, which outlives a boot.

    jieba's own default is the temporary folder, which a service with a private
    /tmp loses at every restart (and then spends seconds rebuilding it).
    """
    return cache_folder("text")


class _MemoryTables:
    """jieba's own tables, whole in memory: the fallback when no table file can be used."""

    def __init__(self, freq: dict[str, int], tags: dict[str, str]) -> None:
        self.freq, self.tags = freq, tags

    def for_text(self, text: str) -> tuple[dict[str, int], dict[str, str]]:
        return self.freq, self.tags


class _FileTables:
    """The same tables in an SQLite file, looked up per text instead of loaded whole.

    jieba only ever asks its prefix dictionary and tag table about pieces of
    the text it cuts, so the words of the file that occur in the text, as
    small dicts, give exactly the cut that the whole tables give.  Loading the
    whole tables took 0.4 s of every boot and 106 MB for life (118 MB of RSS
    against 12 MB with the file); a lookup takes about a millisecond.
    """

    def __init__(self, db: sqlite3.Connection, longest: int) -> None:
        self.db, self.longest = db, longest

    def for_text(self, text: str) -> tuple[dict[str, int], dict[str, str]]:
        pieces = list(
            {
                text[i:j]
                for i in range(len(text))
                for j in range(i + 1, min(len(text), i + self.longest) + 1)
            }
        )
        freq: dict[str, int] = {}
        tags: dict[str, str] = {}
        for at in range(0, len(pieces), _QUERY_PARAMS):
            batch = pieces[at : at + _QUERY_PARAMS]
            marks = ",".join("?" * len(batch))
            rows = self.db.execute(
                f"SELECT word, freq, tag FROM words WHERE word IN ({marks})", batch
            )
            for word, count, tag in rows:
                if count is not None:
                    freq[word] = count
                if tag is not None:
                    tags[word] = tag
        return freq, tags


class _Segmenter:
    """jieba's tokenizer and tagger, with the tables each cut needs swapped in."""

    def __init__(self, jieba_fast: Any, tables: _MemoryTables | _FileTables) -> None:
        import jieba_fast.posseg as posseg  # loaded by now, over the chosen tables

        self.jieba = jieba_fast
        self.tokenizer = jieba_fast.dt
        self.tagger = posseg.dt
        self.tables = tables

    def _use(self, text: str) -> None:
        try:
            freq, tags = self.tables.for_text(text)
        except sqlite3.Error as exc:  # damaged after it was opened: jieba's own tables
            log.warning("jieba word table unreadable (%s): loading jieba's dictionary", exc)
            self.tables = _load_in_memory(self.jieba, reload=True)
            freq, tags = self.tables.for_text(text)
        self.tokenizer.FREQ = freq
        self.tagger.word_tag_tab = tags

    def tagged(self, text: str) -> list[tuple[str, str]]:
        with _cut_lock:
            self._use(text)
            return [(pair.word, pair.flag) for pair in self.tagger.lcut(text)]

    def search(self, word: str) -> tuple[str, ...]:
        with _cut_lock:
            self._use(word)
            return tuple(self.tokenizer.cut_for_search(word))


@cache
def _segmenter() -> _Segmenter:
    """jieba with its tables, loaded on first use (milliseconds with the table file)."""
    with _load_lock, permanent():
        import jieba_fast

        jieba_fast.setLogLevel(logging.WARNING)
        return _Segmenter(jieba_fast, _load_tables(jieba_fast))


def _table_path(tokenizer: Any) -> Path:
    """The table file for jieba's dictionary, keyed by its path, size and time, so an
    upgraded dictionary gets a new file."""
    with tokenizer.get_dict_file() as dictionary:
        source = Path(dictionary.name)
    stat = source.stat()
    key = hashlib.sha256(f"{source}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / f"jieba-{key}.sqlite"


def _load_tables(jieba_fast: Any) -> _MemoryTables | _FileTables:
    """The table file if it is sound, else jieba's tables built the slow way and written
    to a new file for the next start.

    With the file, jieba is left with an empty prefix dictionary, and
    `jieba_fast.posseg` is imported over an empty dictionary stream instead of
    parsing `dict.txt` (0.4 s).
    """
    tokenizer = jieba_fast.dt
    path = _table_path(tokenizer)
    fresh = not tokenizer.initialized and "jieba_fast.posseg" not in sys.modules
    opened = _open_tables(path) if fresh else None
    if opened is not None:
        tables, total = opened
        tokenizer.FREQ, tokenizer.total, tokenizer.initialized = {}, total, True
        tokenizer.get_dict_file = lambda: io.BytesIO(b"")  # posseg's import-time parse
        try:
            import jieba_fast.posseg
        finally:
            del tokenizer.get_dict_file
        return tables
    tables = _load_in_memory(jieba_fast)
    if fresh:
        _write_tables(path, tables.freq, tokenizer.total, tables.tags)
    return tables


def _load_in_memory(jieba_fast: Any, *, reload: bool = False) -> _MemoryTables:
    """jieba's own prefix dictionary and posseg's tag table, parsed from `dict.txt`.

    `reload`: the tokenizer holds some cut's small tables (the file failed after it
    was opened), so both are loaded again.
    """
    tokenizer = jieba_fast.dt
    if reload or not tokenizer.FREQ:  # emptied for the table file, or never loaded
        tokenizer.FREQ, tokenizer.initialized = {}, False
    tokenizer.tmp_dir = tempfile.gettempdir()
    tokenizer.check_initialized()
    freq = tokenizer.FREQ
    imported = "jieba_fast.posseg" in sys.modules
    import jieba_fast.posseg as posseg

    if imported and (reload or not posseg.dt.word_tag_tab):  # imported over an empty stream
        posseg.dt.load_word_tag(tokenizer.get_dict_file())
    return _MemoryTables(freq, posseg.dt.word_tag_tab)


def _open_tables(path: Path) -> tuple[_FileTables, int] | None:
    """The table file opened read-only with jieba's word total, or None if it is missing,
    of another format, or damaged (then it is built again)."""
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    except sqlite3.Error:
        return None
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        whole = path.stat().st_size >= pages * page_size  # a cut-short file is not
        if meta.get("format") == TABLE_FORMAT and whole:
            total, longest = int(meta["total"]), int(meta["longest"])
            if total > 0 and longest > 0:
                return _FileTables(db, longest), total
    except (sqlite3.Error, OSError, KeyError, ValueError):
        pass
    db.close()
    return None


def _rows(
    freq: dict[str, int], tags: dict[str, str]
) -> Iterable[tuple[str, int | None, str | None]]:
    for word, count in freq.items():
        yield word, count, tags.get(word)
    for word, tag in tags.items():
        if word not in freq:
            yield word, None, tag


def _write_tables(path: Path, freq: dict[str, int], total: int, tags: dict[str, str]) -> None:
    """Write the table file whole under a temporary name, then rename it into place
    (`write_atomically`), so a power cut leaves either no file or a complete one."""

    def write(tmp: Path) -> None:
        db = sqlite3.connect(tmp)
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE words (word TEXT PRIMARY KEY, freq INTEGER, tag TEXT) WITHOUT ROWID"
            )
            longest = max(map(len, [*freq, *tags]))
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("format", TABLE_FORMAT), ("total", str(total)), ("longest", str(longest))],
            )
            db.executemany("INSERT INTO words VALUES (?, ?, ?)", _rows(freq, tags))
            db.commit()
        finally:
            db.close()
        os.chmod(tmp, 0o644)  # jieba's public dictionary: any user of the box may read it

    try:
        write_atomically(path, write, f".jieba-{path.name}.{os.getpid()}")
        for old in path.parent.glob("jieba-*.marshal"):  # the previous cache format
            old.unlink(missing_ok=True)
    except (OSError, sqlite3.Error) as exc:  # a read-only cache only costs time at the next start
        log.info("jieba word table not written to %s (%s)", path.parent, exc)


def warm_up() -> None:
    """Load jieba and its tables now rather than on the first sentence."""
    _segmenter()


def tagged_words(sentence: str, fixed: Sequence[tuple[int, int]] = ()) -> list[tuple[str, str]]:
    """Words of `sentence` with jieba tags; the (start, end) spans in `fixed` stay whole."""
    segmenter = _segmenter()
    words: list[tuple[str, str]] = []
    at = 0
    for start, end in [*fixed, (len(sentence), len(sentence))]:
        if start > at:
            words += segmenter.tagged(sentence[at:start])
        if end > start:
            words.append((sentence[start:end], LEXICON_TAG))
        at = end
    return words


@lru_cache(maxsize=65536)
def search_pieces(word: str) -> tuple[str, ...]:
    """jieba's search-mode cut of `word`: its known sub-words, then the words themselves."""
    return _segmenter().search(word)
