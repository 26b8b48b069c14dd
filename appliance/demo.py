"""`kiosk demo` / `make demo`: the whole synthesis path on the demo voice, into WAV files.

Until the daemon exists this is the main job the firmware can show: real text
through the text frontend, a voice folder loaded through `engines.Voice`, GPT
decoding with sampling, SoVITS decoding, WAV writing and playback, at full
model size.  The demo voice ships without the pretrained helper models, so its
BERT features are zeros and its prompt tokens are seeded instead of coming from
HuBERT; and its weights are untrained, so what it says is not speech.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from appliance.say import export_on_demand
from devtools.demo_voice import write_demo_voice_folder
from engines.voice import Voice
from engines.wav_io import write_wav

log = logging.getLogger(__name__)

#: What the demo voice says (Mandarin, English, and both mixed).
SENTENCES = (
    "欢迎来到民俗博物馆。",
    "这首山歌是外婆年轻的时候在田里唱的。",
    "Welcome! 请按下按钮，听听老人们的声音。",
)


def run_demo(out: Path, seed: int = 0, backend: str = "auto") -> list[Path]:
    """Prepare the demo voice folder (once), speak the sentences, play them if possible."""
    folder = write_demo_voice_folder(out / "voice")
    written = []
    with Voice.load(folder, backend=backend, export=export_on_demand) as voice:
        options = voice.options(seed=seed)
        for i, text in enumerate(SENTENCES, start=1):
            start = time.perf_counter()
            audio = voice.synthesize(text, options=options)
            took = time.perf_counter() - start
            path = write_wav(out / f"demo-{i}.wav", audio.samples)
            log.info(
                "sentence %d %r -> %.2f s of audio in %.2f s (RTF %.2f, %s): %s",
                i,
                text,
                audio.seconds,
                took,
                took / max(audio.seconds, 1e-9),
                voice.backend,
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
