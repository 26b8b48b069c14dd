"""jieba's tables are kept in an SQLite file in the kiosk's cache folder and looked up per
text: the cut is exactly jieba's own, the file is rebuilt when damaged, and an unwritable
cache still segments."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "text_frontend.json"

# Sentences of our own beside the golden ones: unknown names (jieba's HMM path), Latin and
# digits inside Chinese, a long run with no punctuation (several lookup batches), idioms.
OWN_SENTENCES = [
    "欢迎来到民俗博物馆",
    "阿鲁巴依老人在二〇〇三年唱给我们听",
    "这首歌叫做达坂城的姑娘",
    "我今天用iPhone拍了很多照片",
    "卡拉OK和T恤都是外来词",
    "中华人民共和国国务院新闻办公室举行新闻发布会介绍" * 4,
    "画蛇添足与守株待兔都是成语故事",
    "请您在展柜前面停留片刻",
]

CODE = """
import json, sys, time
from engines.text.chinese import segment
texts = json.loads(sys.stdin.read())
start = time.perf_counter()
segment.warm_up()
load_s = time.perf_counter() - start
ours = [[list(w) for w in segment.tagged_words(t)] for t in texts]
search = [[list(segment.search_pieces(w)) for w, _ in words] for words in ours]
# jieba on its own: a tokenizer and tagger of their own with the whole dictionary
import jieba_fast, jieba_fast.posseg
plain = jieba_fast.Tokenizer()
tagger = jieba_fast.posseg.POSTokenizer(plain)
tagger.initialize()
theirs = [[[p.word, p.flag] for p in tagger.lcut(t)] for t in texts]
their_search = [[list(plain.cut_for_search(w)) for w, _ in words] for words in theirs]
print(json.dumps({"ours": ours, "theirs": theirs, "search": search,
                  "their_search": their_search, "load_s": load_s}))
"""


def _texts() -> list[str]:
    cases = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]
    han = re.compile("[\u4e00-\u9fff]+")
    golden = [piece for case in cases for piece in han.findall(case["text"])]
    return golden + OWN_SENTENCES


def _run(cache: Path, texts: list[str], code: str = CODE) -> dict:
    """`code` in a fresh interpreter with `cache` as its cache folder: its JSON, and its
    stderr under "stderr"."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(texts),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


def test_table_file_cuts_as_jieba_does_and_is_rebuilt_when_damaged(tmp_path: Path) -> None:
    texts = _texts()
    assert len(texts) > 40
    first = _run(tmp_path, texts)  # builds the file
    tables = list((tmp_path / "kiosk" / "text").glob("jieba-*.sqlite"))
    assert len(tables) == 1
    with sqlite3.connect(tables[0]) as db:
        assert db.execute("SELECT count(*) FROM words").fetchone()[0] > 300_000
    second = _run(tmp_path, texts)  # cuts over the file
    for run in (first, second):
        assert run["ours"] == run["theirs"]
        assert run["search"] == run["their_search"]
    assert second["ours"][-len(OWN_SENTENCES)] == [
        ["欢迎", "v"], ["来到", "v"], ["民俗", "n"], ["博物馆", "n"]
    ]  # fmt: skip
    written = tables[0].read_bytes()
    tables[0].write_bytes(written[: len(written) // 3])  # a file cut short
    third = _run(tmp_path, texts)
    assert third["ours"] == first["ours"]
    assert tables[0].stat().st_size == len(written)  # written whole again
    tables[0].write_bytes(b"not a database" * 100)
    assert _run(tmp_path, texts[:3])["ours"] == first["ours"][:3]
    assert not list(tables[0].parent.glob(".jieba-*"))  # no temporary file left behind


def test_unwritable_cache_still_segments(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    run = _run(blocked, OWN_SENTENCES[:2])
    assert run["ours"] == run["theirs"] and run["ours"][0][0] == ["欢迎", "v"]


FAILING_CODE = """
import json, sys
from engines.text.chinese import segment
texts = json.loads(sys.stdin.read())
segment.warm_up()
segmenter = segment._segmenter()
assert type(segmenter.tables).__name__ == "_FileTables"
first = segment.tagged_words(texts[0])
segmenter.tables.db.close()  # the file fails after it was opened
ours = [[list(w) for w in segment.tagged_words(t)] for t in texts]
search = [list(segment.search_pieces(w)) for w, _ in ours[-1]]
import jieba_fast, jieba_fast.posseg
plain = jieba_fast.Tokenizer()
tagger = jieba_fast.posseg.POSTokenizer(plain)
tagger.initialize()
theirs = [[[p.word, p.flag] for p in tagger.lcut(t)] for t in texts]
their_search = [list(plain.cut_for_search(w)) for w, _ in theirs[-1]]
print(json.dumps({"ours": ours, "theirs": theirs, "search": search,
                  "their_search": their_search, "kind": type(segmenter.tables).__name__}))
"""


def test_a_table_file_failing_mid_run_falls_back_to_jieba_whole(tmp_path: Path) -> None:
    _run(tmp_path, OWN_SENTENCES[:1])  # writes the file
    run = _run(tmp_path, OWN_SENTENCES[1:], FAILING_CODE)
    assert run["kind"] == "_MemoryTables"
    assert run["ours"] == run["theirs"] and run["search"] == run["their_search"]
    assert "jieba word table unreadable" in run["stderr"]
