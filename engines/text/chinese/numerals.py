"""Reading Arabic numerals aloud in Mandarin.

Every number-related rule of the normaliser ends in one of three readings:
cardinal ("1205" -> 一千二百零五), digit by digit ("2024" -> 二零二四, phone
numbers with 幺 for 1) or a decimal made of both.  The quirks of the reference
(e.g. "3.20" -> 三点二零, "1010" -> 一千零一十) are kept on purpose: voices were
trained on its output.
"""

from __future__ import annotations

DIGIT_NAMES = "零一二三四五六七八九"
ZERO = DIGIT_NAMES[0]
# Place values the cardinal reading splits on, largest first: 亿 (10^8),
# 万 (10^4), 千, 百, 十.
_PLACES: tuple[tuple[int, str], ...] = ((8, "亿"), (4, "万"), (3, "千"), (2, "百"), (1, "十"))


def read_digits(digits: str, phone: bool = False) -> str:
    """Digit by digit; `phone` reads 1 as 幺 as Chinese speakers do for numbers."""
    text = "".join(DIGIT_NAMES[int(d)] for d in digits)
    return text.replace("一", "幺") if phone else text


def _cardinal_parts(digits: str) -> list[str]:
    """Characters for `digits` (may carry leading zeros, which become one 零)."""
    significant = digits.lstrip("0")
    if not significant:
        return []
    if len(significant) == 1:
        lead = [ZERO] if len(significant) < len(digits) else []
        return [*lead, DIGIT_NAMES[int(significant)]]
    # Split at the largest place strictly below the number of significant digits;
    # the high part keeps its own zeros (dropped there), the low part's leading
    # zeros turn into 零 when a single digit is left.
    power, name = next((p, n) for p, n in _PLACES if p < len(significant))
    return [*_cardinal_parts(digits[:-power]), name, *_cardinal_parts(digits[-power:])]


def read_cardinal(digits: str) -> str:
    """Whole number as a quantity: "105" -> 一百零五, "12" -> 十二, "" -> ""."""
    if not digits:
        return ""
    digits = digits.lstrip("0")
    if not digits:
        return ZERO
    parts = _cardinal_parts(digits)
    if parts[:2] == ["一", "十"]:
        parts = parts[1:]  # 一十二 is said 十二
    return "".join(parts)


def read_number(number: str) -> str:
    """A number with an optional decimal part ("3.5" -> 三点五, ".5" -> 零点五).

    Trailing zeros after the point collapse to a single 零, as the reference does.
    """
    whole, _, fraction = number.partition(".")
    fraction = fraction.replace(".", "")  # a second point cannot reach here; be lenient
    text = read_cardinal(whole)
    if fraction.endswith("0"):
        fraction = fraction.rstrip("0") + "0"
    if fraction:
        text = (text or ZERO) + "点" + read_digits(fraction)
    return text


def read_clock_part(number: str) -> str:
    """Minutes/seconds of a time: "05" -> 零五, "45" -> 四十五."""
    text = read_number(number.lstrip("0"))
    return ZERO + text if number.startswith("0") else text
