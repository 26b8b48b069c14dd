"""`kiosk demo` / `make demo`: the whole synthesis path on the demo voice, into WAV files.

Until the daemon exists this is the main job the firmware can show: real text
through the text frontend, official file loading, GPT decoding with sampling,
SoVITS decoding, WAV writing and playback, at full model size.  The demo voice
ships without the pretrained helper models, so its BERT features are zeros and
its prompt tokens are seeded instead of coming from HuBERT; and its weights are
untrained, so what it says is not speech.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import torch

from devtools.demo_voice import UNTRAINED_NOTICE, write_demo_voice
from devtools.formula_weights import named_rng
from engines.gpt.sampling import SamplingParams
from engines.sovits.spectrogram import reference_spectrogram
from engines.synthesis import SynthesisOptions, VoicePrompt, synthesize_segments
from engines.text.frontend import TextFrontend
from engines.voice_models import load_voice_models
from engines.wav_io import SAMPLE_RATE, read_wav, write_wav

log = logging.getLogger(__name__)

#: What the demo voice says (Mandarin, English, and both mixed).
SENTENCES = (
    "欢迎来到民俗博物馆。",
    "这首山歌是外婆年轻的时候在田里唱的。",
    "Welcome! 请按下按钮，听听老人们的声音。",
)
#: The (notional) transcript of the demo voice's reference clip.
REFERENCE_TEXT = "这是一段参考录音。"
#: About the pace of real speech (~12 phones/s at 25 tokens/s), with room to spare.
DEMO_TOKENS_PER_PHONE = 3


def _phones_and_zero_bert(
    frontend: TextFrontend, text: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    segments = frontend.segments(text, "zh", "cut1")
    return [(torch.tensor(s.phone_ids), torch.zeros(1024, len(s.phone_ids))) for s in segments]


def run_demo(out: Path, seed: int = 0) -> list[Path]:
    """Write the demo voice (once), synthesise the sentences, play them if possible."""
    voice_files = write_demo_voice(out / "voice")
    start = time.perf_counter()
    voice = load_voice_models(voice_files.gpt, voice_files.sovits)
    log.info(
        "demo voice loaded in %.1f s (GPT %s, SoVITS %s). %s",
        time.perf_counter() - start,
        voice.gpt_version,
        voice.sovits_version,
        UNTRAINED_NOTICE,
    )
    clip, rate = read_wav(voice_files.reference)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{voice_files.reference}: expected {SAMPLE_RATE} Hz, got {rate}")
    frontend = TextFrontend(voice.symbols_version)
    [(ref_phones, ref_bert)] = _phones_and_zero_bert(frontend, REFERENCE_TEXT)
    prompt = VoicePrompt(
        phone_ids=ref_phones,
        bert=ref_bert,
        semantic_tokens=torch.from_numpy(
            named_rng(seed, "demo.reference.tokens").integers(0, 1024, 100)
        ).long(),
        timbre=voice.sovits.timbre(reference_spectrogram(torch.from_numpy(clip.mean(0))[None])),
    )
    # The untrained demo model never says EOS: cap it near the length of real speech.
    options = SynthesisOptions(
        sampling=SamplingParams(), seed=seed, max_tokens_per_phone=DEMO_TOKENS_PER_PHONE
    )
    written = []
    for i, text in enumerate(SENTENCES, start=1):
        segments = _phones_and_zero_bert(frontend, text)
        count = sum(len(ids) for ids, _ in segments)
        start = time.perf_counter()
        audio = synthesize_segments(voice, prompt, segments, options)
        took = time.perf_counter() - start
        path = write_wav(out / f"demo-{i}.wav", audio)
        seconds = audio.size / SAMPLE_RATE
        log.info(
            "sentence %d %r: %d phones -> %.2f s of audio in %.2f s (RTF %.2f): %s",
            i,
            text,
            count,
            seconds,
            took,
            took / max(seconds, 1e-9),
            path,
        )
        written.append(path)
    play_files(written)
    return written


def play_files(paths: list[Path]) -> None:
    """Play through ALSA when a sound card and `aplay` exist; otherwise just say where."""
    cards = Path("/proc/asound/cards")
    has_card = cards.is_file() and "no soundcards" not in cards.read_text()
    player = shutil.which("aplay")
    if not (has_card and player):
        log.info("no sound card here: the WAV files are in %s", paths[0].parent if paths else "-")
        return
    for path in paths:
        result = subprocess.run(
            [player, "-q", str(path)], check=False, capture_output=True, text=True, timeout=120
        )
        if result.returncode:
            log.warning("could not play %s: %s", path, result.stderr.strip())
