"""Weight-normalised convolutions that keep the official `weight_g` / `weight_v` keys.

Checkpoints store the weight-norm parametrisation, so the modules hold the two
factors and rebuild the weight on every call; `fold()` bakes the product into a
plain `weight` once loading is done (faster, and simpler graphs for export).
torch's own `weight_norm` helper is deprecated, hence this small re-implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def compose_weight(weight_g: Tensor, weight_v: Tensor) -> Tensor:
    """`v * (g / ||v||)` with the norm over every dim except 0 (torch's dim=0 convention)."""
    dims = tuple(range(1, weight_v.dim()))
    norm = torch.linalg.vector_norm(weight_v, ord=2, dim=dims, keepdim=True)
    return weight_v * (weight_g / norm)


class _WeightNormConvBase(nn.Module):
    """Shared storage: bias first, then g and v, matching the official key order."""

    def __init__(self, weight_shape: tuple[int, ...], out_channels: int, bias: bool) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        gain_shape = (weight_shape[0],) + (1,) * (len(weight_shape) - 1)
        self.weight_g = nn.Parameter(torch.ones(gain_shape))
        self.weight_v = nn.Parameter(torch.empty(weight_shape).normal_(0.0, 0.01))
        self.folded = False

    def effective_weight(self) -> Tensor:
        """The convolution weight actually applied."""
        if self.folded:
            return self.weight
        return compose_weight(self.weight_g, self.weight_v)

    @torch.no_grad()
    def fold(self) -> None:
        """Replace `weight_g`/`weight_v` by one plain `weight` parameter, in place."""
        if self.folded:
            return
        weight = compose_weight(self.weight_g, self.weight_v).detach().clone()
        del self.weight_g
        del self.weight_v
        self.weight = nn.Parameter(weight)
        self.folded = True


class WeightNormConv1d(_WeightNormConvBase):
    """Conv1d (stride 1) whose weight [out, in, k] is weight-normalised per output channel."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__((out_channels, in_channels, kernel_size), out_channels, bias)
        self.dilation = dilation
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(
            x, self.effective_weight(), self.bias, padding=self.padding, dilation=self.dilation
        )


class WeightNormConvTranspose1d(_WeightNormConvBase):
    """ConvTranspose1d; its weight is [in, out, k], so the norm runs per *input* channel.

    That is what the reference gets by applying weight norm with its default dim=0
    to a transposed convolution, and the stored `weight_g` is [in, 1, 1].
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
    ) -> None:
        super().__init__((in_channels, out_channels, kernel_size), out_channels, bias=True)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose1d(
            x, self.effective_weight(), self.bias, stride=self.stride, padding=self.padding
        )


def fold_all(module: nn.Module) -> int:
    """Fold every weight-normalised conv below `module`; returns how many were folded."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, _WeightNormConvBase) and not sub.folded:
            sub.fold()
            count += 1
    return count
