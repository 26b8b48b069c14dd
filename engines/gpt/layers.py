"""One post-LayerNorm transformer layer of the GPT stage, cache-aware.

Parameter names mirror `torch.nn.TransformerEncoderLayer` (`self_attn.in_proj_weight`,
`linear1`, `norm1`, ...) because that is how official checkpoints name them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention with an additive bias (0 = visible, -inf = hidden).

    Softmax runs in float32 whatever the model dtype: in half precision the
    scores lose enough to change the sampled tokens.
    """
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    weights = torch.softmax(scores.float() + bias.float(), dim=-1).to(v.dtype)
    return torch.matmul(weights, v)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        write_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from `x` `[B, T, D]`.

        Without a cache, `x` attends to itself and `bias` is `[T, T]`.  With a
        cache (`[B, H, S, Dh]` views), the new keys/values are written at slots
        `write_index` (`[T]`) and `x` attends over all S slots, `bias` `[T, S]`.
        """
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        if cache is not None:
            cache_k, cache_v = cache
            cache_k.index_copy_(2, write_index, k)
            cache_v.index_copy_(2, write_index, v)
            k, v = cache_k, cache_v
        out = attend(q, k, v, bias)
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DecoderLayer(nn.Module):
    """`x = LN(x + MHA(x)); x = LN(x + FFN(x))` (post-norm, ReLU FFN, no dropout)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        write_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, bias, cache, write_index))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class LayerStack(nn.Module):
    """Holds the layers under `layers.{i}`, the official key path below `h.`."""

    def __init__(self, layers: list[DecoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
