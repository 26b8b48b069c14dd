"""Transformer blocks of the prior encoder: channel-first self-attention with
windowed relative positions, post-LayerNorm, convolutional feed-forward.

All tensors are [batch, channels, time]. The synthesizer only ever runs one
utterance at full length, so no padding masks are needed; leaving them out
keeps the exported graphs free of mask plumbing (multiplying by an all-ones
mask is exact, so results are unchanged).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a [B, C, T] tensor (keys `gamma`, `beta`)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.transpose(1, -1), (x.shape[1],), self.gamma, self.beta, self.eps)
        return y.transpose(1, -1)


def relative_band(length: int, window: int, like: Tensor) -> Tensor:
    """One-hot [L, L, 2w+1]: entry (i, j, r) is 1 where key j sits at offset r-w from query i.

    Pairs further apart than `window` have no entry, which is the same as the
    reference's zero-padded relative table: they get no positional term.
    """
    pos = torch.arange(length, device=like.device)
    offsets = pos.unsqueeze(0) - pos.unsqueeze(1)  # [i, j] -> j - i
    slots = torch.arange(-window, window + 1, device=like.device)
    return (offsets.unsqueeze(-1) == slots).to(like.dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with 1x1-conv projections.

    With `window_size` set, learned relative-position embeddings (shared by all
    heads) are added on the key side (to the logits) and on the value side (to
    the output), for offsets in [-window, window].
    """

    def __init__(self, channels: int, n_heads: int, window_size: int | None = None) -> None:
        super().__init__()
        if channels % n_heads:
            raise ValueError("channels must be divisible by n_heads")
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window_size = window_size
        if window_size is not None:
            table = (1, 2 * window_size + 1, self.head_dim)
            self.emb_rel_k = nn.Parameter(torch.randn(table) * self.head_dim**-0.5)
            self.emb_rel_v = nn.Parameter(torch.randn(table) * self.head_dim**-0.5)
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, C, T] -> [B, H, T, C/H]."""
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """Queries from `x` [B, C, Tq], keys/values from `context` [B, C, Tk]."""
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_dim)
        k = self._heads(self.conv_k(context))
        v = self._heads(self.conv_v(context))
        logits = torch.matmul(q, k.transpose(-2, -1))
        band = None
        if self.window_size is not None:
            band = relative_band(q.shape[2], self.window_size, q)
            rel_logits = torch.matmul(q, self.emb_rel_k.transpose(-2, -1).unsqueeze(0))
            logits = logits + torch.einsum("bhir,ijr->bhij", rel_logits, band)
        weights = torch.softmax(logits, dim=-1)
        out = torch.matmul(weights, v)
        if band is not None:
            rel_weights = torch.einsum("bhij,ijr->bhir", weights, band)
            out = out + torch.matmul(rel_weights, self.emb_rel_v.unsqueeze(0))
        b, h, t, d = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(b, h * d, t))


class FeedForward(nn.Module):
    """Conv(k) -> ReLU -> Conv(k), 'same' padding along time (keys `conv_1`, `conv_2`)."""

    def __init__(self, channels: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("only odd kernel sizes give symmetric 'same' padding")
        self.conv_1 = nn.Conv1d(channels, hidden, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(hidden, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_2(torch.relu(self.conv_1(x)))


class RelativeTransformer(nn.Module):
    """Stack of post-LN layers: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(
        self,
        channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        window_size: int,
    ) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(
            MultiHeadAttention(channels, n_heads, window_size) for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FeedForward(channels, filter_channels, kernel_size) for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: Tensor) -> Tensor:
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2, strict=True
        ):
            x = norm1(x + attn(x, x))
            x = norm2(x + ffn(x))
        return x
