"""HiFi-GAN vocoder ("dec"): 50 Hz latent frames -> 32 kHz waveform.

Five transposed-conv upsampling stages (x10, x8, x2, x2, x2 = 640 samples per
frame), each followed by the average of three multi-receptive-field residual
blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SoVITSConfig
from .weight_norm import WeightNormConv1d, WeightNormConvTranspose1d

_SLOPE = 0.1  # leaky-ReLU slope inside the generator
_FINAL_SLOPE = 0.01  # the last activation uses torch's default slope


class ResBlock(nn.Module):
    """Three (dilated conv, conv) pairs, each with leaky-ReLU pre-activations and a skip."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            WeightNormConv1d(
                channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2
            )
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            WeightNormConv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
            for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for dilated, plain in zip(self.convs1, self.convs2, strict=True):
            h = dilated(F.leaky_relu(x, _SLOPE))
            x = x + plain(F.leaky_relu(h, _SLOPE))
        return x


class HiFiGANGenerator(nn.Module):
    """The `dec` module, conditioned on the timbre vector through a 1x1 conv."""

    def __init__(self, cfg: SoVITSConfig) -> None:
        super().__init__()
        base = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.inter_channels, base, 7, padding=3)
        self.ups = nn.ModuleList(
            WeightNormConvTranspose1d(
                base // 2**i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2
            )
            for i, (u, k) in enumerate(
                zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)
            )
        )
        self.blocks_per_stage = len(cfg.resblock_kernel_sizes)
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, tuple(d))
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True)
        )
        final_channels = base // 2 ** len(cfg.upsample_rates)
        self.conv_post = nn.Conv1d(final_channels, 1, 7, padding=3, bias=False)
        self.cond = nn.Conv1d(cfg.gin_channels, base, 1)

    def forward(self, z: Tensor, g: Tensor) -> Tensor:
        """z [B,192,T] and g [B,gin,1] -> audio [B,1,T*640] in [-1, 1]."""
        x = self.conv_pre(z) + self.cond(g)
        n = self.blocks_per_stage
        for stage, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, _SLOPE))
            blocks = self.resblocks[stage * n : (stage + 1) * n]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / n
        return torch.tanh(self.conv_post(F.leaky_relu(x, _FINAL_SLOPE)))
