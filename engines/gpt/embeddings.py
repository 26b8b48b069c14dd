"""Token tables and the scaled sinusoidal position term of the GPT stage.

Module and parameter names follow the official checkpoint layout
(`word_embeddings.weight`, `alpha`) so weights load without renaming.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """`[num_positions, dim]` table: sin on even columns, cos on odd ones.

    Built in float32 with the same operation order as the reference so the
    table (and hence every golden) matches bit for bit.
    """
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    angles = position * inv_freq
    table = torch.zeros(num_positions, dim, dtype=torch.float32)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


class TokenTable(nn.Module):
    """Plain lookup table; the wrapper exists only for the `word_embeddings` key."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(num_tokens, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(ids)


class ScaledSinusoid(nn.Module):
    """Adds `alpha * table[position]` with one learned scalar `alpha` per stream.

    The table is a non-persistent buffer: it is not in official checkpoints and
    is cheaper to rebuild than to store.
    """

    def __init__(self, dim: int, num_positions: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.register_buffer("table", sinusoid_table(num_positions, dim), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`x` is `[B, T, D]`, `positions` a `[T]` integer tensor shared by the batch."""
        pe = self.table.index_select(0, positions).to(x.dtype)
        return x + self.alpha * pe
