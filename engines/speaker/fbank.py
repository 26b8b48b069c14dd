"""Kaldi-style log mel filterbank, as the reference feeds ERes2NetV2.

The reference (GPT_SoVITS/sv.py) calls its vendored copy of torchaudio's
`compliance.kaldi.fbank` once per clip with `num_mel_bins=80,
sample_frequency=16000, dither=0` and every other option at its default:

* the waveform is used as given, floats in [-1, 1] (no x32768 scaling);
* 25 ms frames (400 samples) every 10 ms (160), `snip_edges=True`, so a clip of N
  samples gives `1 + (N - 400) // 160` frames and anything shorter than 400 is an error;
* per frame: subtract the frame mean (DC offset), pre-emphasis 0.97 with the
  first sample repeated as its own predecessor, Povey window (symmetric Hann ^ 0.85),
  zero-pad to 512, |rfft|²;
* 80 triangular bins, equally spaced on the mel scale `1127 ln(1 + f/700)` between
  20 Hz and Nyquist, evaluated at the 256 lower FFT bin centres (the Nyquist bin
  gets weight 0);
* `log(max(energy, float32 eps))`; no energy column, no mean normalisation.

Everything runs in float32 in the same operation order as the reference so the
features agree to the last bits, which the 20 480-d embedding is sensitive to.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLE_RATE = 16000
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
PREEMPHASIS = 0.97
POVEY_POWER = 0.85
LOW_FREQ = 20.0
#: float32 machine epsilon, the floor under each mel energy before the log.
LOG_FLOOR = torch.finfo(torch.float32).eps


def _mel(freq: float) -> float:
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def mel_filterbank(
    num_bins: int, fft_size: int, sample_rate: float, low_freq: float, high_freq: float
) -> Tensor:
    """[num_bins, fft_size // 2 + 1] float32 triangular weights (last column, Nyquist, is 0).

    `high_freq <= 0` counts down from Nyquist, as Kaldi's option does.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < high_freq <= nyquist) or num_bins < 4:
        raise ValueError(
            f"bad mel range: {num_bins} bins over {low_freq}-{high_freq} Hz (Nyquist {nyquist})"
        )
    mel_lo, mel_hi = _mel(low_freq), _mel(high_freq)
    step = (mel_hi - mel_lo) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    # float32 arithmetic in the reference's order: edges, then slopes.
    left = mel_lo + index * step
    centre = mel_lo + (index + 1.0) * step
    right = mel_lo + (index + 2.0) * step
    bin_hz = sample_rate / fft_size
    mel = 1127.0 * (1.0 + bin_hz * torch.arange(float(fft_size // 2)) / 700.0).log()
    mel = mel.unsqueeze(0)
    rising = (mel - left) / (centre - left)
    falling = (right - mel) / (right - centre)
    weights = torch.clamp_min(torch.minimum(rising, falling), 0.0)
    return F.pad(weights, (0, 1))


@lru_cache(maxsize=8)
def povey_window(size: int) -> Tensor:
    """Kaldi's default window: a symmetric Hann raised to 0.85 (zero at both ends)."""
    return torch.hann_window(size, periodic=False, dtype=torch.float32).pow(POVEY_POWER)


def num_frames(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Frames Kaldi produces with `snip_edges=True` (0 when the clip is shorter than a frame)."""
    size = int(sample_rate * FRAME_LENGTH_MS * 0.001)
    shift = int(sample_rate * FRAME_SHIFT_MS * 0.001)
    return 0 if num_samples < size else 1 + (num_samples - size) // shift


def kaldi_fbank(
    wav16k: Tensor,
    num_mel_bins: int = 80,
    *,
    sample_rate: int = SAMPLE_RATE,
    low_freq: float = LOW_FREQ,
    high_freq: float = 0.0,
) -> Tensor:
    """[N] float waveform in [-1, 1] -> [frames, num_mel_bins] float32 log mel energies.

    A [1, N] input is accepted too (the reference passes one channel).
    """
    if wav16k.dim() == 2 and wav16k.shape[0] == 1:
        wav16k = wav16k[0]
    if wav16k.dim() != 1:
        raise ValueError(f"kaldi_fbank takes one waveform [N], got shape {tuple(wav16k.shape)}")
    wav = wav16k.to(torch.float32)
    size = int(sample_rate * FRAME_LENGTH_MS * 0.001)
    shift = int(sample_rate * FRAME_SHIFT_MS * 0.001)
    if wav.shape[0] < size:
        raise ValueError(
            f"clip too short for the speaker encoder: {wav.shape[0]} samples, "
            f"need at least {size} ({FRAME_LENGTH_MS:g} ms at {sample_rate} Hz)"
        )
    fft_size = 1 << (size - 1).bit_length()

    frames = wav.unfold(0, size, shift)  # [m, size], a view like Kaldi's strided frames
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)
    frames = frames - PREEMPHASIS * previous
    frames = frames * povey_window(size).to(wav.device)
    frames = F.pad(frames, (0, fft_size - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)

    bank = mel_filterbank(num_mel_bins, fft_size, float(sample_rate), low_freq, high_freq)
    energies = torch.mm(power, bank.to(wav.device).T)
    return torch.clamp_min(energies, LOG_FLOOR).log()
