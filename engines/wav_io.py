"""16-bit PCM WAV files in and out, with the reference's sample conversion.

The reference API engine turns float audio into int16 by `x * 32768` and
truncation; the same rule is used here (with clipping, so a full-scale
sample cannot wrap around into a click).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 32000


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to int16, truncating like the reference, never wrapping."""
    scaled = np.asarray(audio, dtype=np.float32) * 32768.0
    return np.clip(np.trunc(scaled), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio as a 16-bit WAV; the file appears complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(float_to_pcm16(audio).tobytes())
    tmp.replace(path)
    return path


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as float32 `[channels, samples]` in [-1, 1) and its rate."""
    try:
        with wave.open(str(path), "rb") as src:
            if src.getsampwidth() != 2:
                raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
            frames = src.readframes(src.getnframes())
            channels, rate = src.getnchannels(), src.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from exc
    pcm = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).T
    return (pcm.astype(np.float32) / 32768.0), rate
