"""Sample-rate conversion with soxr, done before a clip reaches the player.

The audio callback never resamples: a cached phrase is converted once, when it
is loaded, and a free-text stream chunk by chunk on the synthesis thread
(`StreamResampler`), so the callback only copies samples.
"""

from __future__ import annotations

import numpy as np
import soxr

#: soxr's "high quality" preset: transparent for speech, fast enough for a Pi.
QUALITY = "HQ"


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Mono float32 samples at `to_rate`; the same array when the rates already agree."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample takes mono 1-D samples, got shape {x.shape}")
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate or x.size == 0:
        return x
    return np.ascontiguousarray(soxr.resample(x, from_rate, to_rate, quality=QUALITY), np.float32)


class StreamResampler:
    """Chunk-by-chunk conversion for a stream (the same result as one `resample` call,
    up to soxr's filter delay, which it flushes on `last=True`)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream = (
            None
            if from_rate == to_rate
            else soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32", quality=QUALITY)
        )

    def process(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample one chunk; pass `last=True` with the final one (may be empty)."""
        x = np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1)
        if self._stream is None:
            return x
        return np.ascontiguousarray(self._stream.resample_chunk(x, last=last), np.float32)
