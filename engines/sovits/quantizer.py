"""The semantic-token codebook: 768-d HuBERT frames <-> integer codes.

Only inference is needed: nearest-codeword lookup (extract_latent) and table
lookup (decode). The training statistics (`inited`, `cluster_size`,
`embed_avg`) are kept as buffers only so that checkpoints round-trip with the
official key names `quantizer.vq.layers.<i>._codebook.*`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Codebook(nn.Module):
    """One codebook table plus its (unused at inference) EMA statistics."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed", torch.zeros(size, dim))
        self.register_buffer("embed_avg", torch.zeros(size, dim))

    def nearest(self, frames: Tensor) -> Tensor:
        """[N, D] -> [N] index of the closest codeword (squared Euclidean distance).

        Expanded as |x|^2 - 2 x.e + |e|^2 like the reference, so near-ties resolve
        the same way.
        """
        table = self.embed
        dist = (
            frames.pow(2).sum(1, keepdim=True)
            - 2 * frames @ table.t()
            + table.pow(2).sum(1).unsqueeze(0)
        )
        return torch.argmax(-dist, dim=-1)

    def lookup(self, codes: Tensor) -> Tensor:
        """[...] int codes -> [..., D] codewords."""
        return F.embedding(codes, self.embed)


class _QuantizerLayer(nn.Module):
    """Holds one codebook under the attribute name the checkpoints use."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self._codebook = Codebook(size, dim)


class _LayerStack(nn.Module):
    def __init__(self, n_layers: int, size: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_QuantizerLayer(size, dim) for _ in range(n_layers))


class ResidualQuantizer(nn.Module):
    """Residual VQ: each layer codes what the previous layers left over."""

    def __init__(self, dim: int, size: int, n_layers: int = 1) -> None:
        super().__init__()
        self.vq = _LayerStack(n_layers, size, dim)

    def _codebooks(self) -> list[Codebook]:
        return [layer._codebook for layer in self.vq.layers]

    def encode(self, x: Tensor) -> Tensor:
        """[B, D, T] features -> [n_q, B, T] codes."""
        b, d, t = x.shape
        residual = x.transpose(1, 2).reshape(b * t, d)
        all_codes = []
        for book in self._codebooks():
            codes = book.nearest(residual)
            residual = residual - book.lookup(codes)
            all_codes.append(codes.view(b, t))
        return torch.stack(all_codes)

    def decode(self, codes: Tensor) -> Tensor:
        """[n_q, B, T] codes -> [B, D, T], the sum of the selected codewords."""
        books = self._codebooks()
        total = books[0].lookup(codes[0])
        for i in range(1, codes.shape[0]):
            total = total + books[i].lookup(codes[i])
        return total.transpose(1, 2)
