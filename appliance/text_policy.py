"""What free text a voice may say: the consent's policy, `[free_text] max_chars`, the block-list.

A curated voice says its listed phrases only (its consent allows nothing
else); a voice whose consent has ended says nothing; free text is limited in
length and checked against the museum's block-list before any synthesis.
The block-list is matched on a folded form of the text (NFKC, case-folded,
whitespace and punctuation removed), so "B a d", "ＢＡＤ" and "bad!" are the
same word.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

from appliance.config import FreeTextConfig

log = logging.getLogger(__name__)


class TextRefused(Exception):  # noqa: N818 - the name the API contract uses
    """The voice may not say free text at all (HTTP 403); `reason` says why, for visitors
    and technicians."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TextRejectedError(ValueError):
    """This text cannot be said (HTTP 400): empty, too long, or blocked."""


def fold(text: str) -> str:
    """The form the block-list is matched on."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in text if unicodedata.category(c)[0] in "LN")


class TextPolicy:
    """`[free_text]`: length limit and block-list (the consent check is per voice)."""

    def __init__(self, config: FreeTextConfig) -> None:
        self.max_chars = config.max_chars
        words = list(config.blocklist)
        self.problem: str | None = None
        if config.blocklist_file is not None:
            words += self._read_file(Path(config.blocklist_file))
        self.blocked = sorted({w for w in (fold(w) for w in words) if w})

    def _read_file(self, path: Path) -> list[str]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            # Free text stays refused for everyone rather than open without the list.
            self.problem = f"block-list {path}: unreadable ({exc}); free text is refused"
            log.error("%s", self.problem)
            return []
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    def check(self, text: str) -> str:
        """The text to say (stripped), or TextRejectedError / TextRefused."""
        if self.problem is not None:
            raise TextRefused(self.problem)
        if not isinstance(text, str):
            raise TextRejectedError("text must be a string")
        text = " ".join(text.split())
        if not text:
            raise TextRejectedError("the text is empty; type something to say")
        if len(text) > self.max_chars:
            raise TextRejectedError(
                f"the text has {len(text)} characters; at most {self.max_chars} are allowed"
            )
        folded = fold(text)
        if not folded:
            raise TextRejectedError("the text has no letters or digits to say")
        if any(word in folded for word in self.blocked):
            raise TextRejectedError("the text holds a word this museum does not allow; rephrase it")
        return text
