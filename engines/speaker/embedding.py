"""Front end of the speaker encoder: 32 kHz clip -> 16 kHz -> 80-bin Kaldi fbank.

GPT-SoVITS (v2Pro/v2ProPlus) takes the reference clip after it was brought to
32 kHz and peak-limited for the spectrogram, resamples it with torchaudio's default
sinc resampler to 16 kHz, and computes the fbank of every clip separately (no
scaling by 32768, no dither, no mean normalisation) before the network.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fbank import kaldi_fbank
from .resample import resample_32k_to_16k


def sv_features(wav32k: Tensor) -> Tensor:
    """[B, N] (or [N]) 32 kHz float waveform -> [B, frames, 80] fbank of the 16 kHz version."""
    if wav32k.dim() == 1:
        wav32k = wav32k.unsqueeze(0)
    if wav32k.dim() != 2:
        raise ValueError(f"expected a [B, N] waveform batch, got shape {tuple(wav32k.shape)}")
    wav16k = resample_32k_to_16k(wav32k.to(torch.float32))
    return torch.stack([kaldi_fbank(clip, num_mel_bins=80) for clip in wav16k])
