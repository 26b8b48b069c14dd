"""The build step's phrase cache: loudness meter and normaliser, precache, crash safety."""

from __future__ import annotations

import math

import numpy as np
import pytest
from kiosk_build import loudness

SR = 32_000


def faded_tone(freq: float, seconds: float, sr: int, amp: float, phase: float = 0.0) -> np.ndarray:
    """A sine with 20 ms raised-cosine fades (no onset click to overshoot)."""
    n = np.arange(int(seconds * sr))
    x = amp * np.sin(2 * np.pi * freq * n / sr + phase)
    fade = int(0.02 * sr)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    return x


def speechlike(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Syllable-rate bursts of a voiced tone plus noise, with a few sharp peaks."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    voiced = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    x = 0.08 * env * voiced + 0.01 * rng.standard_normal(t.size)
    for i in rng.integers(0, t.size, 5):
        x[i] += 0.7
    return x


def test_reference_tone_reads_minus_3_lufs_and_0_dbtp() -> None:
    """BS.1770's anchor: a 0 dBFS 1 kHz sine at 48 kHz reads -3.01 LUFS, 0 dBTP."""
    got = loudness.measure(faded_tone(1000, 5, 48_000, 1.0), 48_000)
    assert got.lufs == pytest.approx(-3.01, abs=0.1)
    assert got.true_peak_dbtp == pytest.approx(0.0, abs=0.01)


def test_true_peak_sees_the_peak_between_samples() -> None:
    """fs/4 at 45 degrees: every sample is at 0.707 (-3 dBFS) but the wave peaks at 1.0."""
    x = faded_tone(12_000, 1, 48_000, 1.0, phase=np.pi / 4)
    assert 20 * math.log10(np.abs(x).max()) == pytest.approx(-3.01, abs=0.01)
    assert loudness.measure(x, 48_000).true_peak_dbtp == pytest.approx(0.0, abs=0.05)
    assert loudness.oversampling_factor(48_000) == 4
    assert loudness.oversampling_factor(32_000) == 6


def test_short_clip_is_measured_looped() -> None:
    """A clip under one 400 ms block reads what a long clip of the same sound reads."""
    long = loudness.measure(np.sin(2 * np.pi * 500 * np.arange(2 * SR) / SR) * 0.3, SR)
    short = loudness.measure(np.sin(2 * np.pi * 500 * np.arange(SR // 5) / SR) * 0.3, SR)
    assert short.lufs == pytest.approx(long.lufs, abs=0.1)
    y, after = loudness.normalise(np.sin(2 * np.pi * 500 * np.arange(SR // 10) / SR) * 0.01, SR)
    assert after.lufs == pytest.approx(-18.0, abs=0.1)
    assert y.shape == (SR // 10,)


@pytest.mark.parametrize("target", [-18.0, -23.0, -14.0])
def test_normalise_reaches_target_under_the_ceiling(target: float) -> None:
    """Speech-like input with sharp peaks: limited, within ±1 LU, at or under -1 dBTP."""
    x = speechlike(3.0, SR)
    before = loudness.measure(x, SR)
    assert before.true_peak_dbtp - before.lufs > 18  # peaky: gain alone would clip
    y, after = loudness.normalise(x, SR, target_lufs=target)
    assert y.dtype == np.float32
    assert abs(after.lufs - target) <= 1.0
    assert after.lufs == pytest.approx(target, abs=0.1)
    assert after.true_peak_dbtp <= -1.0
    # What it reports is what the samples measure.
    assert loudness.measure(y, SR) == after


def test_normalise_stereo_and_int_input() -> None:
    """(n, 2) float and int16 clips are measured and normalised alike."""
    mono = speechlike(2.0, SR, seed=1)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    y, after = loudness.normalise(stereo, SR)
    assert y.shape == stereo.shape
    assert abs(after.lufs + 18) <= 1.0 and after.true_peak_dbtp <= -1.0
    as_int = (np.clip(mono, -1, 1) * 32767).astype(np.int16)
    assert loudness.measure(as_int, SR).lufs == pytest.approx(
        loudness.measure(as_int / 32767.0, SR).lufs, abs=0.01
    )


def test_ceiling_wins_over_target() -> None:
    """A click train cannot reach -5 LUFS under -1 dBTP: it comes back quieter, truthfully."""
    x = np.zeros(SR * 2)
    x[:: SR // 10] = 0.5
    y, after = loudness.normalise(x, SR, target_lufs=-5.0)
    assert after.true_peak_dbtp <= -1.0
    assert after == loudness.measure(y, SR)
    assert after.lufs < -5.0


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        (np.zeros(SR), "silent"),
        (np.zeros(0), "empty"),
        (np.array([0.1, np.nan] * 8000), "NaN"),
    ],
)
def test_unmeasurable_clips_are_refused(clip: np.ndarray, message: str) -> None:
    """Silence, an empty clip, NaN: a clear LoudnessError (a ValueError)."""
    with pytest.raises(loudness.LoudnessError, match=message):
        loudness.normalise(clip, SR)
