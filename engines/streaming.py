"""Streaming synthesis: audio starts after a few semantic tokens, not after the whole sentence.

The GPT stage produces 25 tokens per second of audio, one at a time.  Instead
of waiting for EOS, `ChunkVocoder` turns the tokens so far into audio in
chunks: the SoVITS text/content encoder runs over all tokens so far (it is
cheap and needs the whole context), then the projection, prior, flow and the
HiFi-GAN vocoder run only on the new frames plus some left context.  The newest frames are held
back (`margin_frames`) because later tokens still change them, and each chunk
is cross-faded into the previous one over `crossfade_samples`, so the joins
are click-free and the result stays close to the whole-sentence decode
(measured in the tests and by `kiosk bench`).

Speed other than 1.0 stretches the whole sequence, so frame positions move as
tokens arrive; those utterances are decoded in one piece at the end.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from engines.gpt.decoding import MAX_DECODE_STEPS, generate
from engines.gpt.model import Text2SemanticModel
from engines.gpt.runtime import GPTRuntime
from engines.gpt.sampling import SamplingParams
from engines.sovits.synthesizer import Timbre

FRAMES_PER_TOKEN = 2  # 25 Hz tokens, 50 Hz decoder frames
PRIOR_CHANNELS = 192  # channels of the prior latent (every supported version)
SAMPLES_PER_FRAME = 640


@dataclass(frozen=True)
class StreamSettings:
    """Chunking of streamed audio (tokens are 40 ms each).

    `first_chunk_tokens` = 8 was chosen by measurement (ONNX Runtime, full v2,
    2-core CPU): 4 tokens yield no audio yet (the margin and the crossfade hold
    it all back), 6 yield 80 ms, 8 yield 160 ms for 100 ms of vocoder time; the
    difference from the whole decode is the same (6.9 % RMS) for 6 to 16.
    """

    first_chunk_tokens: int = 8
    chunk_tokens: int = 24
    margin_frames: int = 6
    context_frames: int = 24
    crossfade_samples: int = 1280

    def __post_init__(self) -> None:
        if self.first_chunk_tokens < 1 or self.chunk_tokens < 1:
            raise ValueError("chunk sizes must be at least one token")
        if self.margin_frames < 0 or self.context_frames < 1:
            raise ValueError("margin_frames must be >= 0 and context_frames >= 1")
        if not 0 < self.crossfade_samples <= self.context_frames * SAMPLES_PER_FRAME:
            raise ValueError("crossfade_samples must be in (0, context_frames * 640]")


class StagedSoVITS(Protocol):
    """A SoVITS runtime that can decode windows (every backend's runtime does)."""

    def content(
        self, codes: torch.Tensor, text_ids: torch.Tensor, ge_text: torch.Tensor
    ) -> torch.Tensor: ...

    def render(
        self, content: torch.Tensor, noise: torch.Tensor, noise_scale: float, ge: torch.Tensor
    ) -> torch.Tensor: ...


def supports_windows(sovits: object) -> bool:
    """Whether a SoVITS runtime can decode windows (and so stream in chunks)."""
    return all(hasattr(sovits, m) for m in ("content", "render"))


class ChunkVocoder:
    """Turns a growing token sequence into consecutive, cross-faded audio chunks."""

    def __init__(
        self,
        sovits: StagedSoVITS,
        text_ids: torch.Tensor,
        timbre: Timbre,
        noise_scale: float,
        generator: torch.Generator | None,
        settings: StreamSettings | None = None,
    ) -> None:
        self.sovits = sovits
        self.text_ids = text_ids.view(1, -1)
        self.timbre = timbre
        self.noise_scale = noise_scale
        self.generator = generator
        self.settings = settings or StreamSettings()
        self.noise_channels = PRIOR_CHANNELS
        self._noise = torch.zeros(1, 0, 0)
        self._done_frames = 0  # frames whose audio has been emitted (minus the held tail)
        self._tail = np.zeros(0, dtype=np.float32)  # last crossfade samples, not yet emitted
        fade = np.linspace(0.0, 1.0, self.settings.crossfade_samples, dtype=np.float32)
        self._fade_in = np.sin(0.5 * np.pi * fade) ** 2
        self._fade_out = 1.0 - self._fade_in

    def _noise_for(self, frames: int, channels: int) -> torch.Tensor:
        """Noise per frame index, drawn once, so a frame gets the same noise in every chunk."""
        have = self._noise.shape[-1]
        if frames > have:
            extra = torch.randn(1, channels, frames - have, generator=self.generator)
            self._noise = extra if have == 0 else torch.cat([self._noise, extra], dim=-1)
        return self._noise[..., :frames]

    @torch.inference_mode()
    def push(self, tokens: list[int], final: bool = False) -> np.ndarray:
        """New audio for `tokens` (all tokens so far); `final` flushes everything."""
        if not tokens:
            return np.zeros(0, dtype=np.float32)
        codes = torch.tensor(tokens, dtype=torch.long).view(1, 1, -1)
        content = self.sovits.content(codes, self.text_ids, self.timbre.ge_text)
        frames = content.shape[-1]
        end = frames if final else frames - self.settings.margin_frames
        if end <= self._done_frames:
            return self._flush() if final else np.zeros(0, dtype=np.float32)
        start = max(0, self._done_frames - self.settings.context_frames)
        noise = self._noise_for(frames, self.noise_channels)[..., start:end]
        audio = self.sovits.render(content[..., start:end], noise, self.noise_scale, self.timbre.ge)
        return self._stitch(audio[0, 0].float().cpu().numpy(), start, end, final)

    def _stitch(self, audio: np.ndarray, start: int, end: int, final: bool) -> np.ndarray:
        xf = self.settings.crossfade_samples
        # Sample offset (inside `audio`) of the first sample not yet emitted.
        resume = self._done_frames * SAMPLES_PER_FRAME - len(self._tail) - start * SAMPLES_PER_FRAME
        head = audio[resume:]
        if len(self._tail):
            n = len(self._tail)
            head = head.copy()
            head[:n] = self._tail * self._fade_out[-n:] + head[:n] * self._fade_in[:n]
        self._done_frames = end
        if final:
            self._tail = np.zeros(0, dtype=np.float32)
            return head
        self._tail = head[-xf:].copy()
        return head[:-xf]

    def _flush(self) -> np.ndarray:
        tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
        return tail


def stream_tokens_to_audio(
    gpt: Text2SemanticModel | GPTRuntime,
    sovits: StagedSoVITS,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    prompt_tokens: torch.Tensor,
    target_ids: torch.Tensor,
    timbre: Timbre,
    sampling: SamplingParams,
    generator: torch.Generator,
    noise_scale: float,
    max_new_tokens: int = MAX_DECODE_STEPS,
    early_stop_num: int | None = None,
    settings: StreamSettings | None = None,
    min_new_tokens: int = 0,
) -> Iterator[np.ndarray]:
    """Run the GPT loop in a worker thread and yield audio chunks as tokens arrive."""
    settings = settings or StreamSettings()
    tokens: queue.Queue[int | BaseException | None] = queue.Queue()
    cancelled = threading.Event()

    def deliver(token: int) -> None:
        if cancelled.is_set():  # the listener is gone: stop decoding now
            raise _ListenerGoneError
        tokens.put(token)

    def produce() -> None:
        try:
            generate(
                gpt,
                phone_ids,
                bert,
                prompt_tokens,
                sampling,
                generator,
                max_new_tokens=max_new_tokens,
                early_stop_num=early_stop_num,
                on_token=deliver,
                min_new_tokens=min_new_tokens,
            )
            tokens.put(None)
        except _ListenerGoneError:
            tokens.put(None)
        except BaseException as exc:
            tokens.put(exc)

    # The vocoder noise has its own generator so that the GPT thread's draws and
    # the vocoder's never interleave nondeterministically.
    noise_gen = torch.Generator().manual_seed(
        int(torch.randint(0, 2**62, (1,), generator=generator))
    )
    vocoder = ChunkVocoder(sovits, target_ids, timbre, noise_scale, noise_gen, settings)
    worker = threading.Thread(target=produce, name="gpt-decode", daemon=True)
    worker.start()
    try:
        yield from _chunks_as_tokens_arrive(tokens, vocoder, settings)
    finally:
        # Reached on normal end, on error, and when the consumer stops listening
        # (a visitor pressed another button): the decoding thread must not run on.
        cancelled.set()
        worker.join()


class _ListenerGoneError(Exception):
    """Raised inside the decoding loop when nobody listens any more."""


def _chunks_as_tokens_arrive(
    tokens: queue.Queue[int | BaseException | None],
    vocoder: ChunkVocoder,
    settings: StreamSettings,
) -> Iterator[np.ndarray]:
    got: list[int] = []
    next_at = settings.first_chunk_tokens
    while True:
        item = tokens.get()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            break
        got.append(item)
        if len(got) >= next_at:
            chunk = vocoder.push(got)
            next_at = len(got) + settings.chunk_tokens
            if chunk.size:
                yield chunk
    last = vocoder.push(got, final=True)
    if last.size:
        yield last
