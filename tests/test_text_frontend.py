"""The whole text frontend: segments, language parts, ids, and its promise on any input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.text.frontend import TextFrontend, TextFrontendError
from engines.text.lexicon import Lexicon
from engines.text.symbols import symbols

FRONTEND = TextFrontend("v2")
V2_SIZE = len(symbols("v2"))


def _check(segment) -> None:
    assert segment.phone_ids and all(0 <= i < V2_SIZE for i in segment.phone_ids)
    assert len(segment.phone_ids) == len(segment.phones)
    for part in segment.parts:
        if part.word2ph is not None:
            assert len(part.word2ph) == len(part.norm_text)
            assert sum(part.word2ph) == len(part.phones)


# Mandarin, Latin, digits, punctuation, symbols, emoji, other scripts, controls.
_alphabet = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.sampled_from(list("abcXYZ 0123456789.,!?。，！？、：；“”‘’—…-%℃$￥^")),
    st.characters(),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(alphabet=_alphabet, max_size=40),
    language=st.sampled_from(["zh", "en", "auto"]),
    cut_method=st.sampled_from(["cut0", "cut1", "cut5"]),
)
def test_any_unicode_gives_phones_or_the_documented_error(
    text: str, language: str, cut_method: str
) -> None:
    try:
        segments = FRONTEND.segments(text, language, cut_method)
    except TextFrontendError:
        return
    assert segments
    for segment in segments:
        _check(segment)


def test_mixed_sentence_parts() -> None:
    [segment] = FRONTEND.segments("我今天用iPhone拍了很多照片。", "zh")
    assert [p.lang for p in segment.parts] == ["zh", "en", "zh"]
    assert segment.norm_text == "我今天用i Phone拍了很多照片."
    _check(segment)


def test_short_text_is_retried_with_a_leading_dot() -> None:
    segment = FRONTEND.phones("好。", "zh")
    assert segment.phones[0] == "." and len(segment.phone_ids) >= 4


def test_special_marks_become_silences() -> None:
    segment = FRONTEND.phones("你好￥我们走吧。", "zh")
    assert "SP2" in segment.phones and "," not in segment.phones


def test_empty_and_unspeakable_text() -> None:
    with pytest.raises(TextFrontendError, match="empty"):
        FRONTEND.segments("  \n ")
    with pytest.raises(TextFrontendError, match="nothing pronounceable"):
        FRONTEND.segments("🙂🙂 ☃☃")
    with pytest.raises(TextFrontendError, match="unknown language"):
        FRONTEND.segments("你好", "fr")


def test_lexicon_and_coverage_report() -> None:
    lexicon = Lexicon()
    lexicon.add("zh", "阿嬷", ["a1", "ma1"])
    frontend = TextFrontend("v2", lexicon)
    assert frontend.phones("阿嬷唱歌了。", "zh").phones[:4] == ["AA", "a1", "m", "a1"]
    assert "한" in frontend.uncovered("阿嬷唱歌了。한국어", "zh")
    assert "阿" not in frontend.uncovered("阿嬷唱歌了。", "zh")


def test_long_text_is_segmented_within_bert_limits() -> None:
    text = "这是一段很长的介绍文字，讲的是山里的歌谣和老人们的故事。" * 400
    segments = FRONTEND.segments(text, "zh", "cut0")
    assert all(len(s.norm_text) <= 512 for s in segments)
    assert sum(len(s.norm_text) for s in segments) >= len(text) * 0.95
