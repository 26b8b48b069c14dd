"""Reading a reference clip from a WAV file the way the reference app sees it.

For the prompt tokens the app loads clips with librosa: samples as float32 in
[-1, 1), channels averaged, then soxr "HQ" resampling and a length fix to
ceil(n * ratio). The prompt tokens are sensitive to the resampler (another one
changed ~10 % of the tokens), so the same steps are repeated here without
librosa. (Its spectrogram path resamples differently; see `voice_prompt`.)
The file itself is read by `engines.wav_io.read_wav`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr

from engines.wav_io import WavFileError, read_wav

from .errors import AudioFileError


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """A WAV file as mono float32 at `sample_rate` (soxr HQ), like `librosa.load(path, sr=...)`."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate}")
    mono, native_rate = read_clip(path)
    return resample(mono, native_rate, sample_rate)


def read_clip(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV file as mono float32 (channels averaged) and its native rate.

    Raises AudioFileError (a ReferenceClipError): the only audio read here is a clip.
    """
    try:
        audio, native_rate = read_wav(path)
    except WavFileError as exc:
        raise AudioFileError(str(exc)) from exc
    mono = audio.mean(axis=0, dtype=np.float32) if audio.shape[0] > 1 else audio[0]
    return np.ascontiguousarray(mono), native_rate


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """soxr HQ resampling of mono float32 audio, length fixed to ceil(n * ratio) as librosa does."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if orig_rate == target_rate:
        return audio
    # Same float expression as librosa, so rounding of the length agrees too.
    n_out = int(np.ceil(audio.shape[-1] * (float(target_rate) / orig_rate)))
    out = np.asarray(soxr.resample(audio, orig_rate, target_rate, quality="HQ"), dtype=np.float32)
    if out.shape[0] > n_out:
        out = out[:n_out]
    elif out.shape[0] < n_out:
        out = np.pad(out, (0, n_out - out.shape[0]))
    return out


__all__ = ["AudioFileError", "load_audio", "read_clip", "resample"]
