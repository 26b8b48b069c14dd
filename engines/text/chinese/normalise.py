"""Mandarin text normalisation: what the voice should say, written in characters.

Numbers, dates, times, percentages, units, phone numbers and maths symbols are
spelled out in Chinese characters; then punctuation is mapped onto the six
marks the phone set knows (`! ? … , . -`) and everything else that is not a
CJK character of U+4E00..U+9FA5 is dropped.  The result is the `norm_text` the
BERT features are aligned to, so it must match the reference character for
character, including its oddities (every lowercase "m"/"s" becomes 米/秒 even
inside English words; "1,234" reads 一,二三四; 3+ digit runs without a measure
word are read digit by digit with 幺; "25摄氏度" is said 二十五度).  The rules run
in the reference's order: later rules see the output of earlier ones.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable
from functools import cache

from .errors import TextFrontendError
from .numerals import read_cardinal, read_clock_part, read_digits, read_number
from .resources import normalisation_tables, traditional_to_simplified

VERSIONS = ("v1", "v2")

#: The punctuation marks that survive normalisation; each becomes one phone.
PUNCTUATION = "!?…,.-"

# -- sentence splitting ---------------------------------------------------------------------

# Brackets, quotes and markup are deleted before anything else looks at the text.
_EARLY_DROP = str.maketrans("", "", "—《》【】<>{}()（）#&@“”^_|\\")
_SENTENCE_END = re.compile(r"([：、，；。？！,;?!][”’]?)")
_NEWLINES = re.compile(r"\n+")


def split_sentences(text: str) -> list[str]:
    """Cut at clause punctuation and newlines; rules never match across a cut."""
    text = text.replace(" ", "").translate(_EARLY_DROP)
    text = _SENTENCE_END.sub("\\1\n", text).strip()
    return [piece.strip() for piece in _NEWLINES.split(text)]


# -- character level clean-up ---------------------------------------------------------------

_FULLWIDTH = str.maketrans(
    {chr(ord(c) + 0xFEE0): c for c in string.ascii_letters + string.digits} | {"\u3000": " "}
)
# Decimal digits of other scripts (Arabic-Indic, Devanagari, ...): the reference
# crashes on them; reading them as the digits they are is the sensible choice.
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")


def _ascii_digit(match: re.Match[str]) -> str:
    return str(unicodedata.decimal(match.group(), 0))


# -- dates and times ------------------------------------------------------------------------

_DATE = re.compile(r"(\d{4}|\d{2})年((0?[1-9]|1[0-2])月)?(((0?[1-9])|((1|2)[0-9])|30|31)([日号]))?")
_NUMERIC_DATE = re.compile(r"(\d{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])")
_CLOCK = r"([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?"
_TIME = re.compile(_CLOCK)
_TIME_SPAN = re.compile(_CLOCK + r"(~|-)" + _CLOCK)


def _say_date(m: re.Match[str]) -> str:
    text = read_digits(m.group(1)) + "年"
    if m.group(3):
        text += read_cardinal(m.group(3)) + "月"
    if m.group(5):
        text += read_cardinal(m.group(5)) + m.group(9)
    return text


def _say_numeric_date(m: re.Match[str]) -> str:
    year, _, month, day = m.groups()
    return f"{read_digits(year)}年{read_cardinal(month)}月{read_cardinal(day)}日"


def _clock_text(hour: str, minute: str, second: str | None, half_if: str) -> str:
    """One clock reading; `half_if` is the minute that decides 半 (see _say_time)."""
    text = read_number(hour) + "点"
    if minute.lstrip("0"):
        text += "半" if int(half_if) == 30 else read_clock_part(minute) + "分"
    if second and second.lstrip("0"):
        text += read_clock_part(second) + "秒"
    return text


def _say_time(m: re.Match[str]) -> str:
    groups = m.groups()
    text = _clock_text(groups[0], groups[1], groups[3], groups[1])
    if len(groups) > 4:
        # The reference decides 半 for the end time from the *start* minute
        # ("8:30-9:15" -> 八点半至九点半); voices learnt that, so keep it.
        text += "至" + _clock_text(groups[5], groups[6], groups[8], groups[1])
    return text


# -- quantities with units ------------------------------------------------------------------

_NUMBER = r"(?:-?\d+(?:\.\d+)?|\.\d+)"


@cache
def _unit_range() -> re.Pattern[str]:
    units = "|".join(re.escape(u) for u in normalisation_tables()["range_units"])
    return re.compile(rf"{_NUMBER}(?:{units})~{_NUMBER}(?:{units})")


_TEMPERATURE = re.compile(r"(-?)(\d+(?:\.\d+)?)(°C|℃|度|摄氏度)")


def _say_temperature(m: re.Match[str]) -> str:
    """Every temperature unit is said 度, 摄氏度 included; a minus sign is 零下.

    The reference meant to keep 摄氏度 but compares the wrong capture group, so
    "25摄氏度" comes out as 二十五度; voices were trained on that, so do the same.
    """
    sign, value = m.group(1, 2)
    return ("零下" if sign else "") + read_number(value) + "度"


def _spell_units(sentence: str) -> str:
    """Unit abbreviations become words wherever they occur, even inside English."""
    for abbreviation, name in normalisation_tables()["unit_names"]:
        sentence = sentence.replace(abbreviation, name)
    return sentence


# -- arithmetic -----------------------------------------------------------------------------

_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_SUPERSCRIPT_VALUES = str.maketrans(_SUPERSCRIPTS, "0123456789xyn")
_OPERAND = (
    rf"(?:-?\d+(?:\.\d+)?[{_SUPERSCRIPTS}]*|\.\d+[{_SUPERSCRIPTS}]*|[A-Za-z][{_SUPERSCRIPTS}]*)"
)
_OPERATION = re.compile(rf"({_OPERAND})([+\-×÷=])({_OPERAND})")
_OPERATOR_NAMES = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
_POWER = re.compile(rf"[{_SUPERSCRIPTS}]+")


def _say_operation(m: re.Match[str]) -> str:
    return m.group(1) + _OPERATOR_NAMES[m.group(2)] + m.group(3)


def _say_power(m: re.Match[str]) -> str:
    return "的" + m.group().translate(_SUPERSCRIPT_VALUES) + "次方"


# -- plain numbers --------------------------------------------------------------------------

_FRACTION = re.compile(r"(-?)(\d+)/(\d+)")
_PERCENT = re.compile(r"(-?)(\d+(?:\.\d+)?)%")
_MOBILE = re.compile(r"(?<!\d)((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)")
_SERVICE_LINE = re.compile(r"400-?\d{3}-?\d{4}")
_RANGE = re.compile(r"(?<![\d+\-×÷=])(-?\d+(?:\.\d+)?)[-~](-?\d+(?:\.\d+)?)(?![\d+\-×÷=])")
_NEGATIVE = re.compile(r"-(\d+)")
_DOTTED_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:\.\d+)+")
_DECIMAL = re.compile(r"(-?)(\d+\.\d+)|\.(\d+)")
_LONG_DIGITS = re.compile(r"\d{3,}")
_ANY_NUMBER = re.compile(r"(-?)(\d+(?:\.\d+)?)|\.(\d+)")


@cache
def _counted() -> re.Pattern[str]:
    """A number followed by a measure word (3个, 5多人, 10+年): read as a quantity."""
    words = sorted(normalisation_tables()["measure_words"], key=len, reverse=True)
    return re.compile(r"(\d+)([多余几+])?(?=" + "|".join(words) + ")")


def _say_fraction(m: re.Match[str]) -> str:
    sign, numerator, denominator = m.groups()
    return ("负" if sign else "") + read_number(denominator) + "分之" + read_number(numerator)


def _say_percent(m: re.Match[str]) -> str:
    return ("负" if m.group(1) else "") + "百分之" + read_number(m.group(2))


def _say_mobile(m: re.Match[str]) -> str:
    return "，".join(read_digits(part, phone=True) for part in m.group().strip("+").split())


def _say_landline(m: re.Match[str]) -> str:
    return "，".join(read_digits(part, phone=True) for part in m.group().split("-"))


def _say_signed(m: re.Match[str]) -> str:
    """Number with optional minus; a bare ".5" is 零点五."""
    if m.group(3):
        return read_number("." + m.group(3))
    return ("负" if m.group(1) else "") + read_number(m.group(2))


def _say_range(m: re.Match[str]) -> str:
    return (
        _ANY_NUMBER.sub(_say_signed, m.group(1)) + "到" + _ANY_NUMBER.sub(_say_signed, m.group(2))
    )


def _say_version(m: re.Match[str]) -> str:
    return "".join("点" if c == "." else read_number(c) for c in m.group())


def _say_counted(m: re.Match[str]) -> str:
    number = read_number(m.group(1))
    if number == "二":
        number = "两"
    modifier = m.group(2) or ""
    return number + ("多" if modifier == "+" else modifier)


# -- the rule chain -------------------------------------------------------------------------

_LATE_DROP = str.maketrans("", "", "-—《》【】<=>{}()（）#&@“”^_|\\")


def _replace(pattern: re.Pattern[str], say: Callable[[re.Match[str]], str]) -> Callable[[str], str]:
    return lambda s: pattern.sub(say, s)


def _repeat_operations(sentence: str) -> str:
    # One pass rewrites every other operator of a chain ("1+2+3"); repeat until none is left.
    while _OPERATION.search(sentence):
        sentence = _OPERATION.sub(_say_operation, sentence)
    return sentence


def _name_symbols(sentence: str) -> str:
    sentence = sentence.replace("/", "每")
    for symbol, name in normalisation_tables()["symbol_names"]:
        sentence = sentence.replace(symbol, name)
    return sentence.translate(_LATE_DROP)


@cache
def _rules() -> tuple[Callable[[str], str], ...]:
    return (
        lambda s: s.translate(traditional_to_simplified()).translate(_FULLWIDTH),
        lambda s: _OTHER_DIGIT.sub(_ascii_digit, s),
        _replace(_DATE, _say_date),
        _replace(_NUMERIC_DATE, _say_numeric_date),
        _replace(_TIME_SPAN, _say_time),
        _replace(_TIME, _say_time),
        lambda s: _unit_range().sub(lambda m: m.group().replace("~", "至"), s),
        _replace(_TEMPERATURE, _say_temperature),
        _spell_units,
        _repeat_operations,
        _replace(_POWER, _say_power),
        _replace(_FRACTION, _say_fraction),
        _replace(_PERCENT, _say_percent),
        _replace(_MOBILE, _say_mobile),
        _replace(_LANDLINE, _say_landline),
        _replace(_SERVICE_LINE, _say_landline),
        _replace(_RANGE, _say_range),
        _replace(_NEGATIVE, lambda m: "负" + read_number(m.group(1))),
        _replace(_DOTTED_VERSION, _say_version),
        _replace(_DECIMAL, _say_signed),
        _replace(_counted(), _say_counted),
        _replace(_LONG_DIGITS, lambda m: read_digits(m.group(), phone=True)),
        _replace(_ANY_NUMBER, _say_signed),
        _name_symbols,
    )


def verbalise(sentence: str) -> str:
    """Spell out the numbers and symbols of one sentence (see module docstring)."""
    for rule in _rules():
        sentence = rule(sentence)
    return sentence


# -- punctuation ----------------------------------------------------------------------------

_MARKS = str.maketrans(
    {
        "：": ",",
        "；": ",",
        "，": ",",
        "。": ".",
        "！": "!",
        "？": "?",
        "\n": ".",
        "·": ",",
        "、": ",",
        "$": ".",
        "/": ",",
        "—": "-",
        "~": "…",
        "～": "…",
        "嗯": "恩",  # interjections the phone set cannot say; read as their look-alikes
        "呣": "母",
    }
)
_UNSPEAKABLE = re.compile(r"[^\u4e00-\u9fa5!?…,.\-]+")
_MARK_RUN = re.compile(r"([!?…,.\-])[!?…,.\-]+")


def map_punctuation(sentence: str) -> str:
    """Map punctuation onto the six phone marks and drop what cannot be spoken."""
    sentence = sentence.replace("...", "…").translate(_MARKS)
    return _UNSPEAKABLE.sub("", sentence)


def check_version(version: str) -> None:
    """Reject unknown versions with the frontend's documented error."""
    if version not in VERSIONS:
        raise TextFrontendError(f"unknown version {version!r}; expected one of {VERSIONS}")


def normalize_chinese(text: str, version: str = "v2") -> str:
    """The reference's zh `norm_text` of `text` (identical for v1 and v2).

    Only CJK characters U+4E00..U+9FA5 and `!?…,.-` remain; runs of punctuation
    are cut to their first mark (so 。。。 or ？！ cannot leak into the prosody).
    """
    check_version(version)
    spoken = "".join(map_punctuation(verbalise(s)) for s in split_sentences(text))
    return _MARK_RUN.sub("\\1", spoken)
