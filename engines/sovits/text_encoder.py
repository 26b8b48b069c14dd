"""Prior encoder ("enc_p"): semantic frames + phones + timbre -> prior mean / log-std.

Content frames and phones are encoded separately, fused by the multi-reference
timbre encoder (MRTE: content frames attend to phones, timbre vector added),
refined, optionally time-stretched for speed, then projected to the 2 x 192
statistics of the prior.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SoVITSConfig
from .relative_attention import MultiHeadAttention, RelativeTransformer


class MRTE(nn.Module):
    """Cross-attention from content frames (queries) to phones (keys/values), plus timbre."""

    def __init__(self, content_channels: int, hidden: int, n_heads: int) -> None:
        super().__init__()
        self.cross_attention = MultiHeadAttention(hidden, n_heads)
        self.c_pre = nn.Conv1d(content_channels, hidden, 1)
        self.text_pre = nn.Conv1d(content_channels, hidden, 1)
        self.c_post = nn.Conv1d(hidden, content_channels, 1)

    def forward(self, content: Tensor, phones: Tensor, ge_text: Tensor) -> Tensor:
        """content [B,192,T], phones [B,192,N], ge_text [B,512,1] -> [B,192,T]."""
        query = self.c_pre(content)
        keys = self.text_pre(phones)
        fused = self.cross_attention(query, keys) + query + ge_text
        return self.c_post(fused)


def stretch_frames(x: Tensor, speed: float) -> Tensor:
    """Linear resampling of [B, C, T] to int(T / speed) + 1 frames (the reference's rule).

    The +1 means even speed 1.25 on 100 frames gives 81, not 80; speed exactly 1
    is left untouched.
    """
    if speed == 1:
        return x
    return F.interpolate(x, size=torch.sym_int(x.shape[-1] / speed) + 1, mode="linear")


class TextEncoder(nn.Module):
    """The `enc_p` module; parameter names follow the official checkpoints."""

    def __init__(self, cfg: SoVITSConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_channels
        half_depth = cfg.n_layers // 2

        def stack(depth: int) -> RelativeTransformer:
            return RelativeTransformer(
                hidden,
                cfg.filter_channels,
                cfg.n_heads,
                depth,
                cfg.kernel_size,
                cfg.window_size,
            )

        self.out_channels = cfg.inter_channels
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, hidden, 1)
        self.encoder_ssl = stack(half_depth)
        self.encoder_text = stack(cfg.n_layers)
        self.text_embedding = nn.Embedding(cfg.n_symbols, hidden)
        self.mrte = MRTE(hidden, cfg.mrte_channels, cfg.mrte_heads)
        self.encoder2 = stack(half_depth)
        self.proj = nn.Conv1d(hidden, 2 * cfg.inter_channels, 1)

    def hidden(self, content: Tensor, text_ids: Tensor, ge_text: Tensor) -> Tensor:
        """The encoder's frames `[B,192,T50]` before the speed stretch and `proj`.

        `proj` works frame by frame, so a streaming decoder can cut this into
        windows and project each window on its own.
        """
        x = self.encoder_ssl(self.ssl_proj(content))
        phones = self.encoder_text(self.text_embedding(text_ids).transpose(1, 2))
        return self.encoder2(self.mrte(x, phones, ge_text))

    def forward(
        self, content: Tensor, text_ids: Tensor, ge_text: Tensor, speed: float = 1.0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """content [B,768,T50], text_ids [B,N], ge_text [B,512,1] -> (m, logs, frame_mask).

        `frame_mask` is all ones ([B,1,T'] after the speed stretch): every frame of
        a single utterance is valid. It is returned because the flow and the
        reference's interfaces carry it.
        """
        x = stretch_frames(self.hidden(content, text_ids, ge_text), speed)
        m, logs = torch.split(self.proj(x), self.out_channels, dim=1)
        frame_mask = torch.ones_like(x[:, :1, :])
        return m, logs, frame_mask
