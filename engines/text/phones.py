"""What a language's grapheme-to-phoneme step returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class G2PResult:
    """Phones of one language segment.

    `word2ph[i]` is how many phones the i-th character of `norm_text` became
    (Mandarin only; BERT features are repeated that often).  `uncovered` lists
    the words or characters that no dictionary and no custom lexicon entry
    covered, so a technician can add them to the voice's lexicon.
    """

    norm_text: str
    phones: list[str]
    word2ph: list[int] | None = None
    uncovered: list[str] = field(default_factory=list)
