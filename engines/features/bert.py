"""Per-phone BERT features for Mandarin text (chinese-roberta-wwm-ext-large).

The GPT stage conditions on a 1024-d vector per phone: the BERT hidden state of
the character the phone came from, taken from the third-to-last hidden state
(the output of layer 22 of 24) and repeated word2ph[i] times. Text in any other
language gets zeros of the same shape.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .bert_model import BertEncoder, BertWeightsError, load_encoder
from .bert_tokenizer import BertTokenizer, BertTokenizerError
from .errors import TextFeatureError
from .model_folders import ModelSpec, check_folder

log = logging.getLogger(__name__)

BERT_SPEC = ModelSpec(
    role="BERT text features",
    official_name="hfl/chinese-roberta-wwm-ext-large",
    model_type="bert",
)
#: Either file is enough to build the WordPiece tokenizer.
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "vocab.txt")
#: The reference takes hidden_states[-3]: the embeddings count as state 0.
LAYERS_DROPPED_AFTER_FEATURE = 2


class BertFeaturizer:
    """Mandarin text -> [hidden, n_phones] features, as the GPT stage expects them."""

    def __init__(self, model: BertEncoder, tokenizer: BertTokenizer, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.hidden_size: int = model.shape.hidden_size
        self.max_tokens: int = model.shape.max_positions

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu") -> BertFeaturizer:
        """Load model and tokenizer from a local folder; never touches the network.

        The real folder holds a BertForMaskedLM checkpoint: the encoder takes
        its "bert." weights and ignores the masked-LM head.  The layers after
        the one whose output is used are not built at all: they cannot change
        that output, and leaving them out saves time and memory on a kiosk.
        """
        folder = check_folder(path, BERT_SPEC, extra=[TOKENIZER_FILES])
        try:
            model = load_encoder(folder, drop_last=LAYERS_DROPPED_AFTER_FEATURE)
        except BertWeightsError as exc:
            raise BERT_SPEC.error(folder, str(exc)) from exc
        except Exception as exc:  # a damaged weights file raises many kinds
            raise BERT_SPEC.error(
                folder, f"could not be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            tokenizer = BertTokenizer.from_folder(folder)
        except BertTokenizerError as exc:
            raise BERT_SPEC.error(folder, f"tokenizer could not be loaded ({exc})") from exc
        if len(tokenizer) > model.shape.vocab_size:
            raise BERT_SPEC.error(
                folder,
                f"tokenizer has {len(tokenizer)} tokens but the model only "
                f"{model.shape.vocab_size}: tokenizer and weights do not belong together",
            )
        dev = torch.device(device)
        return cls(model.to(dev), tokenizer, dev)

    # ------------------------------------------------------------------ public
    def zeros(self, n_phones: int) -> Tensor:
        """The features of non-Mandarin text: zeros [hidden, n_phones]."""
        return torch.zeros(self.hidden_size, n_phones, dtype=torch.float32, device=self.device)

    def features_for(
        self, language: str, norm_text: str, word2ph: Sequence[int] | None, n_phones: int
    ) -> Tensor:
        """Features of one text segment in `language` (reference labels: zh, all_zh, en, ...).

        Only Mandarin gets BERT, like the reference; every other language
        (Cantonese included) gets zeros.
        """
        if language.replace("all_", "") != "zh":
            return self.zeros(n_phones)
        if word2ph is None:
            raise TextFeatureError("Mandarin text needs word2ph to place BERT features on phones")
        feats = self.features(norm_text, word2ph)
        if feats.shape[1] != n_phones:
            raise TextFeatureError(
                f"word2ph adds up to {feats.shape[1]} phones but the segment has {n_phones}"
            )
        return feats

    def features(self, norm_text: str, word2ph: Sequence[int], *, strict: bool = False) -> Tensor:
        """Per-phone features [hidden, sum(word2ph)] (float32) of normalised Mandarin text.

        The tokenizer normally gives one token per character (a character missing
        from the vocabulary becomes one [UNK], which still counts), and then the
        i-th token belongs to the i-th character, exactly as in the reference.
        If the counts differ (e.g. a Latin word becomes one WordPiece token, or a
        space yields none) the reference would fail or misalign; here each
        character takes the token whose character span covers it, a character
        with no token takes zeros, and a warning is logged. `strict=True` raises
        TextFeatureError instead.
        """
        counts = _check_word2ph(norm_text, word2ph)
        if not norm_text:
            return self.zeros(0)
        encoded = self.tokenizer.encode(norm_text)
        n_tokens = len(encoded.ids)
        if n_tokens > self.max_tokens:
            raise TextFeatureError(
                f"text gives {n_tokens} BERT tokens, more than the model's {self.max_tokens}; "
                "split it into shorter segments (the reference splits at 510 characters)"
            )
        with torch.no_grad():
            ids = torch.tensor([encoded.ids], dtype=torch.long, device=self.device)
            states = self.model(ids)[0, 1:-1]  # drop [CLS], [SEP]
        if states.shape[0] == len(norm_text):
            per_char = states
        else:
            per_char = self._align_by_offsets(norm_text, encoded.offsets[1:-1], states, strict)
        repeats = torch.tensor(counts, dtype=torch.long, device=per_char.device)
        return per_char.repeat_interleave(repeats, dim=0).T.contiguous()

    # ------------------------------------------------------------------ internals
    def _align_by_offsets(
        self, text: str, offsets: Sequence[tuple[int, int]], states: Tensor, strict: bool
    ) -> Tensor:
        """One state per character when tokens and characters do not pair up one to one."""
        problem = f"{len(text)} characters gave {states.shape[0]} BERT tokens in {text!r}"
        if strict:
            raise TextFeatureError(problem)
        owner = token_owner_per_char(len(text), offsets)
        uncovered = [text[i] for i, tok in enumerate(owner) if tok is None]
        log.warning(
            "%s; characters take the token that covers them%s",
            problem,
            f", zeros for {uncovered!r}" if uncovered else "",
        )
        per_char = states.new_zeros(len(text), states.shape[1])
        for i, tok in enumerate(owner):
            if tok is not None:
                per_char[i] = states[tok]
        return per_char


def token_owner_per_char(n_chars: int, offsets: Sequence[tuple[int, int]]) -> list[int | None]:
    """For each character, the index of the first token whose span covers it (or None)."""
    owner: list[int | None] = [None] * n_chars
    for tok, (start, end) in enumerate(offsets):
        for i in range(max(start, 0), min(end, n_chars)):
            if owner[i] is None:
                owner[i] = tok
    return owner


def _check_word2ph(norm_text: str, word2ph: Sequence[int]) -> list[int]:
    """word2ph must give a non-negative phone count for every character."""
    try:
        counts = [operator.index(n) for n in word2ph]
    except TypeError as exc:
        raise TextFeatureError(f"word2ph must hold integers ({exc})") from exc
    if len(counts) != len(norm_text):
        raise TextFeatureError(
            f"word2ph has {len(counts)} entries but the text has {len(norm_text)} characters"
        )
    if any(n < 0 for n in counts):
        raise TextFeatureError("word2ph entries must not be negative")
    return counts


__all__ = ["BERT_SPEC", "BertFeaturizer", "token_owner_per_char"]
