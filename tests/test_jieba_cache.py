"""jieba's prefix dictionary and word tags are cached in the kiosk's cache folder, and
survive damage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CODE = """
import hashlib, json, sys, time
from engines.text.chinese import segment
start = time.perf_counter()
words = segment.tagged_words("欢迎来到民俗博物馆")
seconds = time.perf_counter() - start
tokenizer, tagger = segment._jieba()
tables = {
    "freq": hashlib.sha256(repr(sorted(tokenizer.FREQ.items())).encode()).hexdigest(),
    "tags": hashlib.sha256(repr(sorted(tagger.word_tag_tab.items())).encode()).hexdigest(),
    "total": tokenizer.total,
}
print(json.dumps({"words": words, "seconds": seconds, "tables": tables}))
"""


def _run(cache: Path) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_prefix_dict_cache_written_reused_and_rebuilt(tmp_path: Path) -> None:
    first = _run(tmp_path)
    caches = list((tmp_path / "kiosk" / "text").glob("jieba-*.marshal"))
    assert len(caches) == 1 and caches[0].stat().st_size > 1_000_000
    written = caches[0].read_bytes()
    second = _run(tmp_path)  # read from the cache
    assert second["tables"] == first["tables"]  # the very tables jieba builds itself
    assert second["words"] == first["words"] == [["欢迎", "v"], ["来到", "v"], ["民俗", "n"],
                                                   ["博物馆", "n"]]  # fmt: skip
    caches[0].write_bytes(written[: len(written) // 3])  # a power cut mid-write
    third = _run(tmp_path)
    assert third["words"] == first["words"] and third["tables"] == first["tables"]
    assert caches[0].read_bytes() == written  # rebuilt whole
    assert not list(caches[0].parent.glob(".jieba-*"))  # no temporary file left behind


def test_unwritable_cache_still_segments(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert _run(blocked)["words"][0] == ["欢迎", "v"]
