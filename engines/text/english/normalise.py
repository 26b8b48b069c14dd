"""English text normalisation: digits, money, times, units and symbols become words.

Order matters and follows the reference frontend (GPT-SoVITS text/english.py
`text_normalize` and text/en_normalization/expend.py):

 1. full-width 。！？ become . ! ?  (the reference's other mappings, such as ，→, and
    ’→', never fire: their patterns are escaped as literal strings, so those
    characters are simply deleted in step 4);
 2. numbers, in this order: "3. " list ordinals, arithmetic ("3 + 4"), negative
    integers, thousands commas, clock times, units, £ and $ amounts, decimals,
    fractions, "21st" ordinals, remaining integers;
 3. accents stripped, "%" read as "percent";
 4. everything but ASCII letters, space and ' . , ? ! - deleted; "i.e."/"e.g." expanded;
    an upper-case letter that follows a non-space gets a space before it ("iPhone"
    -> "i Phone", "USA" -> "U S A");
 5. a run of punctuation after punctuation or a space keeps only its first character.

Quirks kept on purpose (golden data depends on them): times are 24-hour ("10:30" ->
"ten thirty a.m."), "1990s" reads as "1990 seconds", a negative number loses the
space before it ("at -5" -> "atnegative five").
"""

from __future__ import annotations

import re
import unicodedata

from engines.text.english import numerals

# Step 1.  The first two keys are the reference's escaped regex texts, matched literally.
_PUNCTUATION_MAP = {"[;:：，；]": ",", '["’]': "'", "。": ".", "！": "!", "？": "?"}
_PUNCTUATION_RE = re.compile("|".join(re.escape(k) for k in _PUNCTUATION_MAP))

# Step 2.  Same matches as the reference's patterns; the look-behinds only stop the
# regex engine from retrying inside a digit run (a match can only start where the run
# starts), which made long digit strings take cubic time.
_LIST_ORDINAL_RE = re.compile(r"\b([0-9]+)\. ")
_SUPERSCRIPTS = "[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*"
_OPERAND = (
    rf"((-?)(?<!\d)((\d+)(\.\d+)?{_SUPERSCRIPTS})|(\.\d+{_SUPERSCRIPTS})|([A-Za-z]{_SUPERSCRIPTS}))"
)
_ARITHMETIC_RE = re.compile(rf"{_OPERAND}\s+([-+×÷=])\s+{_OPERAND}")
_OPERATOR_WORDS = {
    "+": " plus ",
    "-": " minus ",
    "×": " times ",
    "÷": " divided by ",
    "=": " Equals ",
}
_NEGATIVE_RE = re.compile(r"(?:^|(?<!\s)\s+)-(\d+)")
_THOUSANDS_RE = re.compile(r"[0-9][0-9,]+[0-9]")
_TIME_RE = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
_UNITS = {
    "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "ft": ("feet", "feet"),
    "L": ("liter", "liters"),
    "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}
# The alternatives are tried in this order (so "5min" is not "5m" + "in": \b fails after "m").
_UNIT_RE = re.compile(r"\b([0-9]+)(\.[0-9]+)?(" + "|".join(re.escape(u) for u in _UNITS) + r")\b")
_POUND_UNITS = ("pound", "pounds", "penny", "pence")
_DOLLAR_UNITS = ("dollar", "dollars", "cent", "cents")
_POUNDS_BEFORE_RE = re.compile(r"£([0-9.,]*[0-9]+)")
_POUNDS_AFTER_RE = re.compile(r"(?<![0-9.,])([0-9.,]*[0-9])£")
_DOLLARS_BEFORE_RE = re.compile(r"\$([0-9.,]*[0-9]+)")
_DOLLARS_AFTER_RE = re.compile(r"(?<![(0-9.,])([(0-9.,]*[0-9])\$")  # "(" as in the reference
_DECIMAL_RE = re.compile(r"(?<![0-9])([0-9]+)\.(\s*[0-9]+)")
_FRACTION_RE = re.compile(r"(?<![0-9])([0-9]+)/([0-9]+)")
_ORDINAL_RE = re.compile(r"(?<![0-9])[0-9]+(?:st|nd|rd|th)")
_INTEGER_RE = re.compile(r"[0-9]+")

# Steps 4 and 5.
_NOT_KEPT_RE = re.compile(r"[^ A-Za-z'.,?!\-]")
_IE_RE = re.compile(r"i\.e\.", re.IGNORECASE)
_EG_RE = re.compile(r"e\.g\.", re.IGNORECASE)
_INNER_CAPITAL_RE = re.compile(r"(?<=\S)([A-Z])")
_PUNCTUATION = "!?…,.-"
_REPEATED_PUNCTUATION_RE = re.compile(
    rf"([{re.escape(_PUNCTUATION)}\s])[{re.escape(_PUNCTUATION)}]+"
)


def _arithmetic(match: re.Match[str]) -> str:
    return match.group(1) + _OPERATOR_WORDS[match.group(8)] + match.group(9)


def _unit(match: re.Match[str]) -> str:
    digits, decimals, unit = match.groups()
    singular, plural = _UNITS[unit]
    one = decimals is None and digits.lstrip("0") == "1"
    return f"{digits}{decimals or ''} {singular if one else plural}"


def _decimal(match: re.Match[str]) -> str:
    return f"{match.group(1)} point {' '.join(match.group(2))}"


def expand_numbers(text: str) -> str:
    """Step 2: every ASCII digit run becomes words (symbols around them included)."""
    text = _LIST_ORDINAL_RE.sub(lambda m: numerals.ordinal_digits(m.group(1)) + ", ", text)
    while _ARITHMETIC_RE.search(text):
        text = _ARITHMETIC_RE.sub(_arithmetic, text)
    text = _NEGATIVE_RE.sub(lambda m: "negative " + m.group(1), text)
    text = _THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _TIME_RE.sub(lambda m: numerals.time_of_day(int(m.group(1)), int(m.group(2))), text)
    text = _UNIT_RE.sub(_unit, text)
    text = _POUNDS_BEFORE_RE.sub(lambda m: numerals.money(m.group(1), _POUND_UNITS), text)
    text = _POUNDS_AFTER_RE.sub(lambda m: numerals.money(m.group(1), _POUND_UNITS), text)
    text = _DOLLARS_BEFORE_RE.sub(lambda m: numerals.money(m.group(1), _DOLLAR_UNITS), text)
    text = _DOLLARS_AFTER_RE.sub(lambda m: numerals.money(m.group(1), _DOLLAR_UNITS), text)
    text = _DECIMAL_RE.sub(_decimal, text)
    text = _FRACTION_RE.sub(lambda m: numerals.fraction(m.group(1), m.group(2)), text)
    text = _ORDINAL_RE.sub(lambda m: numerals.ordinal_with_suffix(m.group(0)), text)
    return _INTEGER_RE.sub(lambda m: numerals.cardinal(m.group(0)), text)


def strip_accents(text: str) -> str:
    """'café' -> 'cafe': decompose, then drop combining marks."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def normalize_english(text: str) -> str:
    """The text the phonemiser reads (also the `norm_text` of the result)."""
    text = _PUNCTUATION_RE.sub(lambda m: _PUNCTUATION_MAP[m.group(0)], text)
    text = expand_numbers(text)
    text = strip_accents(text)
    text = text.replace("%", " percent")
    text = _NOT_KEPT_RE.sub("", text)
    text = _IE_RE.sub("that is", text)
    text = _EG_RE.sub("for example", text)
    text = _INNER_CAPITAL_RE.sub(r" \1", text)
    return _REPEATED_PUNCTUATION_RE.sub(r"\1", text)
