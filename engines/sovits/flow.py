"""Normalising flow between the prior latent and the decoder latent (inference = reverse).

Four mean-only affine couplings, each followed by a channel flip. Mean-only
means the log-scale is zero, so the reverse pass is a plain subtraction; the
shift comes from a gated WaveNet conditioned on the timbre vector.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import SoVITSConfig
from .weight_norm import WeightNormConv1d


class GatedWaveNet(nn.Module):
    """Non-causal WaveNet: dilated convs, tanh*sigmoid gates, residual + skip paths."""

    def __init__(
        self, channels: int, kernel_size: int, dilation_rate: int, n_layers: int, gin: int
    ) -> None:
        super().__init__()
        self.channels = channels
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            self.in_layers.append(
                WeightNormConv1d(
                    channels,
                    2 * channels,
                    kernel_size,
                    dilation=dilation,
                    padding=dilation * (kernel_size - 1) // 2,
                )
            )
            # The last layer has no residual output, only the skip half.
            width = 2 * channels if i < n_layers - 1 else channels
            self.res_skip_layers.append(WeightNormConv1d(channels, width, 1))
        self.cond_layer = WeightNormConv1d(gin, 2 * channels * n_layers, 1)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        c = self.channels
        cond = self.cond_layer(g)
        last = len(self.in_layers) - 1
        skip = torch.zeros_like(x)
        for i, (in_layer, res_skip) in enumerate(
            zip(self.in_layers, self.res_skip_layers, strict=True)
        ):
            pre = in_layer(x) + cond[:, 2 * c * i : 2 * c * (i + 1), :]
            gated = torch.tanh(pre[:, :c]) * torch.sigmoid(pre[:, c:])
            out = res_skip(gated)
            if i < last:
                x = x + out[:, :c]
                skip = skip + out[:, c:]
            else:
                skip = skip + out
        return skip


class MeanOnlyCoupling(nn.Module):
    """Shifts the second half of the channels by a function of the first half."""

    def __init__(self, channels: int, hidden: int, cfg: SoVITSConfig) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = GatedWaveNet(
            hidden,
            cfg.flow_kernel_size,
            cfg.flow_dilation_rate,
            cfg.flow_wn_layers,
            cfg.gin_channels,
        )
        self.post = nn.Conv1d(hidden, self.half, 1)

    def shift(self, x0: Tensor, g: Tensor) -> Tensor:
        return self.post(self.enc(self.pre(x0), g))

    def reverse(self, x: Tensor, g: Tensor) -> Tensor:
        x0, x1 = torch.split(x, [self.half, self.half], dim=1)
        return torch.cat([x0, x1 - self.shift(x0, g)], dim=1)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        x0, x1 = torch.split(x, [self.half, self.half], dim=1)
        return torch.cat([x0, x1 + self.shift(x0, g)], dim=1)


class CouplingFlow(nn.Module):
    """The `flow` module. Couplings live at the even slots `flows.0/2/4/6`: the
    official list interleaves parameter-free flips at the odd slots."""

    def __init__(self, cfg: SoVITSConfig) -> None:
        super().__init__()
        self.flows = nn.ModuleDict(
            {
                str(2 * i): MeanOnlyCoupling(cfg.inter_channels, cfg.hidden_channels, cfg)
                for i in range(cfg.n_flows)
            }
        )

    def reverse(self, z_p: Tensor, g: Tensor) -> Tensor:
        """Prior latent -> decoder latent: undo (coupling, flip) pairs, last pair first."""
        x = z_p
        for coupling in reversed(list(self.flows.values())):
            x = coupling.reverse(torch.flip(x, dims=[1]), g)
        return x

    def forward(self, z: Tensor, g: Tensor) -> Tensor:
        """Decoder latent -> prior latent (the training direction; for completeness)."""
        x = z
        for coupling in self.flows.values():
            x = torch.flip(coupling(x, g), dims=[1])
        return x
