"""Speaker-verification embedding for GPT-SoVITS v2Pro/v2ProPlus (ERes2NetV2, 20 480-d).

Pipeline: 32 kHz clip -> torchaudio-equivalent sinc resampling to 16 kHz ->
80-bin Kaldi fbank -> ERes2NetV2 trunk -> time-averaged fused feature map.
"""

from __future__ import annotations

from .embedding import sv_features
from .eres2netv2 import ERes2NetV2Config, SpeakerEncoder
from .fbank import kaldi_fbank, mel_filterbank, num_frames
from .loading import (
    OFFICIAL_FILENAME,
    SpeakerCheckpointError,
    load_speaker_encoder,
    official_key_shapes,
    save_speaker_checkpoint,
)
from .resample import resample_32k_to_16k, sinc_resample

__all__ = [
    "OFFICIAL_FILENAME",
    "ERes2NetV2Config",
    "SpeakerCheckpointError",
    "SpeakerEncoder",
    "kaldi_fbank",
    "load_speaker_encoder",
    "mel_filterbank",
    "num_frames",
    "official_key_shapes",
    "resample_32k_to_16k",
    "save_speaker_checkpoint",
    "sinc_resample",
    "sv_features",
]
