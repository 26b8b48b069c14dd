"""Static key/value cache for the GPT decoder, sized in length buckets.

A decode step sees tensors of a fixed shape at a fixed address while it stays
inside one bucket: what ONNX/TensorRT export and CUDA-graph capture need.
Writes go through `index_copy_` with an index tensor, never through Python
slicing on a data value.

Why buckets: the decoding loop asks for room for the 1 500-token cap, but most
phrases stop after a few dozen tokens.  Attention over an allocated-but-empty
cache costs as much as over a full one (full-size v2 GPT, 50 tokens after a
125-position prefix, 2 cores: a cache allocated for 1 500 instead of 100 new
tokens made eager torch 32 % and ONNX Runtime 41 % slower per token), so
runtimes start at the smallest bucket that holds the prefix and grow by
copying into the next one when a step reaches its end (`bucket_length`,
`KVCache.grown`); eager torch attends only over the filled slots (`filled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .config import GPTConfig

#: Cache capacities a growing cache steps through (text + prompt + generated
#: positions); past the last one it grows in steps of `BUCKET_STEP`.
CACHE_BUCKETS: tuple[int, ...] = (128, 256, 512, 1024, 1536)
BUCKET_STEP = 512


def bucket_length(
    needed: int, limit: int | None = None, buckets: Sequence[int] = CACHE_BUCKETS
) -> int:
    """Smallest bucket holding `needed` positions, at most `limit` (the session's cap).

    Past the last bucket, the next multiple of `BUCKET_STEP`.  A `limit` below the
    bucket is returned as is: no session ever needs more than its cap.
    """
    if needed < 1:
        raise ValueError(f"needed must be >= 1, got {needed}")
    if limit is not None and needed > limit:
        raise ValueError(f"{needed} positions exceed the session's {limit}")
    size = next((b for b in sorted(buckets) if b >= needed), None)
    if size is None:
        size = -(-needed // BUCKET_STEP) * BUCKET_STEP
    return size if limit is None else min(size, limit)


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

    def filled(self, length: int) -> KVCache:
        """Views of the first `length` slots (writes land in this cache).

        Eager attention over these views touches only the filled part; the
        layer slices stay strided views, which matmul reads without a copy.
        """
        if not 1 <= length <= self.max_len:
            raise ValueError(f"length {length} outside the cache (max_len {self.max_len})")
        return KVCache(self.keys[:, :, :, :length], self.values[:, :, :, :length])

    def grown(self, max_len: int, filled: int) -> KVCache:
        """A larger zero-filled cache holding a copy of this one's first `filled` slots."""
        if max_len < self.max_len or not 0 <= filled <= self.max_len:
            raise ValueError(f"cannot grow {self.max_len} slots to {max_len} keeping {filled}")
        shape = (*self.keys.shape[:3], max_len, self.keys.shape[4])
        bigger = KVCache(keys=self.keys.new_zeros(shape), values=self.values.new_zeros(shape))
        bigger.keys[:, :, :, :filled].copy_(self.keys[:, :, :, :filled])
        bigger.values[:, :, :, :filled].copy_(self.values[:, :, :, :filled])
        return bigger
