"""The seam between the decoding loop and whatever runs the GPT network.

The loop (`decoding.generate`) owns sampling and the stop rules; a runtime
owns the network and its KV cache.  Torch eager is the reference runtime;
ONNX Runtime, torch-CUDA graphs and TensorRT plug in at the same place by
implementing `GPTRuntime` and `DecoderSession`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .config import GPTConfig
from .kv_cache import KVCache
from .model import Text2SemanticModel


class DecoderSession(Protocol):
    """One utterance's decoder state; it owns the KV cache for `max_len` positions."""

    def prefill(
        self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> torch.Tensor:
        """`[1,N]` phones, `[1,1024,N]` BERT, `[1,P]` prompt -> raw logits `[1, V]`."""
        ...

    def step(self, token: int, position: int, slot: int) -> torch.Tensor:
        """Feed `token` at audio `position`, cached at `slot` -> raw logits `[1, V]`."""
        ...


class GPTRuntime(Protocol):
    """Something that can run the GPT of one voice."""

    config: GPTConfig
    device: torch.device
    dtype: torch.dtype

    def session(self, max_len: int) -> DecoderSession:
        """A fresh decoder state able to hold `max_len` positions (text + audio)."""
        ...


class TorchSession:
    """Eager torch decoding on a `Text2SemanticModel` (the reference runtime)."""

    def __init__(self, model: Text2SemanticModel, max_len: int) -> None:
        weight = model.ar_predict_layer.weight
        self.model = model
        self.cache = KVCache.allocate(
            model.config, 1, max_len, dtype=weight.dtype, device=weight.device
        )
        self._token = torch.zeros(1, 1, dtype=torch.long, device=weight.device)
        self._position = torch.zeros(1, dtype=torch.long, device=weight.device)
        self._slot = torch.zeros(1, dtype=torch.long, device=weight.device)
        #: Last-layer output of the latest call, for diagnostics.
        self.last_hidden: torch.Tensor | None = None

    def prefill(
        self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> torch.Tensor:
        self.last_hidden = self.model.prefill_hidden(phone_ids, bert, prompt_tokens, self.cache)
        return self.model.logits(self.last_hidden)

    def step(self, token: int, position: int, slot: int) -> torch.Tensor:
        self._token.fill_(token)
        self._position.fill_(position)
        self._slot.fill_(slot)
        self.last_hidden = self.model.decode_hidden(
            self._token, self._position, self.cache, self._slot
        )
        return self.model.logits(self.last_hidden)


class TorchRuntime:
    """`GPTRuntime` over an eager `Text2SemanticModel`."""

    def __init__(self, model: Text2SemanticModel) -> None:
        self.model = model
        self.config = model.config
        weight = model.ar_predict_layer.weight
        self.device = weight.device
        self.dtype = weight.dtype

    def session(self, max_len: int) -> TorchSession:
        return TorchSession(self.model, max_len)


def as_runtime(model: Text2SemanticModel | GPTRuntime) -> GPTRuntime:
    """A plain model runs eagerly; anything else already is a runtime."""
    return TorchRuntime(model) if isinstance(model, Text2SemanticModel) else model
