"""Mandarin (zh) frontend: text normalisation and grapheme-to-phoneme, offline.

Reproduces the GPT-SoVITS frontend (`text/chinese2.py` for v2 with g2pW off,
`text/chinese.py` for v1): jieba_fast words, pypinyin readings, tone sandhi,
erhua (v2) and the opencpop-strict phone split.

    normalize_chinese(text, version="v2") -> str        # the `norm_text`
    chinese_g2p(text, version="v2", lexicon=None) -> G2PResult
    preload() -> None                                    # load jieba etc. at boot
"""

from .errors import TextFrontendError
from .g2p import chinese_g2p, preload
from .normalise import normalize_chinese

__all__ = ["TextFrontendError", "chinese_g2p", "normalize_chinese", "preload"]
