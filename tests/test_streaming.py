"""Streamed synthesis: chunks start early, join without clicks, stay close to the whole decode."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from engines.gpt.sampling import SamplingParams
from engines.streaming import ChunkVocoder, StreamSettings, stream_tokens_to_audio
from engines.synthesis import PAUSE_SAMPLES, SynthesisOptions, iter_segment_audio


@pytest.fixture(scope="module")
def decoded(demo_voice):
    """A fixed 60-token sentence decoded whole (noise 0) and streamed in chunks."""
    models, prompt = demo_voice
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 1024, (60,), generator=gen).tolist()
    text = torch.randint(100, 300, (1, 30), generator=gen)
    with torch.inference_mode():
        whole = models.sovits.decode(
            torch.tensor(tokens).view(1, 1, -1), text, prompt.timbre, noise_scale=0.0
        )[0, 0].numpy()
    settings = StreamSettings()
    vocoder = ChunkVocoder(models.sovits, text, prompt.timbre, 0.0, None, settings)
    chunks, count = [], settings.first_chunk_tokens
    while count < len(tokens):
        chunks.append(vocoder.push(tokens[:count]))
        count += settings.chunk_tokens
    chunks.append(vocoder.push(tokens, final=True))
    return whole, chunks


def test_streamed_audio_has_the_same_length_and_stays_close(decoded) -> None:
    whole, chunks = decoded
    streamed = np.concatenate(chunks)
    assert streamed.size == whole.size == 60 * 1280
    assert len([c for c in chunks if c.size]) >= 3
    rms = float(np.sqrt(np.mean(whole**2)))
    diff_rms = float(np.sqrt(np.mean((streamed - whole) ** 2)))
    # Measured 0.08 of the signal RMS with the untrained demo weights: the SoVITS
    # content encoder attends to the whole token sequence, so early frames change
    # a little as later tokens arrive (the reference's streaming has the same limit).
    assert diff_rms < 0.15 * rms


def test_no_clicks_at_chunk_joins(decoded) -> None:
    whole, chunks = decoded
    streamed = np.concatenate(chunks)
    joins = np.cumsum([c.size for c in chunks])[:-1]
    steps = np.abs(np.diff(streamed))
    largest_step_in_whole = float(np.abs(np.diff(whole)).max())
    for join in joins:
        around = steps[max(0, join - 64) : join + 64]
        assert around.max() <= 1.2 * largest_step_in_whole


def test_streamed_segments_start_early_and_repeat_exactly(demo_voice) -> None:
    models, prompt = demo_voice
    segment = (torch.arange(120, 140), torch.zeros(1024, 20))
    options = SynthesisOptions(seed=3, max_tokens_per_phone=2)
    settings = StreamSettings(first_chunk_tokens=6, chunk_tokens=12)
    first = list(iter_segment_audio(models, prompt, [segment], options, settings))
    again = list(iter_segment_audio(models, prompt, [segment], options, settings))
    assert len(first) >= 3  # several chunks, then the pause
    assert first[0].size < sum(c.size for c in first[:-1])
    assert np.all(first[-1] == 0) and first[-1].size == PAUSE_SAMPLES
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="crossfade"):
        StreamSettings(context_frames=1, crossfade_samples=1280)
    with pytest.raises(ValueError, match="chunk sizes"):
        StreamSettings(first_chunk_tokens=0)


def test_closing_a_stream_stops_the_decoding_thread(demo_voice) -> None:
    models, prompt = demo_voice
    phones = torch.arange(120, 140)
    chunks = stream_tokens_to_audio(
        models.gpt,
        models.sovits,
        torch.cat([prompt.phone_ids, phones]),
        torch.zeros(1024, prompt.phone_ids.numel() + 20),
        prompt.semantic_tokens,
        phones,
        prompt.timbre,
        SamplingParams(),
        torch.Generator().manual_seed(0),
        0.5,
        max_new_tokens=400,
        min_new_tokens=400,
        settings=StreamSettings(first_chunk_tokens=4),
    )
    assert next(chunks).size > 0
    chunks.close()
    assert not any(t.name == "gpt-decode" for t in threading.enumerate())
