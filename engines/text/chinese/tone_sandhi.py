"""Mandarin tone sandhi, as the reference frontend applies it.

Two stages.  `merge_words` re-groups jieba's words so that the rules see the
units they need: 不 and 一 join the following word, 看 一 看 becomes one word,
doubled words join, short runs of third tones join, and 儿 joins its host.
`apply_sandhi` then changes the tones inside one word: 不 and 一 before a
fourth tone, neutral tones (particles, reduplication, 个 as measure word,
lexicalised neutral words such as 东西 "thing"), and the third-tone rule
(3-3 -> 2-3).  Readings come from a `SentenceReader`, so a custom lexicon
takes part in every decision.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from .readings import SentenceReader
from .resources import neutral_tone_words, never_neutral_words


@dataclass
class Word:
    """A word of the sentence: its text, jieba tag and offset in the sentence."""

    text: str
    tag: str
    start: int

    def joined(self, other: Word, middle: str = "") -> Word:
        """This word with `other` appended; keeps this word's tag and offset."""
        return Word(self.text + middle + other.text, self.tag, self.start)


def tone_of(final: str) -> str:
    """Tone digit of a final ("" for punctuation or an unreadable character)."""
    return final[-1] if final[-1:].isdigit() else ""


def with_tone(final: str, tone: str) -> str:
    """`final` with its tone replaced; finals without a tone are left alone."""
    return final[:-1] + tone if tone_of(final) else final


def _all_third(finals: list[str]) -> bool:
    return all(f[-1:] == "3" for f in finals)


def _is_doubled(text: str) -> bool:
    return len(text) == 2 and text[0] == text[1]


# -- stage 1: regrouping --------------------------------------------------------------------


def _attach_bu(words: list[Word]) -> list[Word]:
    """不 is said with the word after it (不 + 要 -> 不要), so keep them together."""
    out: list[Word] = []
    waiting: Word | None = None
    for word in words:
        if waiting is not None:
            word = Word("不" + word.text, word.tag, waiting.start)
            waiting = None
        if word.text == "不":
            waiting = word
        else:
            out.append(word)
    if waiting is not None:
        out.append(Word("不", "d", waiting.start))
    return out


def _attach_yi(words: list[Word]) -> list[Word]:
    """Verb 一 verb (看一看) becomes one word; a lone 一 joins the next word."""
    framed: list[Word] = []
    i = 0
    while i < len(words):
        word = words[i]
        if i > 0 and word.text == "一" and i + 1 < len(words):
            before, after = framed[-1], words[i + 1]
            if before.text == after.text and before.tag == after.tag == "v":
                framed[-1] = before.joined(after, "一")
                i += 2
                continue
        framed.append(word)
        i += 1
    out: list[Word] = []
    for word in framed:
        if out and out[-1].text == "一":
            out[-1] = out[-1].joined(word)
        else:
            out.append(word)
    return out


def _join_doubles(words: list[Word]) -> list[Word]:
    """A word repeated right after itself joins it (reduplication: 看 看 -> 看看)."""
    out: list[Word] = []
    for word in words:
        if out and word.text == out[-1].text:
            out[-1] = out[-1].joined(word)
        else:
            out.append(word)
    return out


def _join_third_tones(
    words: list[Word], reader: SentenceReader, meets: Callable[[list[str], list[str]], bool]
) -> list[Word]:
    """Join neighbours whose tones `meets` says form a 3-3 contact (at most 3 chars)."""
    finals = [reader.finals(w.text, w.start) for w in words]
    out: list[Word] = []
    joined_previous = False
    for i, word in enumerate(words):
        joined = False
        if i > 0 and not joined_previous and meets(finals[i - 1], finals[i]):
            previous = words[i - 1]
            if not _is_doubled(previous.text) and len(previous.text) + len(word.text) <= 3:
                out[-1] = out[-1].joined(word)
                joined = True
        if not joined:
            out.append(word)
        joined_previous = joined
    return out


def _both_all_third(left: list[str], right: list[str]) -> bool:
    return _all_third(left) and _all_third(right)


def _third_at_boundary(left: list[str], right: list[str]) -> bool:
    return left[-1][-1:] == "3" and right[0][-1:] == "3"


def _attach_er(words: list[Word]) -> list[Word]:
    """A separate 儿 belongs to the word before it (erhua)."""
    out: list[Word] = []
    for word in words:
        if out and word.text == "儿":
            out[-1] = out[-1].joined(word)
        else:
            out.append(word)
    return out


def merge_words(words: list[Word], reader: SentenceReader) -> list[Word]:
    """Regroup jieba's words for the tone rules (see module docstring)."""
    words = _attach_bu(words)
    words = _attach_yi(words)
    words = _join_doubles(words)
    words = _join_third_tones(words, reader, _both_all_third)
    words = _join_third_tones(words, reader, _third_at_boundary)
    return _attach_er(words)


# -- stage 2: tones inside a word -----------------------------------------------------------

# After these, 一 keeps its first tone (一，) -- note … and - are not among them.
_PAUSES_AFTER_YI = "：，；。？！“”‘’':,;.?!"
_SENTENCE_PARTICLES = "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶"
_STRUCTURAL_PARTICLES = "的地得"
_COUNT_WORD_BEFORE_GE = "几有两半多各整每做是"

Pieces = Callable[[str], tuple[str, ...]]


def _sandhi_bu(text: str, finals: list[str]) -> None:
    if len(text) == 3 and text[1] == "不":  # 看不懂: neutral 不 in the middle
        finals[1] = with_tone(finals[1], "5")
        return
    for i, char in enumerate(text[:-1]):
        if char == "不" and tone_of(finals[i + 1]) == "4":  # 不要 -> bu2
            finals[i] = with_tone(finals[i], "2")


