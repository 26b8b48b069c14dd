"""Linear magnitude spectrogram of the reference clip (the input of the timbre encoder).

Framing must match the reference exactly: the timbre vector is sensitive to it,
and a different window or padding shifts every frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

N_FFT = 2048
HOP_LENGTH = 640
WIN_LENGTH = 2048
_EDGE_PAD = (N_FFT - HOP_LENGTH) // 2  # 704 samples of reflection on each side
_MAGNITUDE_EPS = 1e-8


def reference_spectrogram(wav: Tensor) -> Tensor:
    """[B, N] float32 waveform at 32 kHz -> [B, 1025, frames] magnitude spectrogram.

    Reflect-pads instead of centring, so `frames == (N + 2*704 - 2048) // 640 + 1`,
    and adds 1e-8 under the square root as the reference does (it keeps silent
    bins finite and changes quiet bins measurably).
    """
    padded = F.pad(wav.unsqueeze(1), (_EDGE_PAD, _EDGE_PAD), mode="reflect").squeeze(1)
    window = torch.hann_window(WIN_LENGTH, periodic=True, dtype=wav.dtype, device=wav.device)
    spec = torch.stft(
        padded,
        N_FFT,
        hop_length=HOP_LENGTH,
        win_length=WIN_LENGTH,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    parts = torch.view_as_real(spec)
    return torch.sqrt(parts.pow(2).sum(-1) + _MAGNITUDE_EPS)


def normalise_reference_clip(wav: Tensor) -> Tensor:
    """Mono float32 clip as the reference prepares it before the spectrogram.

    Accepts [N] or [channels, N] (channels averaged). A clip whose peak exceeds 1
    is divided by min(2, peak): loud clips are tamed but never boosted.
    """
    audio = wav.to(torch.float32)
    if audio.dim() == 2:
        audio = audio.mean(dim=0)
    elif audio.dim() != 1:
        raise ValueError(f"expected a [N] or [channels, N] waveform, got shape {tuple(wav.shape)}")
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    if peak > 1.0:
        audio = audio / min(2.0, peak)
    return audio
