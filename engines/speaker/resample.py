"""Windowed-sinc resampling, numerically equivalent to torchaudio's `Resample` defaults.

The speaker-verification input of v2Pro/v2ProPlus is the 32 kHz reference clip
brought to 16 kHz by `torchaudio.transforms.Resample(32000, 16000)`. Another
resampler (soxr, scipy) audibly moves the synthesised output, and torchaudio
is not a dependency here, so the same algorithm is rebuilt on plain torch:

* both rates are reduced by their gcd (32 000 -> 16 000 becomes 2 -> 1);
* the low-pass cut-off is `rolloff * min(rates)` with rolloff 0.99;
* the filter spans `lowpass_filter_width` (6) zero crossings on each side,
  i.e. `ceil(6 * orig / cutoff)` input samples, shaped by a Hann (cos²) window;
* the filter taps are evaluated in float64 and rounded once to float32 (what the
  transform does when no dtype is given), then applied as a strided conv1d on the
  zero-padded signal;
* the output keeps `ceil(N * new / orig)` samples.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


@lru_cache(maxsize=8)
def _sinc_kernel(
    orig: int, new: int, lowpass_filter_width: int, rolloff: float
) -> tuple[Tensor, int]:
    """Polyphase filter bank [new, 1, taps] (float32) and its one-sided reach in input samples.

    Row `j` holds the weights of the output phase `j`: output sample
    `k * new + j` reads input samples around `k * orig` (after the left padding).
    """
    cutoff = min(orig, new) * rolloff
    reach = math.ceil(lowpass_filter_width * orig / cutoff)
    # Offsets of the input taps, in units of the output period, for every phase.
    taps = torch.arange(-reach, reach + orig, dtype=torch.float64) / orig
    phase = torch.arange(0, -new, -1).unsqueeze(1) / new  # float32, as the reference rounds it
    t = (phase.to(torch.float64) + taps.unsqueeze(0)) * cutoff
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    safe_t = torch.where(t == 0, torch.ones_like(t), t)
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(safe_t) / safe_t)
    kernel = sinc * (window * (cutoff / orig))  # same rounding order as torchaudio
    return kernel.to(torch.float32).unsqueeze(1), reach


def sinc_resample(
    wav: Tensor,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
    rolloff: float = ROLLOFF,
) -> Tensor:
    """[..., N] float waveform at `orig_freq` -> [..., ceil(N * new / orig)] at `new_freq`."""
    if not wav.is_floating_point():
        raise TypeError(f"resampling needs a floating-point waveform, got {wav.dtype}")
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return wav
    g = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // g, int(new_freq) // g
    kernel, reach = _sinc_kernel(orig, new, lowpass_filter_width, float(rolloff))
    kernel = kernel.to(device=wav.device, dtype=wav.dtype)

    lead = wav.shape[:-1]
    n = wav.shape[-1]
    flat = wav.reshape(-1, 1, n)
    padded = F.pad(flat, (reach, reach + orig))
    phases = F.conv1d(padded, kernel, stride=orig)  # [B, new, frames]
    out = phases.transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(new * n / orig)
    return out[:, :target].reshape(*lead, -1)


def resample_32k_to_16k(wav: Tensor) -> Tensor:
    """[..., N] float waveform at 32 kHz -> [..., ceil(N / 2)] at 16 kHz (torchaudio defaults)."""
    return sinc_resample(wav, 32000, 16000)
