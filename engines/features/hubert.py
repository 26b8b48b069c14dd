"""HuBERT features and semantic prompt tokens of the reference clip (chinese-hubert-base).

The GPT stage continues the reference clip's own semantic tokens. They come
from HuBERT's last hidden state at 50 Hz, which the SoVITS model projects to
25 Hz and quantises. Three reference details change the tokens and are kept:
the clip must be 3-10 s at 16 kHz, 9 600 zeros are appended (0.3 s at the
SoVITS rate of 32 kHz, though the clip is at 16 kHz), and the raw waveform goes
into the model without the feature extractor's mean/variance normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .audio_loading import load_audio
from .errors import FeatureModelError, ReferenceClipError
from .model_folders import ModelSpec, check_folder, load_pretrained

if TYPE_CHECKING:  # transformers takes seconds to import: only when a model loads
    from transformers import HubertModel

    from engines.sovits.synthesizer import SoVITSModel

HUBERT_SPEC = ModelSpec(
    role="HuBERT prompt",
    official_name="TencentGameMate/chinese-hubert-base",
    model_type="hubert",
)
PROMPT_SAMPLE_RATE = 16_000
MIN_PROMPT_SAMPLES = 48_000  # 3 s
MAX_PROMPT_SAMPLES = 160_000  # 10 s
PROMPT_PAD_SAMPLES = 9_600
#: Only used to mask frames in training; a checkpoint may lack it.
_UNUSED_AT_INFERENCE = ("masked_spec_embed",)


def prepare_prompt_audio(wav16k: Tensor | np.ndarray) -> Tensor:
    """Check a 16 kHz mono clip for the 3-10 s rule and append the reference's 9 600 zeros.

    Returns a float32 1-D tensor of len(wav16k) + 9 600 samples. The limits
    are inclusive (48 000 and 160 000 samples are accepted), as in the reference.
    """
    wav = torch.as_tensor(wav16k)
    if wav.dim() != 1:
        raise ReferenceClipError(
            f"the reference clip must be mono 1-D samples, got shape {tuple(wav.shape)}"
        )
    if not wav.is_floating_point():
        raise ReferenceClipError(f"the reference clip must be float samples, got {wav.dtype}")
    n = int(wav.shape[0])
    if not MIN_PROMPT_SAMPLES <= n <= MAX_PROMPT_SAMPLES:
        raise ReferenceClipError(
            f"the reference clip is {n / PROMPT_SAMPLE_RATE:.2f} s ({n} samples at 16 kHz); "
            "it must be 3 to 10 s long: record or trim another one"
        )
    wav = wav.to(torch.float32)
    if not bool(torch.isfinite(wav).all()):
        raise ReferenceClipError("the reference clip contains NaN or infinite samples")
    return torch.cat([wav, wav.new_zeros(PROMPT_PAD_SAMPLES)])


def load_prompt_audio(path: str | Path) -> Tensor:
    """A reference clip file as the 16 kHz float32 samples HubertEncoder.encode expects."""
    return torch.from_numpy(load_audio(path, PROMPT_SAMPLE_RATE))


class HubertEncoder:
    """Reference clip at 16 kHz -> HuBERT last hidden state [1, hidden, T50]."""

    def __init__(self, model: HubertModel, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.hidden_size: int = int(model.config.hidden_size)
        self._kernels: Sequence[int] = tuple(model.config.conv_kernel)
        self._strides: Sequence[int] = tuple(model.config.conv_stride)

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu") -> HubertEncoder:
        """Load HubertModel in float32 from a local folder; never touches the network.

        preprocessor_config.json is not needed: its normalisation is not applied.
        """
        from transformers import HubertModel

        folder = check_folder(path, HUBERT_SPEC)
        model = load_pretrained(
            HubertModel, folder, HUBERT_SPEC, allowed_missing=_UNUSED_AT_INFERENCE
        )
        dev = torch.device(device)
        return cls(model.to(dev), dev)

    def frame_count(self, n_samples: int) -> int:
        """T50 that `encode` returns for a clip of n_samples (the padding included)."""
        length = n_samples + PROMPT_PAD_SAMPLES
        for kernel, stride in zip(self._kernels, self._strides, strict=True):
            length = (length - kernel) // stride + 1
        return length

    def encode(self, wav16k: Tensor | np.ndarray) -> Tensor:
        """Check and pad the clip (see prepare_prompt_audio), then [1, hidden, T50] float32."""
        wav = prepare_prompt_audio(wav16k).to(self.device)
        with torch.no_grad():
            hidden = self.model(input_values=wav.unsqueeze(0)).last_hidden_state
        return hidden.transpose(1, 2)


def prompt_tokens(
    hubert: HubertEncoder, sovits: SoVITSModel, wav16k: Tensor | np.ndarray
) -> Tensor:
    """Semantic prompt tokens [T25] (int64) of a 16 kHz reference clip.

    HuBERT features go through the SoVITS model's own ssl_proj and codebook,
    so the tokens belong to that voice model.
    """
    ssl_dim = int(sovits.cfg.ssl_dim)
    if ssl_dim != hubert.hidden_size:
        raise FeatureModelError(
            f"HuBERT gives {hubert.hidden_size}-d features but the SoVITS model expects {ssl_dim}"
        )
    ssl = hubert.encode(wav16k)
    param = next(sovits.parameters())
    with torch.no_grad():
        codes = sovits.extract_latent(ssl.to(device=param.device, dtype=param.dtype))
    return codes[0, 0]


__all__ = [
    "HUBERT_SPEC",
    "MAX_PROMPT_SAMPLES",
    "MIN_PROMPT_SAMPLES",
    "PROMPT_PAD_SAMPLES",
    "PROMPT_SAMPLE_RATE",
    "HubertEncoder",
    "load_prompt_audio",
    "prepare_prompt_audio",
    "prompt_tokens",
]
