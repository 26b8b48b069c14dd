"""English grapheme-to-phoneme frontend, offline, matching GPT-SoVITS's `text/english.py`.

normalise.py (numbers, money, times, symbols) -> tokenise.py -> g2p.py (per-word
lookup in dictionary.py, letters, wordsegment splits, neural_g2p.py) -> phones.
"""

from engines.text.english.g2p import EnglishFrontendError, english_g2p
from engines.text.english.normalise import normalize_english

__all__ = ["EnglishFrontendError", "english_g2p", "normalize_english"]
