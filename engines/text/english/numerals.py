"""Numbers as English words, the way the reference frontend reads them.

Spelling comes from `inflect` (the library the reference uses).  Where the
reference would crash (numbers beyond inflect's range, more digits than
Python's int() accepts, amounts with stray commas) we read the digits one by
one instead; these are the only places where we knowingly differ.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# int() refuses more than 4300 digits; stay well below and read longer runs digit by digit.
MAX_INT_DIGITS = 4000


def _no_typecheck(target: Any = None, **_options: Any) -> Any:
    """Stand-in for typeguard's `@typechecked` that returns the function unchanged."""
    return target if target is not None else (lambda function: function)


@cache
def _inflect() -> ModuleType:
    """Import inflect without typeguard's instrumentation.

    inflect decorates its methods with typeguard's `@typechecked`, which re-parses
    and recompiles inflect's 4000-line source at import: 2 to 5 s on the kiosk CPU,
    and every call pays for argument checks.  The checks only validate argument
    types (ours are always right), so the decorator is swapped for a no-op while
    inflect is imported.  If someone imported inflect before us, theirs is used.
    """
    if "inflect" in sys.modules:
        return sys.modules["inflect"]
    import typeguard

    original: Callable[..., Any] = typeguard.typechecked
    typeguard.typechecked = _no_typecheck  # type: ignore[assignment]
    try:
        import inflect
    finally:
        typeguard.typechecked = original  # type: ignore[assignment]
    return inflect


@cache
def _engine() -> Any:
    """The shared inflect engine (the reference's number speller)."""
    return _inflect().engine()


def digit_by_digit(digits: str) -> str:
    """'907' -> 'nine zero seven' (fallback where the reference has no answer)."""
    return " ".join(DIGIT_WORDS[int(d)] for d in digits if d.isdigit() and d.isascii())


def to_int(digits: str) -> int | None:
    """int() of an ASCII digit string, or None when it is too long to convert."""
    return int(digits) if len(digits) <= MAX_INT_DIGITS else None


def spell(number: int | str, **options: object) -> str | None:
    """inflect's `number_to_words`, or None when the number is out of its range."""
    try:
        return _engine().number_to_words(number, **options)
    except _inflect().NumOutOfRangeError:
        return None


def cardinal(digits: str) -> str:
    """A bare integer: years between 1001 and 2999 are read in pairs ('nineteen eighty-seven')."""
    num = to_int(digits)
    if num is None:
        return digit_by_digit(digits)
    if 1000 < num < 3000:
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + _engine().number_to_words(num % 100)
        if num % 100 == 0:
            return _engine().number_to_words(num // 100) + " hundred"
        words = _engine().number_to_words(num, andword="", zero="oh", group=2)
        return words.replace(", ", " ")
    return spell(num, andword="") or digit_by_digit(digits)


def ordinal_with_suffix(text: str) -> str:
    """'21st' -> 'twenty-first' (inflect ignores whether the suffix fits the number)."""
    digits = text.rstrip("stndrh")
    if len(digits) > MAX_INT_DIGITS:
        return digit_by_digit(digits)
    return spell(text) or digit_by_digit(digits)


def ordinal_digits(digits: str) -> str:
    """'3' -> '3rd' (digits stay digits; a later pass spells them)."""
    return _engine().ordinal(digits)


def fraction(numerator_digits: str, denominator_digits: str) -> str:
    """'3/4' -> 'three fourths', '1/2' -> 'one half', '6/1' -> 'six'."""
    numerator, denominator = to_int(numerator_digits), to_int(denominator_digits)
    if numerator is None or denominator is None:
        return f"{digit_by_digit(numerator_digits)} over {digit_by_digit(denominator_digits)}"
    top = spell(numerator)
    if top is None:
        return f"{digit_by_digit(numerator_digits)} over {digit_by_digit(denominator_digits)}"
    if denominator == 2:
        return f"{top} {'half' if numerator == 1 else 'halves'}"
    if denominator == 1:
        return top
    bottom_words = spell(denominator)
    if bottom_words is None:
        return f"{top} over {digit_by_digit(denominator_digits)}"
    bottom = _engine().ordinal(bottom_words)
    return f"{top} {bottom}{'s' if numerator > 1 else ''}"


def time_of_day(hours: int, minutes: int) -> str:
    """24-hour clock as 12-hour: '13:30' -> 'one thirty p.m.', '4:00' -> 'four o'clock a.m.'."""
    period = "a.m." if hours < 12 else "p.m."
    if hours > 12:
        hours -= 12
    hour_words = _engine().number_to_words(hours)
    if minutes == 0:
        return f"{hour_words} o'clock {period}"
    return f"{hour_words} {_engine().number_to_words(minutes)} {period}"


def _amount(part: str) -> str:
    """Digits of one side of an amount without leading zeros ('' and '007' -> '0', '7').

    The reference int()s the raw text and crashes on a stray ',' or '('; we drop them.
    """
    return "".join(ch for ch in part if ch.isdigit() and ch.isascii()).lstrip("0") or "0"


def money(amount: str, units: tuple[str, str, str, str]) -> str:
    """'19.99' with dollar units -> '19 dollars and 99 cents' (digits are spelled later).

    `units` = (major singular, major plural, minor singular, minor plural).  The
    minor part is right-padded to two digits ('6.5' -> 50) and not limited to 99.
    """
    major_one, major_many, minor_one, minor_many = units
    parts = amount.split(".")
    if len(parts) > 2:
        return f"{amount} {major_many}"
    major = _amount(parts[0])
    minor = _amount(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else "0"
    major_text = f"{major} {major_one if major == '1' else major_many}"
    minor_text = f"{minor} {minor_one if minor == '1' else minor_many}"
    if major != "0" and minor != "0":
        return f"{major_text} and {minor_text}"
    if major != "0":
        return major_text
    if minor != "0":
        return minor_text
    return f"zero {major_many}"
