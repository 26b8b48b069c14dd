"""Reference (style) encoder ("ref_enc"): spectrogram frames -> one timbre vector.

Per-frame MLP, two gated temporal convolutions, one self-attention layer, a
projection to `gin` channels, then a mean over time. The mean runs in float32
because the reference repo saw it overflow in float16.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import SoVITSConfig


def mish(x: Tensor) -> Tensor:
    """x * tanh(softplus(x)), spelled out so that exporters need no Mish operator."""
    return x * torch.tanh(nn.functional.softplus(x))


class _Linear(nn.Module):
    """A Linear stored under `.fc`, as the official checkpoints nest it."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class _GatedConv(nn.Module):
    """Conv1d -> GLU with a residual connection; conv stored as `conv1.conv`."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Module()
        self.conv1.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1.conv(x)
        return x + h[:, : self.channels] * torch.sigmoid(h[:, self.channels :])


class _StyleAttention(nn.Module):
    """Self-attention over frames, with residual. Logits are scaled by sqrt(model
    width), not sqrt(head width): a quirk of the reference that must be kept."""

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.w_qs = nn.Linear(width, width)
        self.w_ks = nn.Linear(width, width)
        self.w_vs = nn.Linear(width, width)
        self.fc = nn.Linear(width, width)
        self.temperature = math.sqrt(width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, width = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, self.n_heads, width // self.n_heads).transpose(1, 2)

        q, k, v = heads(self.w_qs(x)), heads(self.w_ks(x)), heads(self.w_vs(x))
        logits = torch.matmul(q, k.transpose(-2, -1)) / self.temperature
        out = torch.matmul(torch.softmax(logits, dim=-1), v)
        return self.fc(out.transpose(1, 2).reshape(b, t, width)) + x


class StyleEncoder(nn.Module):
    """The `ref_enc` module. The MLP layers sit at slots 0 and 3 of the official
    `spectral` Sequential (Mish and Dropout fill the others)."""

    def __init__(self, cfg: SoVITSConfig) -> None:
        super().__init__()
        hidden = cfg.style_hidden
        self.spectral = nn.ModuleDict(
            {"0": _Linear(cfg.ref_bins, hidden), "3": _Linear(hidden, hidden)}
        )
        self.temporal = nn.ModuleList(_GatedConv(hidden, cfg.style_kernel_size) for _ in range(2))
        self.slf_attn = _StyleAttention(hidden, cfg.style_heads)
        self.fc = _Linear(hidden, cfg.gin_channels)

    def forward(self, spec: Tensor) -> Tensor:
        """spec [B, bins, F] -> [B, gin, 1]."""
        x = spec.transpose(1, 2)
        for layer in self.spectral.values():
            x = mish(layer(x))
        x = x.transpose(1, 2)
        for conv in self.temporal:
            x = conv(x)
        x = self.fc(self.slf_attn(x.transpose(1, 2)))
        frames = x.shape[1]
        pooled = (x.float() / frames).sum(dim=1).to(x.dtype)
        return pooled.unsqueeze(-1)
