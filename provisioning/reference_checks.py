"""Checks of a reference clip, said in plain words for the person who recorded it.

The reference clip fixes the voice's timbre and its prompt; a bad one makes
every phrase sound wrong, and the fix is to record or cut it again, which is
cheap on the workstation and impossible in the gallery.  Refused: outside
3-10 s (GPT-SoVITS itself refuses such clips), a sample rate below HuBERT's
16 kHz, clipping, silence.  Only warned about: a rate below the voice's
32 kHz, a few clipped samples, background noise (an estimate: how far the
quietest stretches lie below the voice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.wav_io import read_wav

MIN_SECONDS = 3.0
MAX_SECONDS = 10.0
MIN_RATE = 16000
GOOD_RATE = 32000
FULL_SCALE = 0.999
#: More than this share of samples at full scale is clipping.
MAX_CLIPPED_FRACTION = 1e-3
SILENT_PEAK_DBFS = -45.0
MIN_SOUND_SECONDS = 1.0
NOISY_BELOW_DB = 25.0
FRAME_SECONDS = 0.02


class ReferenceClipError(ValueError):
    """The clip would make a bad voice; the message says why and what to do."""


@dataclass(frozen=True)
class ClipReport:
    seconds: float
    sample_rate: int
    channels: int
    peak_dbfs: float
    clipped_samples: int
    sound_seconds: float
    noise_below_db: float | None
    """How far the quietest 10 % of the clip lies below its loudest 5 % (None: no sound)."""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        clip = "no clipping" if not self.clipped_samples else f"{self.clipped_samples} clipped"
        noise = (
            f"background noise about {self.noise_below_db:.0f} dB below the voice"
            if self.noise_below_db is not None
            else "no sound"
        )
        return (
            f"{self.seconds:.1f} s, {self.sample_rate} Hz, {self.channels} channel(s), "
            f"peak {self.peak_dbfs:.1f} dBFS, {clip}, {self.sound_seconds:.1f} s of sound, {noise}"
        )


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


def check_reference(path: str | Path) -> ClipReport:
    """Measure the clip; `problems` lists reasons to refuse it, `warnings` the rest."""
    audio, rate = read_wav(path)  # WavFileError (a ValueError) for what is not a WAV
    channels, n = audio.shape
    seconds = n / rate
    mono = audio.mean(axis=0, dtype=np.float64) if channels > 1 else audio[0].astype(np.float64)
    peak = float(np.abs(audio).max()) if n else 0.0
    clipped = int((np.abs(audio) >= FULL_SCALE).sum())
    frame = max(1, int(rate * FRAME_SECONDS))
    usable = (n // frame) * frame
    if usable:
        rms = np.sqrt((mono[:usable].reshape(-1, frame) ** 2).mean(axis=1))
        frames_db = 20.0 * np.log10(np.maximum(rms, 1e-10))
        loud = float(np.percentile(frames_db, 95))
        quiet = float(np.percentile(frames_db, 10))
        sound = (frames_db > max(-60.0, loud - 30.0)).sum() * frame / rate
    else:
        loud = quiet = -200.0
        sound = 0.0
    silent = _db(peak) < SILENT_PEAK_DBFS
    report = ClipReport(
        seconds=seconds,
        sample_rate=rate,
        channels=channels,
        peak_dbfs=_db(peak),
        clipped_samples=clipped,
        sound_seconds=0.0 if silent else float(sound),
        noise_below_db=None if silent else loud - quiet,
    )
    problems, warnings = report.problems, report.warnings
    if seconds < MIN_SECONDS:
        problems.append(
            f"too short: {seconds:.1f} s; cut a 3-10 s stretch of clear speech from the recording"
        )
    elif seconds > MAX_SECONDS:
        problems.append(
            f"too long: {seconds:.1f} s; GPT-SoVITS takes 3-10 s, cut one or two sentences"
        )
    if rate < MIN_RATE:
        problems.append(
            f"sample rate {rate} Hz is too low (HuBERT needs 16 kHz); use the original "
            "recording, not a telephone-quality copy"
        )
    elif rate < GOOD_RATE:
        warnings.append(
            f"sample rate {rate} Hz is below the voice's 32 kHz: the highest tones of the "
            "voice are missing; use the original recording if there is one"
        )
    if silent:
        problems.append(
            f"silent: the loudest sample is {_db(peak):.0f} dBFS; is this the right file, "
            "or was the microphone muted?"
        )
    elif sound < MIN_SOUND_SECONDS:
        problems.append(
            f"mostly silent: only {sound:.1f} s of sound; cut the clip around the speech"
        )
    if clipped > MAX_CLIPPED_FRACTION * audio.size:
        problems.append(
            f"clipped: {clipped} samples ({100 * clipped / audio.size:.1f} %) hit full scale, "
            "which distorts the voice; take a stretch recorded at a lower level"
        )
    elif clipped:
        warnings.append(f"{clipped} samples touch full scale (a little clipping)")
    if report.noise_below_db is not None and report.noise_below_db < NOISY_BELOW_DB:
        warnings.append(
            f"noisy or very even: the quietest parts are only {report.noise_below_db:.0f} dB "
            "below the voice; a stretch with pauses in a quiet room gives a cleaner voice"
        )
    return report


def require_good_reference(path: str | Path) -> ClipReport:
    """The report of a usable clip, or ReferenceClipError listing every problem."""
    report = check_reference(path)
    if report.problems:
        raise ReferenceClipError(f"{path}: reference clip refused: " + "; ".join(report.problems))
    return report
