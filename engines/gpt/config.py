"""Hyper-parameters of the GPT stage (text -> semantic tokens), v1 and v2."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Phoneme table sizes of the two supported releases; everything else is shared.
_PHONEME_VOCAB = {"v1": 512, "v2": 732}

# The reference computes its length cap as `max_sec * 50` even though semantic
# tokens run at 25 per second; keeping the same factor keeps the same cap.
_EARLY_STOP_TOKENS_PER_SEC = 50


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a Text2Semantic decoder; defaults are the released v2 model."""

    phoneme_vocab_size: int = 732
    vocab_size: int = 1025
    eos_id: int = 1024
    hidden_dim: int = 512
    num_heads: int = 16
    num_layers: int = 24
    ffn_dim: int = 2048
    bert_dim: int = 1024
    max_positions: int = 4000
    layer_norm_eps: float = 1e-5
    max_sec: int = 54

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim {self.hidden_dim} is not a multiple of num_heads {self.num_heads}"
            )
        # The sampler drops EOS by slicing off the last logit column.
        if self.eos_id != self.vocab_size - 1:
            raise ValueError(f"eos_id must be vocab_size - 1, got {self.eos_id}/{self.vocab_size}")
        for name in ("phoneme_vocab_size", "num_layers", "ffn_dim", "bert_dim", "max_positions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def early_stop_num(self) -> int:
        """Length cap the reference apps pass as `early_stop_num` (50 * max_sec)."""
        return _EARLY_STOP_TOKENS_PER_SEC * self.max_sec

    @classmethod
    def for_version(cls, version: str) -> GPTConfig:
        """Config of a stock release ("v1" or "v2")."""
        try:
            return cls(phoneme_vocab_size=_PHONEME_VOCAB[version])
        except KeyError:
            raise ValueError(
                f"unknown GPT version {version!r}; expected one of {sorted(_PHONEME_VOCAB)}"
            ) from None

    def to_official(self) -> dict[str, Any]:
        """The training-config dict an official `.ckpt` carries (for files we write)."""
        return {
            "model": {
                "vocab_size": self.vocab_size,
                "phoneme_vocab_size": self.phoneme_vocab_size,
                "embedding_dim": self.hidden_dim,
                "hidden_dim": self.hidden_dim,
                "head": self.num_heads,
                "linear_units": self.ffn_dim,
                "n_layer": self.num_layers,
                "dropout": 0,
                "EOS": self.eos_id,
                "random_bert": 0,
            },
            "data": {"max_sec": self.max_sec},
        }

    @classmethod
    def from_official(cls, config: Mapping[str, Any]) -> GPTConfig:
        """Read the training config dict stored under `config` in an official `.ckpt`."""
        try:
            model = config["model"]
            hidden = int(model["hidden_dim"])
            embedding = int(model["embedding_dim"])
            kwargs = {
                "phoneme_vocab_size": int(model["phoneme_vocab_size"]),
                "vocab_size": int(model["vocab_size"]),
                "eos_id": int(model["EOS"]),
                "hidden_dim": hidden,
                "num_heads": int(model["head"]),
                "num_layers": int(model["n_layer"]),
            }
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an official GPT config: missing {exc}") from exc
        if embedding != hidden:
            # The reference feeds embedding_dim-wide inputs to hidden_dim-wide layers.
            raise ValueError(f"embedding_dim {embedding} != hidden_dim {hidden} is unsupported")
        data = config.get("data") or {}
        return cls(
            **kwargs,
            # The reference sizes its FFN as 4 * hidden_dim and ignores `linear_units`.
            ffn_dim=4 * hidden,
            max_sec=int(data.get("max_sec", cls.max_sec)),
        )
