"""Phones in, audio out: the GPT stage, then the SoVITS decoder, for one voice.

This is the "synthesize" step of the data flow.  It takes what the reference
clip contributes (a `VoicePrompt`) and the target phones of each text segment,
and returns 32 kHz float audio.  The text frontend and the reference-clip
analysis produce the inputs; the runtimes of later issues replace the models
behind the same calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from engines.gpt.decoding import MAX_DECODE_STEPS, generate
from engines.gpt.sampling import SamplingParams
from engines.sovits.synthesizer import Timbre
from engines.streaming import StreamSettings, stream_tokens_to_audio, supports_windows
from engines.voice_models import VoiceModels

if TYPE_CHECKING:
    from engines.backends.base import VoiceRuntime

#: The reference appends 0.3 s of silence after every synthesised fragment.
PAUSE_SAMPLES = 9600


@dataclass(frozen=True)
class VoicePrompt:
    """What the reference clip contributes to every utterance of a voice."""

    phone_ids: torch.Tensor  # [N] int64, phones of the reference transcript
    bert: torch.Tensor  # [1024, N] BERT features of the transcript (zeros if not zh)
    semantic_tokens: torch.Tensor  # [P] int64, the clip as 25 Hz semantic tokens
    timbre: Timbre  # from the clip's spectrogram (and speaker embedding for Pro)

    def __post_init__(self) -> None:
        if self.bert.shape != (1024, self.phone_ids.shape[0]):
            raise ValueError(
                f"prompt BERT features must be [1024, {self.phone_ids.shape[0]}], "
                f"got {tuple(self.bert.shape)}"
            )


@dataclass(frozen=True)
class SynthesisOptions:
    """The knobs of one utterance; defaults follow the reference app."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    speed: float = 1.0
    noise_scale: float = 0.5
    seed: int = 0
    #: Optional guard against a model that never says EOS: at most this many
    #: semantic tokens (25 per second) per target phone.  None: the reference's
    #: own caps only (max_sec and 1500 tokens).
    max_tokens_per_phone: int | None = None
    #: Optional hard cap on the semantic tokens of one segment (bounds latency).
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.max_tokens_per_phone is not None and self.max_tokens_per_phone < 1:
            raise ValueError("max_tokens_per_phone must be at least 1")
        if not 0.25 <= self.speed <= 4.0:
            raise ValueError(f"speed must be between 0.25 and 4, got {self.speed}")
        if not 0.0 <= self.noise_scale <= 2.0:
            raise ValueError(f"noise_scale must be between 0 and 2, got {self.noise_scale}")


def _token_limit(options: SynthesisOptions, phones: int) -> int:
    limit = MAX_DECODE_STEPS
    if options.max_tokens_per_phone is not None:
        limit = min(limit, options.max_tokens_per_phone * phones)
    if options.max_new_tokens is not None:
        limit = min(limit, options.max_new_tokens)
    return limit


@torch.inference_mode()
def synthesize_phones(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    options: SynthesisOptions,
    generator: torch.Generator,
) -> np.ndarray:
    """One segment: target phones `[M]` and BERT `[1024, M]` to float32 audio."""
    if phone_ids.ndim != 1 or phone_ids.numel() == 0:
        raise ValueError("a segment needs at least one phone")
    all_phones = torch.cat([prompt.phone_ids, phone_ids])
    all_bert = torch.cat([prompt.bert, bert.to(prompt.bert.dtype)], dim=1)
    limit = _token_limit(options, phone_ids.numel())
    decoded = generate(
        voice.gpt,
        all_phones,
        all_bert,
        prompt.semantic_tokens,
        options.sampling,
        generator,
        max_new_tokens=limit,
        early_stop_num=voice.gpt.config.early_stop_num,
    )
    if decoded.tokens.numel() == 0:
        return np.zeros(0, dtype=np.float32)
    audio = voice.sovits.decode(
        decoded.tokens.view(1, 1, -1),
        phone_ids.view(1, -1),
        prompt.timbre,
        speed=options.speed,
        noise_scale=options.noise_scale,
        generator=generator,
    )
    return audio[0, 0].float().cpu().numpy()


def stream_phones(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    options: SynthesisOptions,
    generator: torch.Generator,
    settings: StreamSettings,
) -> Iterator[np.ndarray]:
    """One segment as audio chunks that start after the first few tokens."""
    if phone_ids.ndim != 1 or phone_ids.numel() == 0:
        raise ValueError("a segment needs at least one phone")
    if options.speed != 1.0 or not supports_windows(voice.sovits):
        # The speed stretch moves every frame as tokens arrive, and a runtime
        # without windowed decoding can only decode the whole segment.
        yield synthesize_phones(voice, prompt, phone_ids, bert, options, generator)
        return
    yield from stream_tokens_to_audio(
        voice.gpt,
        voice.sovits,
        torch.cat([prompt.phone_ids, phone_ids]),
        torch.cat([prompt.bert, bert.to(prompt.bert.dtype)], dim=1),
        prompt.semantic_tokens,
        phone_ids,
        prompt.timbre,
        options.sampling,
        generator,
        options.noise_scale,
        max_new_tokens=_token_limit(options, phone_ids.numel()),
        early_stop_num=voice.gpt.config.early_stop_num,
        settings=settings,
    )


def iter_segment_pieces(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    segments: Iterable[tuple[torch.Tensor, torch.Tensor]],
    options: SynthesisOptions,
    stream: StreamSettings | None = None,
) -> Iterator[tuple[int, bool, np.ndarray]]:
    """Each segment's audio, then the reference's 0.3 s pause, as tagged pieces.

    Yields (segment index, is pause, samples).  One generator seeded once
    serves the whole text, so the same seed gives the same audio; yielding
    piece by piece keeps memory flat for long texts.  With `stream`, each
    segment comes as several chunks, the first after
    `stream.first_chunk_tokens` tokens.
    """
    generator = torch.Generator().manual_seed(options.seed)
    for index, (phone_ids, bert) in enumerate(segments):
        if stream is None:
            yield (
                index,
                False,
                synthesize_phones(voice, prompt, phone_ids, bert, options, generator),
            )
        else:
            for chunk in stream_phones(voice, prompt, phone_ids, bert, options, generator, stream):
                yield index, False, chunk
        yield index, True, np.zeros(PAUSE_SAMPLES, dtype=np.float32)


def iter_segment_audio(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    segments: Iterable[tuple[torch.Tensor, torch.Tensor]],
    options: SynthesisOptions,
    stream: StreamSettings | None = None,
) -> Iterator[np.ndarray]:
    """The samples of `iter_segment_pieces`, untagged."""
    for _, _, samples in iter_segment_pieces(voice, prompt, segments, options, stream):
        yield samples


def synthesize_segments(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    segments: Sequence[tuple[torch.Tensor, torch.Tensor]],
    options: SynthesisOptions,
) -> np.ndarray:
    """Several segments, each followed by the reference's 0.3 s pause, as one array."""
    pieces = list(iter_segment_audio(voice, prompt, segments, options))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
