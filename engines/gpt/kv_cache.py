"""Static key/value cache for the GPT decoder.

Allocated once per utterance at its final size, so a decode step always sees
tensors of the same shape at the same address: what ONNX/TensorRT export and
CUDA-graph capture need.  Writes go through `index_copy_` with an index
tensor, never through Python slicing on a data value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import GPTConfig


@dataclass
class KVCache:
    """Per-layer keys and values, laid out `[layers, batch, heads, max_len, head_dim]`.

    Slots at or beyond the current length hold stale data; the attention bias
    built by the model hides them, so the cache never needs clearing.
    """

    keys: torch.Tensor
    values: torch.Tensor

    @classmethod
    def allocate(
        cls,
        config: GPTConfig,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """Zero-filled cache able to hold `max_len` positions (text + audio)."""
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
        shape = (config.num_layers, batch_size, config.num_heads, max_len, config.head_dim)
        return cls(
            keys=torch.zeros(shape, dtype=dtype, device=device),
            values=torch.zeros(shape, dtype=dtype, device=device),
        )

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views `[batch, heads, max_len, head_dim]` of one layer; writes land in the cache."""
        return self.keys[index], self.values[index]
