"""BERT's WordPiece tokenizer from a model folder, on the `tokenizers` library alone.

The reference tokenizes with transformers' `BertTokenizerFast`, which is the
`tokenizers` library underneath.  Building the same tokenizer here directly
(from `tokenizer.json`, or from `vocab.txt` with the settings of
`tokenizer_config.json`) gives the same ids and character offsets without
importing transformers at boot.  The defaults are BertTokenizerFast's:
lower-case, split Chinese characters, accents as the lower-casing implies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, normalizers, processors
from tokenizers.implementations import BertWordPieceTokenizer

CLS, SEP, UNK = "[CLS]", "[SEP]", "[UNK]"


class BertTokenizerError(ValueError):
    """The folder's tokenizer files cannot make BERT's tokenizer (the message says why)."""


@dataclass(frozen=True)
class Encoded:
    """One sentence as BERT reads it: [CLS] tokens [SEP]."""

    ids: list[int]
    """Token ids, [CLS] first and [SEP] last."""

    offsets: list[tuple[int, int]]
    """Each token's character span in the text ((0, 0) for [CLS] and [SEP])."""


class BertTokenizer:
    """Text -> `Encoded`, with the reference's settings."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        unk = tokenizer.token_to_id(UNK)
        self.unk_id: int | None = unk

    @classmethod
    def from_folder(cls, folder: Path) -> BertTokenizer:
        """From `tokenizer.json` when present, else `vocab.txt`; never touches the network."""
        settings = _settings(folder)
        try:
            if (folder / "tokenizer.json").is_file():
                tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
                _apply_settings(tokenizer, settings)
            else:
                tokenizer = BertWordPieceTokenizer(
                    str(folder / "vocab.txt"),
                    lowercase=settings["lowercase"],
                    strip_accents=settings["strip_accents"],
                    handle_chinese_chars=settings["handle_chinese_chars"],
                )._tokenizer
        except Exception as exc:  # the library raises plain Exceptions for bad files
            raise BertTokenizerError(f"{type(exc).__name__}: {exc}") from exc
        if tokenizer.post_processor is None:  # a bare tokenizer.json: add [CLS]/[SEP] ourselves
            ids = {t: tokenizer.token_to_id(t) for t in (CLS, SEP)}
            if None in ids.values():
                raise BertTokenizerError("the vocabulary has no [CLS] or [SEP] token")
            tokenizer.post_processor = processors.BertProcessing((SEP, ids[SEP]), (CLS, ids[CLS]))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(tokenizer)

    def __len__(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> Encoded:
        encoding = self._tokenizer.encode(text)
        return Encoded(list(encoding.ids), [tuple(o) for o in encoding.offsets])  # type: ignore[misc]


def _settings(folder: Path) -> dict[str, bool | None]:
    """BertTokenizerFast's normaliser settings, as tokenizer_config.json overrides them."""
    config: dict[str, object] = {}
    path = folder / "tokenizer_config.json"
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BertTokenizerError(f"tokenizer_config.json is not readable JSON ({exc})") from exc
        if isinstance(loaded, dict):
            config = loaded
    strip = config.get("strip_accents")
    return {
        "lowercase": bool(config.get("do_lower_case", True)),
        "strip_accents": None if strip is None else bool(strip),
        "handle_chinese_chars": bool(config.get("tokenize_chinese_chars", True)),
    }


def _apply_settings(tokenizer: Tokenizer, settings: dict[str, bool | None]) -> None:
    """Rebuild a BERT normaliser whose settings differ from the config's, as transformers does."""
    normalizer = tokenizer.normalizer
    if not isinstance(normalizer, normalizers.BertNormalizer):
        return
    state = json.loads(normalizer.__getstate__())
    current = {
        "lowercase": state.get("lowercase", settings["lowercase"]),
        "strip_accents": state.get("strip_accents", settings["strip_accents"]),
        "handle_chinese_chars": state.get("handle_chinese_chars", settings["handle_chinese_chars"]),
    }
    if current != settings:
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=bool(state.get("clean_text", True)),
            handle_chinese_chars=bool(settings["handle_chinese_chars"]),
            strip_accents=settings["strip_accents"],
            lowercase=bool(settings["lowercase"]),
        )


__all__ = ["BertTokenizer", "BertTokenizerError", "Encoded"]
