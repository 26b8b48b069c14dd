"""GPT stage of GPT-SoVITS (Text2Semantic decoder, v1/v2): model, KV cache, sampling, loop."""

from .config import GPTConfig
from .decoding import MAX_DECODE_STEPS, DecodeResult, generate
from .kv_cache import KVCache
from .model import OFFICIAL_PREFIX, Text2SemanticModel
from .sampling import EOS_SUPPRESSED_STEPS, SampleResult, SamplingParams, sample_next

__all__ = [
    "EOS_SUPPRESSED_STEPS",
    "MAX_DECODE_STEPS",
    "OFFICIAL_PREFIX",
    "DecodeResult",
    "GPTConfig",
    "KVCache",
    "SampleResult",
    "SamplingParams",
    "Text2SemanticModel",
    "generate",
    "sample_next",
]