def _sandhi_yi(text: str, finals: list[str]) -> None:
    if "一" in text and all(c.isnumeric() for c in text if c != "一"):
        return  # a digit in a number (一零一, 十一): first tone
    if len(text) == 3 and text[1] == "一" and text[0] == text[2]:
        finals[1] = with_tone(finals[1], "5")  # 看一看
    elif text.startswith("第一"):
        finals[1] = with_tone(finals[1], "1")  # ordinal
    else:
        for i, char in enumerate(text[:-1]):
            if char != "一":
                continue
            if tone_of(finals[i + 1]) == "4":
                finals[i] = with_tone(finals[i], "2")  # 一个 -> yi2
            elif text[i + 1] not in _PAUSES_AFTER_YI:
                finals[i] = with_tone(finals[i], "4")  # 一天 -> yi4


def split_in_two(text: str, pieces: Pieces) -> tuple[str, str]:
    """Cut a word in two around its shortest search-mode piece (蒙古/包, 纸/老虎)."""
    found = sorted(pieces(text), key=len)
    shortest = found[0] if found else text
    if text.find(shortest) == 0:
        return shortest, text[len(shortest) :]
    return text[: -len(shortest)], shortest


def _is_neutral_word(text: str) -> bool:
    listed = neutral_tone_words()
    return text in listed or text[-2:] in listed


def _neutral_ending(text: str, tag: str) -> bool:
    """Whether a grammatical rule makes the last syllable neutral (particles, 们, 上来)."""
    last = text[-1]
    if last in _SENTENCE_PARTICLES or last in _STRUCTURAL_PARTICLES:
        return True
    if len(text) == 1:
        return text in "了着过" and tag in ("ul", "uz", "ug")  # 走了, 看着
    return (
        (last in "们子" and tag in ("r", "n") and text not in never_neutral_words())
        or (last in "上下里" and tag in ("s", "l", "f"))  # 桌上, 家里
        or (last in "来去" and text[-2] in "上下进出回过起开")  # 上来, 出去
    )


def _is_measure_ge(text: str, ge: int) -> bool:
    """个 after a number or a quantity word (三个, 几个, 这个) is a neutral measure word."""
    if text == "个":
        return True
    return ge >= 1 and (text[ge - 1].isnumeric() or text[ge - 1] in _COUNT_WORD_BEFORE_GE)


def _sandhi_neutral(text: str, tag: str, finals: list[str], pieces: Pieces) -> list[str]:
    never = never_neutral_words()
    if tag[:1] in ("n", "v", "a") and text not in never:
        for j in range(1, len(text)):
            if text[j] == text[j - 1]:  # 奶奶, 看看
                finals[j] = with_tone(finals[j], "5")
    ge = text.find("个")
    if _neutral_ending(text, tag):
        finals[-1] = with_tone(finals[-1], "5")
    elif _is_measure_ge(text, ge):
        finals[ge] = with_tone(finals[ge], "5")
    elif _is_neutral_word(text):
        finals[-1] = with_tone(finals[-1], "5")
    # The lexicalised neutral words also count inside each half of the word.
    head, tail = split_in_two(text, pieces)
    halves = [finals[: len(head)], finals[len(head) :]]
    for half_text, half in zip((head, tail), halves, strict=True):
        if half and _is_neutral_word(half_text):
            half[-1] = with_tone(half[-1], "5")
    return halves[0] + halves[1]


def _sandhi_third(text: str, finals: list[str], pieces: Pieces) -> list[str]:
    if len(text) == 2 and _all_third(finals):
        finals[0] = with_tone(finals[0], "2")
    elif len(text) == 3:
        head, _ = split_in_two(text, pieces)
        if _all_third(finals):
            if len(head) == 2:  # 蒙古/包 -> 2 2 3
                finals[0] = with_tone(finals[0], "2")
                finals[1] = with_tone(finals[1], "2")
            elif len(head) == 1:  # 纸/老虎 -> 3 2 3
                finals[1] = with_tone(finals[1], "2")
        else:
            first, second = finals[: len(head)], finals[len(head) :]
            if len(first) == 2 and _all_third(first):  # 所有/人
                first[0] = with_tone(first[0], "2")
            if len(second) == 2 and _all_third(second):
                second[0] = with_tone(second[0], "2")
            elif (
                second
                and not _all_third(second)
                and second[0][-1:] == "3"
                and first[-1][-1:] == "3"
            ):  # 好/喜欢: 3 before a third tone
                first[-1] = with_tone(first[-1], "2")
            finals = first + second
    elif len(text) == 4:  # idioms: two pairs
        pairs = [finals[:2], finals[2:]]
        for pair in pairs:
            if _all_third(pair):
                pair[0] = with_tone(pair[0], "2")
        finals = pairs[0] + pairs[1]
    return finals


def apply_sandhi(
    text: str, tag: str, finals: list[str], pieces: Pieces, keep: Collection[int] = ()
) -> list[str]:
    """Tones of one (merged) word after sandhi; `pieces` is jieba's search-mode cut.

    Syllables at the positions in `keep` (custom-lexicon readings) are exempt
    from the 不/一 and neutral-tone rules: the technician wrote those tones.
    The third-tone rule still applies to them, as it does in natural speech.
    """
    written = list(finals)
    finals = list(finals)
    _sandhi_bu(text, finals)
    _sandhi_yi(text, finals)
    finals = _sandhi_neutral(text, tag, finals, pieces)
    for k in keep:
        finals[k] = written[k]
    return _sandhi_third(text, finals, pieces)
