"""Phones to audio on the demo voice: determinism, pauses, WAV output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.synthesis import PAUSE_SAMPLES, SynthesisOptions, VoicePrompt, synthesize_segments
from engines.voice_models import VoiceModels
from engines.wav_io import float_to_pcm16, read_wav, write_wav


@pytest.fixture(scope="module")
def voice(demo_voice):
    return demo_voice


def _say(voice: tuple[VoiceModels, VoicePrompt], seed: int, phones: int = 6) -> np.ndarray:
    models, prompt = voice
    segment = (torch.arange(120, 120 + phones), torch.zeros(1024, phones))
    options = SynthesisOptions(seed=seed, max_tokens_per_phone=2)
    return synthesize_segments(models, prompt, [segment, segment], options)


def test_same_seed_same_audio_other_seed_other_audio(voice) -> None:
    first, again, other = _say(voice, 1), _say(voice, 1), _say(voice, 2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_segments_end_in_the_reference_pause(voice) -> None:
    audio = _say(voice, 3)
    # Two segments of at most 12 tokens each (1280 samples per token), each + 0.3 s pause.
    assert audio.size <= 2 * (12 * 1280 + PAUSE_SAMPLES)
    assert np.all(audio[-PAUSE_SAMPLES:] == 0)
    assert np.abs(audio[:-PAUSE_SAMPLES]).max() > 0.01
    assert np.all(np.abs(audio) <= 1.0)


def test_wav_roundtrip(tmp_path: Path, voice) -> None:
    audio = _say(voice, 4)
    path = write_wav(tmp_path / "out.wav", audio)
    back, rate = read_wav(path)
    assert rate == 32000 and back.shape == (1, audio.size)
    assert np.max(np.abs(back[0] - audio)) <= 1 / 32768 + 1e-7


def test_pcm_conversion_truncates_and_never_wraps() -> None:
    pcm = float_to_pcm16(np.array([1.0, -1.0, 1.5, 0.5, -0.50001, 3e-5]))
    assert pcm.tolist() == [32767, -32768, 32767, 16384, -16384, 0]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        SynthesisOptions(speed=0)
    with pytest.raises(ValueError, match="max_tokens_per_phone"):
        SynthesisOptions(max_tokens_per_phone=0)


def test_not_a_wav(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="not a readable WAV"):
        read_wav(tmp_path / "x.wav")
