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
from .kv_cache import CACHE_BUCKETS, KVCache, bucket_length
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
    """Eager torch decoding on a `Text2SemanticModel` (the reference runtime).

    The cache starts at the smallest bucket that holds the prefix and grows by
    copying when a step reaches its end; every call attends over the filled
    slots only, so a step costs what the phrase so far needs, whatever the
    session's `max_len` (the loop's 1 500-token cap).
    """

    def __init__(self, model: Text2SemanticModel, max_len: int) -> None:
        weight = model.ar_predict_layer.weight
        self.model = model
        self.max_len = max_len
        self.cache = KVCache.allocate(
            model.config,
            1,
            bucket_length(min(max_len, CACHE_BUCKETS[0]), max_len),
            dtype=weight.dtype,
            device=weight.device,
        )
        self._token = torch.zeros(1, 1, dtype=torch.long, device=weight.device)
        self._position = torch.zeros(1, dtype=torch.long, device=weight.device)
        self._slot = torch.zeros(1, dtype=torch.long, device=weight.device)
        #: Last-layer output of the latest call, for diagnostics.
        self.last_hidden: torch.Tensor | None = None

    def _room_for(self, length: int, filled: int) -> KVCache:
        """The first `length` slots, after growing the cache if it is shorter."""
        if length > self.cache.max_len:
            self.cache = self.cache.grown(bucket_length(length, self.max_len), filled)
        return self.cache.filled(length)

    def prefill(
        self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> torch.Tensor:
        total = phone_ids.shape[1] + prompt_tokens.shape[1]
        cache = self._room_for(total, 0)
        self.last_hidden = self.model.prefill_hidden(phone_ids, bert, prompt_tokens, cache)
        return self.model.logits(self.last_hidden)

    def step(self, token: int, position: int, slot: int) -> torch.Tensor:
        cache = self._room_for(slot + 1, slot)
        self._token.fill_(token)
        self._position.fill_(position)
        self._slot.fill_(slot)
        self.last_hidden = self.model.decode_hidden(self._token, self._position, cache, self._slot)
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
