"""The demo voice: official-format model files made from the project's own seeded weights.

No real voice can ship with the firmware, so the demo voice is a GPT v2 /
SoVITS v2 pair filled with deterministic formula weights (seed `DEMO_SEED`)
and written exactly as the official trainer writes its files.  The models are
untrained: they run the whole pipeline at full size, but the sound is not
speech.  The same seed always gives the same files and the same audio.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devtools.checkpoint_writer import save_gpt_checkpoint, save_sovits_checkpoint
from devtools.formula_weights import formula_state_dict, named_rng
from engines.gpt.config import GPTConfig
from engines.gpt.model import Text2SemanticModel
from engines.sovits.synthesizer import SoVITSModel
from engines.wav_io import SAMPLE_RATE, write_wav

log = logging.getLogger(__name__)

DEMO_SEED = 2026
DEMO_VERSION = "v2"
UNTRAINED_NOTICE = (
    "Demo voice with untrained, seeded weights: it exercises the full pipeline, "
    "but what it says is not speech."
)


@dataclass(frozen=True)
class DemoVoice:
    """Where the demo voice's files are."""

    folder: Path
    gpt: Path
    sovits: Path
    reference: Path


def demo_voice_paths(folder: Path) -> DemoVoice:
    return DemoVoice(
        folder, folder / "demo-e1.ckpt", folder / "demo_e1_s1.pth", folder / "reference.wav"
    )


def reference_tone(seed: int, seconds: float = 4.0) -> np.ndarray:
    """A 4 s harmonic tone with a slow tremolo and a little noise, as the reference clip."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wav = (
        0.25 * np.sin(2 * np.pi * 196 * t)
        + 0.12 * np.sin(2 * np.pi * 392 * t + 0.3)
        + 0.05 * np.sin(2 * np.pi * 1175 * t + 1.1)
    )
    wav *= 0.6 + 0.4 * np.sin(2 * np.pi * 1.2 * t)
    wav += 0.01 * named_rng(seed, "demo.reference.noise").standard_normal(t.size)
    return wav.astype(np.float32)


def write_demo_voice(folder: Path, seed: int = DEMO_SEED) -> DemoVoice:
    """Write (or reuse) the demo voice in `folder`; returns its paths."""
    paths = demo_voice_paths(folder)
    if all(p.is_file() for p in (paths.gpt, paths.sovits, paths.reference)):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    log.info("writing the demo voice (seed %d) to %s", seed, folder)
    gpt = Text2SemanticModel(GPTConfig.for_version(DEMO_VERSION))
    gpt_shapes = {f"model.{k}": v.shape for k, v in gpt.state_dict().items()}
    gpt_weights = {
        k.removeprefix("model."): v for k, v in formula_state_dict(gpt_shapes, seed).items()
    }
    config = GPTConfig.for_version(DEMO_VERSION).to_official()
    save_gpt_checkpoint(paths.gpt, gpt_weights, config, "GPT-e1")
    log.info("  GPT written: %s", paths.gpt.name)
    sovits = SoVITSModel.for_version(DEMO_VERSION)
    sovits_weights = formula_state_dict({k: v.shape for k, v in sovits.state_dict().items()}, seed)
    save_sovits_checkpoint(
        paths.sovits,
        sovits_weights,
        {"model": {"version": DEMO_VERSION}, "data": {"sampling_rate": 32000}},
        DEMO_VERSION,
        "1epoch_1iteration",
    )
    log.info("  SoVITS written: %s", paths.sovits.name)
    write_wav(paths.reference, reference_tone(seed))
    (folder / "voice.json").write_text(
        json.dumps(
            {
                "name": "Demo voice",
                "seed": seed,
                "version": DEMO_VERSION,
                "notice": UNTRAINED_NOTICE,
            },
            indent=2,
        )
        + "\n"
    )
    return paths
