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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from devtools.checkpoint_writer import save_gpt_checkpoint, save_sovits_checkpoint
from devtools.formula_weights import formula_state_dict, named_rng
from engines.gpt.config import GPTConfig
from engines.gpt.model import Text2SemanticModel
from engines.sovits.spectrogram import reference_spectrogram
from engines.sovits.synthesizer import SoVITSModel
from engines.synthesis import VoicePrompt
from engines.text.frontend import TextFrontend
from engines.voice_folder import (
    SpeakDefaults,
    VoiceFolderError,
    read_config,
    write_voice_folder,
)
from engines.voice_models import load_voice_models
from engines.voice_prompt import BERT_DIM
from engines.wav_io import SAMPLE_RATE, read_wav, write_wav

log = logging.getLogger(__name__)

DEMO_SEED = 2026
DEMO_VOICE_ID = "demo"
#: The (notional) transcript of the demo voice's reference clip.
REFERENCE_TEXT = "这是一段参考录音。"
#: The untrained model never says EOS: cap it near the pace of real speech
#: (~12 phones/s at 25 tokens/s, with room to spare).
DEMO_TOKENS_PER_PHONE = 3
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
    (folder / "about.json").write_text(
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


def demo_prompt(voice_files: DemoVoice, seed: int = DEMO_SEED) -> VoicePrompt:
    """The demo voice's prompt without HuBERT or BERT: seeded tokens, zero BERT.

    The timbre is real: the reference clip's spectrogram through the SoVITS
    model's reference encoder, as for any voice.
    """
    models = load_voice_models(voice_files.gpt, voice_files.sovits)
    clip, rate = read_wav(voice_files.reference)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{voice_files.reference}: expected {SAMPLE_RATE} Hz, got {rate}")
    segment = TextFrontend(models.symbols_version).phones(REFERENCE_TEXT, "zh")
    with torch.inference_mode():
        spec = reference_spectrogram(torch.from_numpy(clip.mean(0))[None])
        timbre = models.sovits.timbre(spec)
    return VoicePrompt(
        phone_ids=torch.tensor(segment.phone_ids, dtype=torch.long),
        bert=torch.zeros(BERT_DIM, len(segment.phone_ids)),
        semantic_tokens=torch.from_numpy(
            named_rng(seed, "demo.reference.tokens").integers(0, 1024, 100)
        ).long(),
        timbre=timbre,
    )


def write_demo_voice_folder(out: Path, seed: int = DEMO_SEED) -> Path:
    """The demo voice as a voice folder (reused when one is already there)."""
    try:
        config = read_config(out)
        if config.id == DEMO_VOICE_ID:
            return out
    except VoiceFolderError:
        pass
    log.info("preparing the demo voice folder in %s", out)
    with tempfile.TemporaryDirectory(prefix="demo-voice-") as tmp:
        files = write_demo_voice(Path(tmp), seed)
        write_voice_folder(
            out,
            voice_id=DEMO_VOICE_ID,
            gpt=files.gpt,
            sovits=files.sovits,
            gpt_version=DEMO_VERSION,
            sovits_version=DEMO_VERSION,
            prompt=demo_prompt(files, seed),
            reference_text=REFERENCE_TEXT,
            text_features="zeros",
            defaults=SpeakDefaults(max_tokens_per_phone=DEMO_TOKENS_PER_PHONE, seed=0),
            notice=UNTRAINED_NOTICE,
        )
    return out
