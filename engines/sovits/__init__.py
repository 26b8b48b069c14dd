"""Independent PyTorch implementation of the GPT-SoVITS SoVITS inference path.

Covers SynthesizerTrn for v1, v2, v2Pro and v2ProPlus with the official
state-dict layout (without the training-only posterior encoder `enc_q`).
"""

from .config import SUPPORTED_VERSIONS, SoVITSConfig
from .spectrogram import normalise_reference_clip, reference_spectrogram
from .synthesizer import DecodeResult, SoVITSModel, Timbre

__all__ = [
    "SUPPORTED_VERSIONS",
    "DecodeResult",
    "SoVITSConfig",
    "SoVITSModel",
    "Timbre",
    "normalise_reference_clip",
    "reference_spectrogram",
]
