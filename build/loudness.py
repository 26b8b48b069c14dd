"""Loudness (ITU-R BS.1770) and true peak of a clip, and normalising it to a target.

Every phrase a visitor hears should be equally loud, whether it was synthesised or
is an archival recording, so the build step brings each file to one integrated
loudness (default -18 LUFS) with its true peak at or under a ceiling (default
-1 dBTP, so that resampling to the device rate never clips).

Integrated loudness comes from `pyloudnorm` (K-weighting, 400 ms gating blocks,
absolute and relative gates).  pyloudnorm refuses a clip shorter than one block;
a short clip ("Yes.", 0.3 s) is measured as a copy of itself looped until it fills
one block plus one step: a looped clip has the same mean square as the clip, which
is what one block of it measures, so its loudness is the clip's.

True peak follows BS.1770-4 Annex 2: oversample (polyphase FIR interpolation) and
take the largest absolute sample.  Annex 2 specifies 4x for 48 kHz; a lower rate is
oversampled more so that the interpolated rate is at least 192 kHz (the voices run
at 32 kHz: 6x), since the error of the estimate grows as the oversampled rate falls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyloudnorm
from scipy.ndimage import minimum_filter1d
from scipy.signal import resample_poly

#: pyloudnorm's gating block (s) and step (s, 75 % overlap).
BLOCK_SECONDS = 0.4
STEP_SECONDS = 0.1
#: The smallest interpolated rate (Hz) of the true-peak meter (4x of 48 kHz).
MIN_OVERSAMPLED_RATE = 192_000
#: How close to the target normalise() aims (LU); the promise is ±1 LU.
AIM_LU = 0.05
#: The limiter's look-ahead/smoothing half-width (s): short enough to leave
#: syllables alone, long enough that the gain change is not heard as a click.
LIMITER_HALF_WIDTH_S = 0.004
#: The interpolation filter's window: Kaiser beta 10 keeps the passband within
#: 0.0002 dB (scipy's default beta 5 reads a steady tone 0.015 dB high).
_WINDOW = ("kaiser", 10.0)


class LoudnessError(ValueError):
    """A clip that cannot be measured or normalised (empty, silent, not finite)."""


@dataclass(frozen=True)
class Loudness:
    """What the meter read for one clip."""

    lufs: float
    """Integrated loudness (LUFS, BS.1770-4 gated); -inf for digital silence."""
    true_peak_dbtp: float
    """True peak (dBTP, BS.1770-4 Annex 2 oversampling); -inf for digital silence."""


def _as_float(samples: np.ndarray) -> np.ndarray:
    """float64 copy, (n,) or (n, channels), refusing what a meter cannot read."""
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise LoudnessError(f"audio must be (samples,) or (samples, channels), got {x.shape}")
    if x.shape[0] == 0:
        raise LoudnessError("the clip is empty: nothing to measure")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise LoudnessError("the clip holds NaN or infinite samples; re-synthesise it")
    return x


def oversampling_factor(sample_rate: int) -> int:
    """Annex 2's 4x, raised for rates below 48 kHz to reach 192 kHz."""
    return max(4, math.ceil(MIN_OVERSAMPLED_RATE / sample_rate))


