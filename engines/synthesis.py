"""Phones in, audio out: the GPT stage, then the SoVITS decoder, for one voice.

This is the "synthesize" step of the data flow.  It takes what the reference
clip contributes (a `VoicePrompt`) and the target phones of each text segment,
and returns 32 kHz float audio.  The text frontend and the reference-clip
analysis produce the inputs; the runtimes of later issues replace the models
behind the same calls.

What happens between the models follows the official app's default engine
(its batch path): at most `min(early_stop_num, 1499)` tokens per segment, a
segment whose peak exceeds 1 scaled down to peak 1, then `fragment_interval`
seconds of silence after every segment, the last one included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from engines.gpt.decoding import batch_token_cap, generate
from engines.gpt.sampling import EOS_SUPPRESSED_STEPS, SamplingParams
from engines.sovits.synthesizer import Timbre
from engines.streaming import StreamSettings, stream_tokens_to_audio, supports_windows
from engines.voice_models import VoiceModels

if TYPE_CHECKING:
    from engines.backends.base import VoiceRuntime

#: Output rate of every supported SoVITS version (its `data.sampling_rate`).
SAMPLE_RATE = 32000
#: The official pause between fragments, in seconds (`fragment_interval`).
DEFAULT_FRAGMENT_INTERVAL = 0.3
#: The official app's text split method when a request names none (api_v2.py).
DEFAULT_TEXT_SPLIT_METHOD = "cut5"


def pause_samples(fragment_interval: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Zeros after each fragment: `int(rate * interval)`, the same float expression as the app."""
    if fragment_interval <= 0:
        return 0
    return int(sample_rate * fragment_interval)


#: The default 0.3 s pause at 32 kHz (9600 samples).
PAUSE_SAMPLES = pause_samples(DEFAULT_FRAGMENT_INTERVAL)


def limit_peak(audio: np.ndarray) -> np.ndarray:
    """Scale a fragment down to peak 1 when its peak exceeds 1 (the app's guard before int16).

    Quieter audio is returned unchanged (never boosted); the division is in
    float32, as the app does it.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return audio
    peak = np.float32(np.abs(audio).max())
    if peak > 1:
        return audio / peak
    return audio


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
    #: The app's SoVITS decode default (its API does not expose it).
    noise_scale: float = 0.5
    #: Fixed by default so that a text always sounds the same; the app draws one (-1).
    seed: int = 0
    #: Seconds of silence after every segment, the last one included (0: none).
    fragment_interval: float = DEFAULT_FRAGMENT_INTERVAL
    #: The app's split method when a request names none; callers pass it on as `cut_method`.
    text_split_method: str = DEFAULT_TEXT_SPLIT_METHOD
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
        if not 0.0 <= self.fragment_interval <= 10.0:
            raise ValueError(
                f"fragment_interval must be between 0 and 10 s, got {self.fragment_interval}"
            )


def _token_limit(options: SynthesisOptions, phones: int, early_stop_num: int) -> int:
    """Tokens a segment may keep: the app's batch-path cap, then the project's own guards."""
    limit = batch_token_cap(early_stop_num)
    if options.max_tokens_per_phone is not None:
        limit = min(limit, options.max_tokens_per_phone * phones)
    if options.max_new_tokens is not None:
        limit = min(limit, options.max_new_tokens)
    return limit


def skip_dropped_draw(generator: torch.Generator, vocab_size: int, step: int) -> None:
    """Advance `generator` past the draw of the step the app runs after its cap.

    At its length cap the app still runs one more step and samples a token
    (then drops it); the SoVITS noise comes after that draw.  Drawing the same
    exponential noise here, without the model step, keeps a seeded run's
    noise, and so its audio, the same as the app's.
    """
    width = vocab_size - 1 if step < EOS_SUPPRESSED_STEPS else vocab_size
    torch.empty(1, width, device=generator.device).exponential_(1.0, generator=generator)


@torch.inference_mode()
def synthesize_phones(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    options: SynthesisOptions,
    generator: torch.Generator,
) -> np.ndarray:
    """One segment: target phones `[M]` and BERT `[1024, M]` to float32 audio (no peak rule)."""
    if phone_ids.ndim != 1 or phone_ids.numel() == 0:
        raise ValueError("a segment needs at least one phone")
    all_phones = torch.cat([prompt.phone_ids, phone_ids])
    all_bert = torch.cat([prompt.bert, bert.to(prompt.bert.dtype)], dim=1)
    config = voice.gpt.config
    cap = batch_token_cap(config.early_stop_num)
    limit = _token_limit(options, phone_ids.numel(), config.early_stop_num)
    decoded = generate(
        voice.gpt,
        all_phones,
        all_bert,
        prompt.semantic_tokens,
        options.sampling,
        generator,
        max_new_tokens=limit,
        early_stop_num=None,  # already in `limit`, with the batch path's rule
    )
    if not decoded.stopped_by_eos and decoded.tokens.numel() == cap:
        skip_dropped_draw(generator, config.vocab_size, cap)
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
        max_new_tokens=_token_limit(options, phone_ids.numel(), voice.gpt.config.early_stop_num),
        early_stop_num=None,
        settings=settings,
    )


def iter_segment_pieces(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    segments: Iterable[tuple[torch.Tensor, torch.Tensor]],
    options: SynthesisOptions,
    stream: StreamSettings | None = None,
) -> Iterator[tuple[int, bool, np.ndarray]]:
    """Each segment's audio, then the app's pause, as tagged pieces.

    Yields (segment index, is pause, samples).  Each segment goes through the
    peak rule (`limit_peak`) before its pause of `options.fragment_interval`
    seconds (an empty pause piece when that is 0, so every segment still ends
    with one).  One generator seeded once serves the whole text, so the same
    seed gives the same audio; yielding piece by piece keeps memory flat for
    long texts.  With `stream`, each segment comes as several chunks, the
    first after `stream.first_chunk_tokens` tokens; the peak rule then applies
    to each chunk, as in the app's streaming mode, since the segment's peak is
    not known yet.
    """
    generator = torch.Generator().manual_seed(options.seed)
    pause = pause_samples(options.fragment_interval)
    for index, (phone_ids, bert) in enumerate(segments):
        if stream is None:
            audio = synthesize_phones(voice, prompt, phone_ids, bert, options, generator)
            yield index, False, limit_peak(audio)
        else:
            for chunk in stream_phones(voice, prompt, phone_ids, bert, options, generator, stream):
                yield index, False, limit_peak(chunk)
        yield index, True, np.zeros(pause, dtype=np.float32)


def iter_segment_audio(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    segments: Iterable[tuple[torch.Tensor, torch.Tensor]],
    options: SynthesisOptions,
    stream: StreamSettings | None = None,
) -> Iterator[np.ndarray]:
    """`iter_segment_pieces` without the tags (and without empty pauses)."""
    for _, is_pause, samples in iter_segment_pieces(voice, prompt, segments, options, stream):
        if samples.size or not is_pause:
            yield samples


def synthesize_segments(
    voice: VoiceModels | VoiceRuntime,
    prompt: VoicePrompt,
    segments: Sequence[tuple[torch.Tensor, torch.Tensor]],
    options: SynthesisOptions,
) -> np.ndarray:
    """Several segments, each peak-limited and followed by the app's pause, as one array."""
    pieces = list(iter_segment_audio(voice, prompt, segments, options))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
