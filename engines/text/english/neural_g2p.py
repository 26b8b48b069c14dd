"""Neural pronunciation of out-of-dictionary words (g2p_en's GRU seq2seq model).

The reference calls `g2p_en.G2p.predict`.  Importing g2p_en downloads NLTK
data, so we load its bundled checkpoint (`checkpoint20.npz`) ourselves and run
the same small network in numpy: a one-layer GRU encoder over the letters and
a greedy GRU decoder of at most 20 phones.  All arithmetic is float32 and
step by step, like the original, so the argmax decisions are the same.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

from engines.text.english.dictionary import g2p_en_data

GRAPHEMES = ("<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz")
PHONEMES = (
    "<pad>", "<unk>", "<s>", "</s>",
    "AA0", "AA1", "AA2", "AE0", "AE1", "AE2", "AH0", "AH1", "AH2", "AO0", "AO1", "AO2",
    "AW0", "AW1", "AW2", "AY0", "AY1", "AY2", "B", "CH", "D", "DH",
    "EH0", "EH1", "EH2", "ER0", "ER1", "ER2", "EY0", "EY1", "EY2", "F", "G", "HH",
    "IH0", "IH1", "IH2", "IY0", "IY1", "IY2", "JH", "K", "L", "M", "N", "NG",
    "OW0", "OW1", "OW2", "OY0", "OY1", "OY2", "P", "R", "S", "SH", "T", "TH",
    "UH0", "UH1", "UH2", "UW", "UW0", "UW1", "UW2", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
START, END = PHONEMES.index("<s>"), PHONEMES.index("</s>")
UNKNOWN_LETTER = GRAPHEMES.index("<unk>")
END_OF_WORD = GRAPHEMES.index("</s>")
MAX_PHONES = 20
_LETTER_IDS = {g: i for i, g in enumerate(GRAPHEMES)}


class _GRU:
    """One GRU layer (PyTorch gate layout r, z, n) with float32 weights."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray):
        self.w_ih_t = np.ascontiguousarray(w_ih.T)
        self.w_hh_t = np.ascontiguousarray(w_hh.T)
        self.b_ih = b_ih
        self.b_hh = b_hh
        self.size = w_hh.shape[1]

    def step(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        """New hidden state (1, size) from input x (1, emb) and state h (1, size)."""
        gi = x @ self.w_ih_t + self.b_ih
        gh = h @ self.w_hh_t + self.b_hh
        split = 2 * self.size
        gates = 1 / (1 + np.exp(-(gi[:, :split] + gh[:, :split])))
        reset, update = gates[:, : self.size], gates[:, self.size :]
        candidate = np.tanh(gi[:, split:] + reset * gh[:, split:])
        return (1 - update) * candidate + update * h


class NeuralG2P:
    """Letters in, ARPAbet phones out (may include g2p_en's bare "UW" and "<unk>")."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.enc_emb = weights["enc_emb"]
        self.dec_emb = weights["dec_emb"]
        self.encoder = _GRU(*(weights[f"enc_{k}"] for k in ("w_ih", "w_hh", "b_ih", "b_hh")))
        self.decoder = _GRU(*(weights[f"dec_{k}"] for k in ("w_ih", "w_hh", "b_ih", "b_hh")))
        self.fc_w_t = np.ascontiguousarray(weights["fc_w"].T)
        self.fc_b = weights["fc_b"]

    @classmethod
    def from_g2p_en(cls) -> NeuralG2P:
        """Load the checkpoint bundled with the installed g2p_en wheel."""
        with np.load(g2p_en_data("checkpoint20.npz")) as archive:
            return cls({key: archive[key] for key in archive.files})

    def predict(self, word: str) -> list[str]:
        """Greedy decoding; characters outside a-z count as the unknown letter."""
        ids = [_LETTER_IDS.get(ch, UNKNOWN_LETTER) for ch in word] + [END_OF_WORD]
        h = np.zeros((1, self.encoder.size), np.float32)
        for i in ids:
            h = self.encoder.step(self.enc_emb[i : i + 1], h)
        phones: list[str] = []
        token = START
        for _ in range(MAX_PHONES):
            h = self.decoder.step(self.dec_emb[token : token + 1], h)
            token = int((h @ self.fc_w_t + self.fc_b).argmax())
            if token == END:
                break
            phones.append(PHONEMES[token])
        return phones


@cache
def neural_model() -> NeuralG2P:
    """The shared model, loaded on first use."""
    return NeuralG2P.from_g2p_en()


@lru_cache(maxsize=4096)
def _predict_cached(word: str) -> tuple[str, ...]:
    return tuple(neural_model().predict(word))


def predict_word(word: str) -> list[str]:
    """Phones the neural model gives `word` (lower-case); repeated words are cached."""
    return list(_predict_cached(word))
