"""Cut a text into the segments that are synthesised one by one.

The reference offers six cutting methods (cut0: none, cut1: every four
sentences, cut2: about 50 characters, cut3: on 。, cut4: on ".", cut5: on
every punctuation mark) and then tidies the pieces: runs of punctuation
collapse, pieces shorter than 5 characters merge, pieces longer than 510
characters are split at punctuation (or hard at 510), and every piece ends in
a sentence mark.  The rules follow the reference's behaviour; the code is
this project's own.
"""

from __future__ import annotations

import re

CUT_METHODS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")

#: Marks that end a sentence piece for cut1/cut2 (and that need no added "。").
SENTENCE_MARKS = frozenset("，。？！,.?!~:：—…")
#: Marks cut5 splits after.
_CUT5_MARKS = frozenset(",.;?!、，。？！；：…")
#: What a piece may consist of and still be dropped as "only punctuation".
_PUNCTUATION_ONLY = frozenset("!?…,.- ")
MIN_SEGMENT_CHARS = 5
MAX_SEGMENT_CHARS = 510
_REPEATED_MARKS = re.compile(r"([!?…,.\-。，？！、；：~])\1+")


def collapse_punctuation(text: str) -> str:
    """Runs of one punctuation mark become one ("！！！" -> "！")."""
    return _REPEATED_MARKS.sub(r"\1", text)


def _sentences(text: str) -> list[str]:
    """Pieces that each end after a sentence mark (one is appended if missing)."""
    text = text.replace("……", "。").replace("——", "，")
    if text[-1] not in SENTENCE_MARKS:
        text += "。"
    pieces, start = [], 0
    for i, char in enumerate(text):
        if char in SENTENCE_MARKS:
            pieces.append(text[start : i + 1])
            start = i + 1
    return pieces


def _every_four(text: str) -> list[str]:
    pieces = _sentences(text)
    if len(pieces) <= 4:
        return [text]
    return ["".join(pieces[i : i + 4]) for i in range(0, len(pieces), 4)]


def _about_fifty(text: str) -> list[str]:
    pieces = _sentences(text)
    if len(pieces) < 2:
        return [text]
    chunks, current = [], ""
    for piece in pieces:
        current += piece
        if len(current) > 50:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    if len(chunks) > 1 and len(chunks[-1]) < 50:
        tail = chunks.pop()
        chunks[-1] += tail
    return chunks


def _on_marks(text: str) -> list[str]:
    chunks, current = [], ""
    for i, char in enumerate(text):
        current += char
        between_digits = (
            char == "."
            and 0 < i < len(text) - 1
            and text[i - 1].isdigit()
            and text[i + 1].isdigit()
        )
        if char in _CUT5_MARKS and not between_digits:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    return [c for c in chunks if not set(c) <= _CUT5_MARKS]


def cut(text: str, method: str = "cut1") -> list[str]:
    """Split `text` by one of the reference's cutting methods (see module docstring)."""
    if method not in CUT_METHODS:
        raise ValueError(f"unknown cut method {method!r}; choose one of {', '.join(CUT_METHODS)}")
    text = text.strip("\n")
    if not text.strip():
        return []
    if method == "cut0":
        chunks = text.split("\n")
    elif method == "cut1":
        chunks = _every_four(text)
    elif method == "cut2":
        chunks = _about_fifty(text)
    elif method == "cut3":
        chunks = text.strip("。").split("。")
    elif method == "cut4":
        chunks = re.split(r"(?<!\d)\.(?!\d)", text.strip("."))
    else:
        chunks = _on_marks(text)
    lines = [line for chunk in chunks for line in chunk.split("\n")]
    return [c for c in lines if c.strip() and not set(c) <= _PUNCTUATION_ONLY]


def merge_short(pieces: list[str], threshold: int = MIN_SEGMENT_CHARS) -> list[str]:
    """Join pieces until each has at least `threshold` characters; a short tail joins the last."""
    if len(pieces) < 2:
        return list(pieces)
    merged, current = [], ""
    for piece in pieces:
        current += piece
        if len(current) >= threshold:
            merged.append(current)
            current = ""
    if current:
        if merged:
            merged[-1] += current
        else:
            merged.append(current)
    return merged


def split_long(piece: str, limit: int = MAX_SEGMENT_CHARS) -> list[str]:
    """Pieces of at most `limit` characters, cut after punctuation where possible."""
    out: list[str] = []
    while len(piece) > limit:
        window = piece[:limit]
        cut_at = max(
            (i for i, ch in enumerate(window) if ch in SENTENCE_MARKS | _CUT5_MARKS), default=-1
        )
        cut_at = cut_at + 1 if cut_at > 0 else limit
        out.append(piece[:cut_at])
        piece = piece[cut_at:]
    if piece:
        out.append(piece)
    return out


def segment_text(text: str, method: str = "cut1", language: str = "zh") -> list[str]:
    """The full segmentation: cut, tidy, merge short, split long, end each in a mark."""
    end_mark = "." if language == "en" else "。"
    text = collapse_punctuation(text.strip())
    if not text:
        return []
    first = re.split("[" + re.escape("".join(sorted(SENTENCE_MARKS))) + "]", text)[0].strip()
    if text[0] not in SENTENCE_MARKS and len(first) < 4:
        text = end_mark + text
    pieces = merge_short(cut(text, method))
    segments = []
    for piece in pieces:
        for part in split_long(piece):
            part = part.strip()
            if not part or set(part) <= _PUNCTUATION_ONLY | SENTENCE_MARKS:
                continue
            if part[-1] not in SENTENCE_MARKS:
                part += end_mark
            segments.append(part)
    return segments
