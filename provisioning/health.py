"""Speaking an installed voice's phrases, and the health check before activation.

A curated phrase is said with the BERT features its pack carries, so a box
needs no BERT model for it; the features are used only when this box's
frontend reads the phrase as the same phones (else the voice is refused: the
pack must be rebuilt).  The health check loads the freshly built voice folder
exactly as the kiosk will, says the first phrase and checks the audio is
finite, not silent and of a plausible length; a voice that fails never
becomes active.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.text.frontend import PhoneSegment
from engines.voice import HelperModels, Voice
from provisioning.pack_format import PHRASES_BERT_FILE, Manifest, Phrase
from provisioning.phrase_features import read_phrase_features
from provisioning.strict_json import PackFormatError

#: The build step's exporter, handed in by the caller (provisioning never imports it).
Exporter = Callable[..., Mapping[str, Any]]

#: Semantic tokens per segment in the health check (25 per second of audio).
HEALTH_MAX_TOKENS = 100
#: Peak and RMS below which the health check's audio counts as silence.
SILENT_PEAK = 1e-3
SILENT_RMS = 1e-4


class HealthCheckError(ValueError):
    """The built voice does not speak properly; it is not activated."""


@dataclass(frozen=True)
class PhraseInput:
    """What `Voice.synthesize` needs to say one listed phrase without BERT."""

    phrase: Phrase
    segments: list[PhoneSegment]
    features: list[torch.Tensor]
    overrides: dict[str, Any]


def phrase_input(voice: Voice, pack_dir: Path, manifest: Manifest, phrase_id: str) -> PhraseInput:
    """The phrase's segments as this box reads them, with the pack's features for them."""
    details = manifest.voice
    if details is None:
        raise PackFormatError(f"{manifest.id}: a {manifest.kind} pack has no phrases")
    phrase = next((p for p in details.phrases if p.id == phrase_id), None)
    if phrase is None:
        known = ", ".join(p.id for p in details.phrases) or "none"
        raise PackFormatError(
            f"{manifest.id} v{manifest.version} has no phrase {phrase_id!r} (phrases: {known})"
        )
    features = read_phrase_features(
        (pack_dir / PHRASES_BERT_FILE).read_bytes(),
        [p.id for p in details.phrases],
        str(pack_dir / PHRASES_BERT_FILE),
    )[phrase.id]
    segments = voice.segments(phrase.text, phrase.lang, details.cut)
    if len(segments) != len(features) or any(
        s.phone_ids != ids.tolist() for s, (ids, _bert) in zip(segments, features, strict=False)
    ):
        raise PackFormatError(
            f"{manifest.id} v{manifest.version}, phrase {phrase.id!r}: this firmware reads the "
            "text as other phones than the workstation did; pack the voice again with this "
            "firmware's version of the tools"
        )
    overrides: dict[str, Any] = {}
    if phrase.speed is not None:
        overrides["speed"] = phrase.speed
    if phrase.seed is not None:
        overrides["seed"] = phrase.seed
    return PhraseInput(phrase, segments, [torch.from_numpy(b) for _ids, b in features], overrides)


def check_audio(samples: np.ndarray, sample_rate: int, seconds_max: float, what: str) -> float:
    """Finite, not silent, of plausible length; returns the audio's seconds."""
    seconds = samples.size / sample_rate
    if samples.size == 0 or not np.isfinite(samples).all():
        raise HealthCheckError(f"{what}: the audio is empty or holds NaN/infinite samples")
    peak = float(np.abs(samples).max())
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if peak < SILENT_PEAK or rms < SILENT_RMS:
        raise HealthCheckError(f"{what}: the audio is silent (peak {peak:.2e}, RMS {rms:.2e})")
    if not 0.1 <= seconds <= seconds_max:
        raise HealthCheckError(
            f"{what}: {seconds:.2f} s of audio, outside the plausible 0.1-{seconds_max:.1f} s"
        )
    return seconds


def health_check(
    voice_folder: Path,
    pack_dir: Path,
    manifest: Manifest,
    *,
    backend: str = "torch-eager",
    helpers: HelperModels | None = None,
    export: Exporter | None = None,
    max_tokens: int = HEALTH_MAX_TOKENS,
) -> str:
    """Load the voice folder and say the first phrase; a line for the log, or HealthCheckError."""
    details = manifest.voice
    if details is None or not details.phrases:
        raise HealthCheckError(
            f"{manifest.id}: no phrase to check the voice with; list at least one phrase"
        )
    start = time.perf_counter()
    voice = Voice.load(voice_folder, helpers=helpers, backend=backend, export=export)
    try:
        spoken = phrase_input(voice, pack_dir, manifest, details.phrases[0].id)
        options = replace(voice.options(**spoken.overrides), max_new_tokens=max_tokens)
        audio = voice.synthesize(
            spoken.phrase.text,
            language=spoken.phrase.lang,
            cut=details.cut,
            options=options,
            segments=spoken.segments,
            features=spoken.features,
        )
        speed = options.speed
        limit = len(spoken.segments) * (max_tokens / 25 / speed + options.fragment_interval) + 1
        what = f"health check of {manifest.id} v{manifest.version}"
        seconds = check_audio(audio.samples, audio.sample_rate, limit, what)
        used = voice.backend
    finally:
        voice.close()
    return (
        f"phrase {spoken.phrase.id!r}: {seconds:.2f} s of audio on {used} in "
        f"{time.perf_counter() - start:.1f} s"
    )
