"""Word tokens and part-of-speech tags for the phonemiser.

Tokens come from NLTK's TweetTokenizer, as in the reference: it keeps
"few-shot", "don't" and domain-like "x.com" whole and splits "a.m." into
"a . m .".  It is pure regular expressions and needs no NLTK data.

Part-of-speech tags: the reference asks NLTK's perceptron tagger, whose model
is a download we cannot have offline (neither could the golden run, which
stubbed it).  Without a tagger every token is tagged "NN", exactly like the
golden generator.  Tags only matter for g2p_en's homographs (read, live,
lead, record, ...): they get the reading g2p_en gives to a noun tag.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nltk.tokenize.casual import TweetTokenizer

NO_TAGGER_TAG = "NN"


@cache
def _tokenizer() -> TweetTokenizer:
    """NLTK's tokenizer, imported on first use (importing nltk takes ~0.4 s)."""
    from nltk.tokenize.casual import TweetTokenizer

    return TweetTokenizer()


def tokenize(text: str) -> list[str]:
    """Split normalised text into word and punctuation tokens."""
    return _tokenizer().tokenize(text)


def tag(tokens: list[str]) -> list[tuple[str, str]]:
    """(token, tag) pairs; see the module docstring for why every tag is "NN"."""
    return [(token, NO_TAGGER_TAG) for token in tokens]
