"""Segmentation, language runs, symbol tables and the custom lexicon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.text.language_split import split_for_mode, split_languages
from engines.text.lexicon import Lexicon, LexiconError
from engines.text.segmentation import (
    collapse_punctuation,
    cut,
    merge_short,
    segment_text,
    split_long,
)
from engines.text.symbols import phones_to_ids, symbol_ids, symbols


def test_symbol_tables_equal_the_golden_lists(compat_dir: Path) -> None:
    golden = json.loads((compat_dir / "symbols.json").read_text(encoding="utf-8"))
    assert list(symbols("v1")) == golden["v1"] and len(golden["v1"]) == 322
    assert list(symbols("v2")) == golden["v2"] and len(golden["v2"]) == 732


def test_fixed_symbol_ids() -> None:
    ids = symbol_ids("v2")
    assert [ids[s] for s in ["!", ",", "-", ".", "?", "SP", "SP2", "SP3", "UNK", "_", "…"]] == [
        0,
        1,
        2,
        3,
        4,
        77,
        78,
        79,
        86,
        95,
        321,
    ]
    assert symbols("v2")[:322] == symbols("v1")
    assert phones_to_ids(["n", "i2", "no-such-phone"], "v2")[-1] == 86
    with pytest.raises(ValueError, match="unknown symbol table"):
        symbols("v3")


def test_language_runs_of_the_golden_mixed_sentences(compat_dir: Path) -> None:
    cases = json.loads((compat_dir / "text_frontend.json").read_text(encoding="utf-8"))["cases"]
    mixed = [c for c in cases if c["kind"] == "mixed_zh"]
    assert mixed
    for case in mixed:
        want = [(s["lang"], s["text"]) for s in case["v2_webui_zh"]["segments"]]
        assert [(r.lang, r.text) for r in split_languages(case["text"])] == want


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("我有3个苹果", [("zh", "我有3个苹果")]),
        ("iPhone 15很好", [("en", "iPhone 15"), ("zh", "很好")]),
        ("2024年GPT4发布", [("zh", "2024年"), ("en", "GPT4"), ("zh", "发布")]),
        ("“Hello”他说。", [("en", "“Hello”"), ("zh", "他说。")]),
        ("!!!", [("zh", "!!!")]),
        ("", []),
    ],
)
def test_language_runs(text: str, runs: list[tuple[str, str]]) -> None:
    assert [(r.lang, r.text) for r in split_languages(text)] == runs


def test_language_modes() -> None:
    assert [(r.lang, r.text) for r in split_for_mode("你好 world", "en")] == [("en", "你好 world")]
    with pytest.raises(ValueError, match="unknown language"):
        split_for_mode("x", "fr")


def test_cut_methods() -> None:
    text = "第一句。第二句！第三句？第四句，第五句。"
    assert cut(text, "cut0") == [text]
    assert cut(text, "cut1") == ["第一句。第二句！第三句？第四句，", "第五句。"]
    assert cut(text, "cut3") == ["第一句", "第二句！第三句？第四句，第五句"]
    assert cut("One. Two 3.5 three.", "cut4") == ["One", " Two 3.5 three"]
    assert cut("价格是3.5元，好吗？好。", "cut5") == ["价格是3.5元，", "好吗？", "好。"]
    long = "这是一个比较长的句子，" * 8
    assert all(len(p) > 50 for p in cut(long, "cut2"))
    with pytest.raises(ValueError, match="unknown cut method"):
        cut(text, "cut9")


def test_tidying_rules() -> None:
    assert collapse_punctuation("好！！！真的吗？？") == "好！真的吗？"
    assert merge_short(["一", "二", "三四五六", "七"]) == ["一二三四五六七"]
    assert merge_short(["一二三四五", "六"]) == ["一二三四五六"]
    parts = split_long("字" * 600 + "。")
    assert [len(p) for p in parts] == [510, 91]


def test_segment_text_end_marks_and_short_first_sentence() -> None:
    # Pieces under 5 characters merge with the next; each segment ends in a mark.
    assert segment_text("你好。今天天气很好", "cut5") == ["你好。今天天气很好。"]
    assert segment_text("Hi. How are you today", "cut5", "en") == ["Hi. How are you today."]
    # A first sentence under 4 characters gets a leading mark (kept by cut0).
    assert segment_text("好", "cut0") == ["。好。"]
    assert segment_text("Hi", "cut0", "en") == [".Hi."]
    assert segment_text("   ") == []
    assert segment_text("。。。！") == []


def test_lexicon_file(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.txt"
    path.write_text("# names\nzh 阿嬷 a1 ma1\nen Nguyen W IH1 N\nzh 绿 lü4\n", encoding="utf-8")
    lexicon = Lexicon.from_file(path)
    assert lexicon.zh == {"阿嬷": ["a1", "ma1"], "绿": ["lv4"]}
    assert lexicon.en == {"NGUYEN": ["W", "IH1", "N"]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("zh 阿嬷 a ma1", "not pinyin"),
        ("zh 阿嬷 a1", "2 characters but 1 syllables"),
        ("en Nguyen w1x", "not an ARPAbet phone"),
        ("fr bonjour B", "unknown language"),
        ("zh 阿嬷", "expected 'LANG WORD"),
    ],
)
def test_bad_lexicon_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "lexicon.txt"
    path.write_text(f"# header\n{line}\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=rf"lexicon.txt:2: .*{message}"):
        Lexicon.from_file(path)
