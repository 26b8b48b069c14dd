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
    with WavStreamWriter(path, sample_rate) as out:
        out.write(audio)
    return Path(path)


class WavStreamWriter:
    """Append audio to a 16-bit WAV as it is produced; the file appears only when closed."""

    def __init__(self, path: str | Path, sample_rate: int = SAMPLE_RATE) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.part")
        self._out = wave.open(str(self._tmp), "wb")  # noqa: SIM115 - closed in close()
        self._out.setnchannels(1)
        self._out.setsampwidth(2)
        self._out.setframerate(sample_rate)
        self.samples = 0

    def write(self, audio: np.ndarray) -> None:
        self._out.writeframes(float_to_pcm16(audio).tobytes())
        self.samples += int(np.asarray(audio).size)

    def close(self, keep: bool = True) -> None:
        self._out.close()
        if keep:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> WavStreamWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(keep=exc_type is None)


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
