"""Pretrained helper models of GPT-SoVITS, loaded offline from local folders.

- BertFeaturizer: per-phone BERT features of Mandarin text (chinese-roberta-wwm-ext-large),
  on the project's own encoder (`bert_model`) and tokenizer (`bert_tokenizer`): a box never
  imports transformers.
- HubertEncoder / prompt_tokens: semantic prompt tokens of the reference clip
  (chinese-hubert-base through transformers + the SoVITS model's quantizer; workstation only).
- load_audio: WAV reading and soxr HQ resampling as the reference's librosa does it.
"""

from .audio_loading import load_audio, read_clip, resample
from .bert import BERT_SPEC, BertFeaturizer
from .errors import AudioFileError, FeatureModelError, ReferenceClipError, TextFeatureError
from .hubert import (
    HUBERT_SPEC,
    MAX_PROMPT_SAMPLES,
    MIN_PROMPT_SAMPLES,
    PROMPT_PAD_SAMPLES,
    PROMPT_SAMPLE_RATE,
    HubertEncoder,
    load_prompt_audio,
    prepare_prompt_audio,
    prompt_tokens,
)

__all__ = [
    "BERT_SPEC",
    "HUBERT_SPEC",
    "MAX_PROMPT_SAMPLES",
    "MIN_PROMPT_SAMPLES",
    "PROMPT_PAD_SAMPLES",
    "PROMPT_SAMPLE_RATE",
    "AudioFileError",
    "BertFeaturizer",
    "FeatureModelError",
    "HubertEncoder",
    "ReferenceClipError",
    "TextFeatureError",
    "load_audio",
    "load_prompt_audio",
    "prepare_prompt_audio",
    "prompt_tokens",
    "read_clip",
    "resample",
]
