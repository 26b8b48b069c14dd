"""The GPT stage: phones + BERT features + prompt semantic tokens -> next-token logits.

The module only holds the per-call computations (`prefill`, `decode_step`);
the token loop and sampling live outside (`decoding.py`, `sampling.py`) so
each computation can be exported or captured as a graph on its own.
None of the forward methods branches on tensor values.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .config import GPTConfig
from .embeddings import ScaledSinusoid, TokenTable
from .kv_cache import KVCache
from .layers import DecoderLayer, LayerStack

# Official `.ckpt` files store the decoder inside a Lightning module.
OFFICIAL_PREFIX = "model."

_HIDDEN = float("-inf")


def prefill_bias(num_text: int, total: int, num_slots: int, device: torch.device) -> torch.Tensor:
    """Additive bias `[total, num_slots]` for the first pass.

    Text rows see every text position and no audio; audio rows see every text
    position and audio positions up to their own.  Slots `>= total` are hidden.
    """
    row = torch.arange(total, device=device).unsqueeze(1)
    col = torch.arange(num_slots, device=device).unsqueeze(0)
    visible = (col < num_text) | ((row >= num_text) & (col <= row))
    return torch.zeros(visible.shape, device=device).masked_fill(~visible, _HIDDEN)


def decode_bias(cache_len: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Additive bias `[1, num_slots]`: the new token sees slots `0..cache_len`."""
    col = torch.arange(num_slots, device=cache_len.device)
    visible = col <= cache_len.reshape(-1)[:1]
    return (
        torch.zeros(visible.shape, device=cache_len.device)
        .masked_fill(~visible, _HIDDEN)
        .unsqueeze(0)
    )


class Text2SemanticModel(nn.Module):
    """Decoder-only transformer over `[phones ; semantic tokens]`.

    State-dict keys equal the official ones without the `model.` prefix.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_dim
        # Registration order follows the official checkpoint's key order.
        self.bert_proj = nn.Linear(config.bert_dim, dim)
        self.ar_text_embedding = TokenTable(config.phoneme_vocab_size, dim)
        self.ar_text_position = ScaledSinusoid(dim, config.max_positions)
        self.ar_audio_embedding = TokenTable(config.vocab_size, dim)
        self.ar_audio_position = ScaledSinusoid(dim, config.max_positions)
        self.h = LayerStack(
            [
                DecoderLayer(dim, config.num_heads, config.ffn_dim, config.layer_norm_eps)
                for _ in range(config.num_layers)
            ]
        )
        self.ar_predict_layer = nn.Linear(dim, config.vocab_size, bias=False)

    # ----------------------------------------------------------------- loading
    def load_official_state_dict(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Load checkpoint weights (with or without the `model.` prefix), cast to our dtype."""
        stripped = {
            (k[len(OFFICIAL_PREFIX) :] if k.startswith(OFFICIAL_PREFIX) else k): v
            for k, v in weights.items()
        }
        dtype = self.ar_predict_layer.weight.dtype
        self.load_state_dict({k: v.to(dtype) for k, v in stripped.items()}, strict=True)

    # -------------------------------------------------------------- embeddings
    def embed_text(self, phone_ids: torch.Tensor, bert: torch.Tensor) -> torch.Tensor:
        """`[B, N]` phone ids and `[B, 1024, N]` BERT features -> `[B, N, D]`."""
        x = self.ar_text_embedding(phone_ids) + self.bert_proj(bert.transpose(1, 2))
        positions = torch.arange(phone_ids.shape[1], device=phone_ids.device)
        return self.ar_text_position(x, positions)

    def embed_audio(
        self, tokens: torch.Tensor, start_position: torch.Tensor | int = 0
    ) -> torch.Tensor:
        """`[B, T]` semantic tokens at audio positions `start_position + (0..T-1)`."""
        offsets = torch.arange(tokens.shape[1], device=tokens.device)
        return self.ar_audio_position(self.ar_audio_embedding(tokens), offsets + start_position)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Raw next-token logits (EOS column included) from the last-layer output."""
        return self.ar_predict_layer(hidden)

    # ----------------------------------------------------------------- passes
    def forward_full(
        self, phone_ids: torch.Tensor, bert: torch.Tensor, audio_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Last-layer output `[B, N + T, D]` of the whole sequence, no cache.

        The reference for what the cached path must reproduce.
        """
        x = torch.cat([self.embed_text(phone_ids, bert), self.embed_audio(audio_tokens)], dim=1)
        total = x.shape[1]
        bias = prefill_bias(phone_ids.shape[1], total, total, x.device)
        for layer in self.h.layers:
            x = layer(x, bias)
        return x

    def prefill_hidden(
        self,
        phone_ids: torch.Tensor,
        bert: torch.Tensor,
        prompt_tokens: torch.Tensor,
        cache: KVCache,
    ) -> torch.Tensor:
        """Run text + prompt, fill cache slots `[0, N + P)`, return the last row `[B, D]`."""
        x = torch.cat([self.embed_text(phone_ids, bert), self.embed_audio(prompt_tokens)], dim=1)
        total = x.shape[1]
        bias = prefill_bias(phone_ids.shape[1], total, cache.max_len, x.device)
        slots = torch.arange(total, device=x.device)
        for i, layer in enumerate(self.h.layers):
            x = layer(x, bias, cache.layer(i), slots)
        return x[:, -1]

    def prefill(
        self,
        phone_ids: torch.Tensor,
        bert: torch.Tensor,
        prompt_tokens: torch.Tensor,
        cache: KVCache,
    ) -> torch.Tensor:
        """Logits `[B, V]` for the first generated token; fills the cache."""
        return self.logits(self.prefill_hidden(phone_ids, bert, prompt_tokens, cache))

    def decode_hidden(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        cache: KVCache,
        cache_len: torch.Tensor,
    ) -> torch.Tensor:
        """One step: `token` `[B, 1]` at audio `position`, stored at slot `cache_len`.

        `position` and `cache_len` are 1-element integer tensors, so a captured
        graph can be replayed by updating them in place.  Returns `[B, D]`.
        """
        x = self.embed_audio(token, position.reshape(-1)[:1])
        bias = decode_bias(cache_len, cache.max_len)
        slot = cache_len.reshape(-1)[:1]
        for i, layer in enumerate(self.h.layers):
            x = layer(x, bias, cache.layer(i), slot)
        return x[:, -1]

    def decode_step(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        cache: KVCache,
        cache_len: torch.Tensor,
    ) -> torch.Tensor:
        """Logits `[B, V]` after appending `token`; see `decode_hidden`."""
        return self.logits(self.decode_hidden(token, position, cache, cache_len))