def _peak_envelope(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per original sample, the largest |oversampled value| around it (all channels)."""
    factor = oversampling_factor(sample_rate)
    chans = x.reshape(x.shape[0], -1)
    env = np.zeros(x.shape[0])
    for ch in range(chans.shape[1]):
        up = np.abs(resample_poly(chans[:, ch], factor, 1, window=_WINDOW))
        up = up[: x.shape[0] * factor].reshape(x.shape[0], factor)
        env = np.maximum(env, up.max(axis=1))
        env = np.maximum(env, np.abs(chans[:, ch]))
    return env


def true_peak_dbtp(samples: np.ndarray, sample_rate: int) -> float:
    """True peak (dBTP) by oversampling (BS.1770-4 Annex 2)."""
    x = _as_float(samples)
    peak = float(_peak_envelope(x, sample_rate).max())
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def integrated_lufs(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (LUFS); a clip under one block is measured looped (see module)."""
    x = _as_float(samples)
    need = math.ceil((BLOCK_SECONDS + STEP_SECONDS) * sample_rate)
    if x.shape[0] < need:
        reps = -(-need // x.shape[0])
        x = np.concatenate([x] * reps, axis=0)
    if not np.any(x):
        return -math.inf
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(sample_rate).integrated_loudness(x))


def measure(samples: np.ndarray, sample_rate: int) -> Loudness:
    """Integrated loudness and true peak of a clip ((n,) or (n, channels), float or int)."""
    if sample_rate <= 0:
        raise LoudnessError(f"sample rate must be positive, got {sample_rate}")
    return Loudness(
        lufs=integrated_lufs(samples, sample_rate),
        true_peak_dbtp=true_peak_dbtp(samples, sample_rate),
    )


def _limit(x: np.ndarray, sample_rate: int, ceiling_lin: float) -> np.ndarray:
    """Look-ahead peak limiter: a smooth gain that keeps every true peak under the ceiling.

    The needed gain per sample (ceiling / oversampled peak) is spread by a moving
    minimum over ±W samples and then averaged over ±W: every average then covers
    only values at or below the need at its centre, so no peak escapes, and the
    gain moves in ramps of 2W instead of jumping.
    """
    env = _peak_envelope(x, sample_rate)
    with np.errstate(divide="ignore"):
        need = np.where(env > ceiling_lin, ceiling_lin / np.maximum(env, 1e-30), 1.0)
    if np.all(need >= 1.0):
        return x
    half = max(1, int(LIMITER_HALF_WIDTH_S * sample_rate))
    spread = minimum_filter1d(need, size=2 * half + 1, mode="nearest")
    kernel = np.ones(2 * half + 1) / (2 * half + 1)
    padded = np.pad(spread, half, mode="edge")
    gain = np.convolve(padded, kernel, mode="valid")
    gain = np.minimum(gain, 1.0)
    return x * (gain[:, None] if x.ndim == 2 else gain)


def normalise(
    samples: np.ndarray,
    sample_rate: int,
    target_lufs: float = -18.0,
    true_peak_dbtp: float = -1.0,
) -> tuple[np.ndarray, Loudness]:
    """Bring a clip to `target_lufs` with true peaks at or under `true_peak_dbtp`.

    Gain to the target, then the limiter on peaks above the ceiling, then make-up
    gain for what the limiter took, repeated until the loudness is within
    0.05 LU of the target (a few rounds for speech).  The ceiling always wins: a
    clip so peaky that the target cannot be met under it comes back quieter, and
    the returned `Loudness` (measured on the result, not predicted) says by how
    much.  Returns float32 samples of the input's shape and what was measured.
    """
    x = _as_float(samples)
    before = measure(x, sample_rate)
    if not math.isfinite(before.lufs):
        raise LoudnessError(
            "the clip is silent (below the -70 LUFS gate): there is nothing to normalise; "
            "check the recording or the synthesis"
        )
    # Aim a hair under the ceiling: the limiter's gain ramps and float32 rounding
    # may move an interpolated peak by a few thousandths of a dB.
    ceiling_lin = 10.0 ** ((true_peak_dbtp - 0.02) / 20.0)
    gain_db = target_lufs - before.lufs
    y = x
    after = before
    for _ in range(8):
        y = _limit(x * 10.0 ** (gain_db / 20.0), sample_rate, ceiling_lin)
        after = measure(y, sample_rate)
        miss = target_lufs - after.lufs
        if abs(miss) <= AIM_LU:
            break
        gain_db += miss
    y = y.astype(np.float32)
    after = measure(y, sample_rate)
    if after.true_peak_dbtp > true_peak_dbtp:
        # Belt and braces: a last plain scale if rounding left a peak above the ceiling.
        y = (y * 10.0 ** ((true_peak_dbtp - 0.02 - after.true_peak_dbtp) / 20.0)).astype(np.float32)
        after = measure(y, sample_rate)
    return y, after
