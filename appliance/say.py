"""`kiosk say`: one voice + text -> a 32 kHz WAV (or the speaker), through `engines.Voice`.

The voice is either a prepared voice folder (`--voice-folder DIR`, what a box
boots from: no HuBERT, no speaker model) or the official trainer's files with
a reference clip (`--gpt --sovits --ref --ref-text`, what a technician tries
first).  `kiosk prepare-voice` turns the second into the first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engines.durable_files import atomic_write_bytes
from engines.streaming import StreamSettings
from engines.text.language_split import LANGUAGE_MODES
from engines.text.segmentation import CUT_METHODS
from engines.voice import AudioChunk, HelperModels, OfficialFiles, Voice
from engines.voice_folder import SpeakDefaults, write_voice_folder
from engines.voice_models import VoiceModels
from engines.wav_io import SAMPLE_RATE, WavStreamWriter, float_to_pcm16

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch-eager", "onnxruntime", "torch-cuda", "tensorrt")


class SayUsageError(ValueError):
    """Arguments that do not describe one voice (the message says what to give)."""


def add_voice_arguments(parser: argparse.ArgumentParser, *, folder: bool = True) -> None:
    """The options that name a voice: a voice folder, or official files + reference clip."""
    voice = parser.add_argument_group("voice")
    if folder:
        voice.add_argument(
            "--voice-folder", metavar="DIR", help="a prepared voice folder (kiosk prepare-voice)"
        )
    voice.add_argument("--gpt", metavar="G.ckpt", help="official GPT weights (.ckpt)")
    voice.add_argument("--sovits", metavar="S.pth", help="official SoVITS weights (.pth)")
    voice.add_argument("--ref", metavar="REF.wav", help="reference clip, 3-10 s")
    voice.add_argument("--ref-text", help="the words spoken in the clip")
    voice.add_argument("--ref-lang", default="zh", choices=LANGUAGE_MODES)
    voice.add_argument("--lexicon", metavar="FILE", help="custom pronunciations of this voice")
    models = parser.add_argument_group("pretrained helper models (local folders only)")
    models.add_argument(
        "--pretrained",
        default="pretrained_models",
        metavar="DIR",
        help=f"folder holding {HelperModels.HUBERT_FOLDER}/, {HelperModels.BERT_FOLDER}/ "
        f"and {HelperModels.SV_FILE}",
    )
    models.add_argument("--hubert", metavar="DIR", help=f"default DIR/{HelperModels.HUBERT_FOLDER}")
    models.add_argument("--bert", metavar="DIR", help=f"default DIR/{HelperModels.BERT_FOLDER}")
    models.add_argument("--sv", metavar="SV.ckpt", help=f"default DIR/{HelperModels.SV_FILE}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_voice_arguments(parser)
    text = parser.add_argument_group("text")
    text.add_argument("--text", help="what the voice should say")
    installed = parser.add_argument_group("an installed voice (kiosk provision)")
    installed.add_argument("--voice", metavar="ID", help="an installed voice (see kiosk voices)")
    installed.add_argument("--phrase", metavar="PHRASE_ID", help="one of the voice's phrases")
    installed.add_argument(
        "--state",
        metavar="DIR",
        help="state folder (default $KIOSK_STATE_DIR, $STATE_DIRECTORY, /var/lib/kiosk)",
    )
    installed.add_argument("--config-dir", metavar="DIR", help="config folder (unused by say)")
    text.add_argument(
        "--lang",
        choices=LANGUAGE_MODES,
        help="zh: Mandarin with English words; en: English; auto: detect (default: the voice's)",
    )
    text.add_argument("--cut", choices=CUT_METHODS, help="segmentation (default: the voice's)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="OUT.wav", help="write a 16-bit WAV")
    out.add_argument("--play", action="store_true", help="play on the default sound card")
    out.add_argument(
        "--stream",
        action="store_true",
        help="write / play as chunks arrive (first audio after a few tokens)",
    )
    out.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="runtime for the voice (auto: the fastest that works here)",
    )
    out.add_argument(
        "--report-json",
        metavar="FILE",
        help="after speaking, write the timings as JSON (first audio after process start, "
        "its CPU time, real-time factor, backend): what `kiosk bench --boot` reads",
    )
    sampling = parser.add_argument_group("sampling (default: the voice's settings)")
    sampling.add_argument("--seed", type=int)
    sampling.add_argument("--top-k", type=int)
    sampling.add_argument("--top-p", type=float)
    sampling.add_argument("--temperature", type=float)
    sampling.add_argument("--repetition-penalty", type=float)
    sampling.add_argument("--speed", type=float)
    sampling.add_argument("--noise-scale", type=float)
    sampling.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="cap on semantic tokens per segment (25 per second of audio)",
    )


def helpers_from(args: argparse.Namespace) -> HelperModels:
    return HelperModels.in_folder(args.pretrained, hubert=args.hubert, bert=args.bert, sv=args.sv)


def official_files_from(args: argparse.Namespace) -> OfficialFiles:
    missing = [
        flag
        for flag, value in (
            ("--gpt", args.gpt),
            ("--sovits", args.sovits),
            ("--ref", args.ref),
            ("--ref-text", args.ref_text),
        )
        if not value
    ]
    if missing:
        raise SayUsageError(
            f"give {' '.join(missing)} (official files and the reference clip), "
            "or --voice-folder DIR"
        )
    return OfficialFiles(
        gpt=Path(args.gpt),
        sovits=Path(args.sovits),
        reference=Path(args.ref),
        reference_text=args.ref_text,
        reference_language=args.ref_lang,
        lexicon=Path(args.lexicon) if args.lexicon else None,
    )


def export_on_demand(voice: VoiceModels, folder: str | Path, **options: Any) -> Mapping[str, Any]:
    """The build step's ONNX export, handed to the runtime for graphs it is missing.

    Imported on first use: the exporter pulls in onnx and torch.onnx, which a
    voice whose graphs are already built never needs.
    """
    from kiosk_build.export_onnx import export_voice

    return export_voice(voice, folder, **options)


def load_voice(args: argparse.Namespace) -> Voice:
    """The voice the arguments name."""
    helpers = helpers_from(args)
    folder = getattr(args, "voice_folder", None)
    if folder:
        if args.gpt or args.sovits or args.ref:
            raise SayUsageError("give either --voice-folder or --gpt/--sovits/--ref, not both")
        return Voice.load(
            Path(folder), helpers=helpers, backend=args.backend, export=export_on_demand
        )
    files = official_files_from(args)
    defaults = SpeakDefaults(language=args.ref_lang if args.ref_lang != "auto" else "zh")
    return Voice.load(
        files, helpers=helpers, backend=args.backend, defaults=defaults, export=export_on_demand
    )


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    names = ("seed", "top_k", "top_p", "temperature", "repetition_penalty", "speed", "noise_scale")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def load_installed(args: argparse.Namespace) -> tuple[Voice, str, Any, Any, dict[str, Any]]:
    """An installed voice and what to say: (voice, text, segments, features, settings).

    The text policy of the voice's consent is enforced here: a curated voice
    says its listed phrases only, and a voice whose consent has ended says
    nothing until a pack with renewed consent is provisioned.
    """
    import datetime as dt

    from provisioning.health import phrase_input
    from provisioning.provision import box_helpers
    from provisioning.state import State, state_dir

    if args.voice_folder or args.gpt or args.sovits or args.ref:
        raise SayUsageError("give either --voice ID or --voice-folder / --gpt ..., not both")
    if bool(args.text) == bool(args.phrase):
        raise SayUsageError("with --voice, give --phrase PHRASE_ID or --text TEXT (one of them)")
    state = State(state_dir(args.state))
    active = state.active(args.voice)
    details = active.manifest.voice if active is not None else None
    if active is None or details is None:
        raise SayUsageError(
            f"no installed voice {args.voice!r} in {state.root}; see `kiosk voices`, or "
            "install it with `kiosk provision SOURCE`"
        )
    consent = details.consent
    what = f"voice {args.voice} v{active.version}"
    if consent.expired(dt.date.today()):
        raise SayUsageError(
            f"{what} is disabled: its consent ended on {consent.valid_until}; provision a "
            "pack with renewed consent"
        )
    if args.text and consent.text_policy == "curated":
        phrases = ", ".join(p.id for p in details.phrases)
        raise SayUsageError(
            f"{what} is curated: its consent allows only the listed phrases, not free text; "
            f"use --phrase ID ({phrases})"
        )
    helpers = helpers_from(args) if args.bert else box_helpers(state)
    voice = Voice.load(
        active.voice_folder, helpers=helpers, backend=args.backend, export=export_on_demand
    )
    # shown whenever this voice's synthesis plays (the consent's disclosure)
    print(f"{what}: {consent.disclosure.zh} / {consent.disclosure.en}", file=sys.stderr)
    if args.text:
        return voice, args.text, voice.segments(args.text, args.lang, args.cut), None, {}
    try:
        spoken = phrase_input(voice, active.pack, active.manifest, args.phrase)
    except BaseException:
        voice.close()
        raise
    return voice, spoken.phrase.text, spoken.segments, spoken.features, spoken.overrides


def run(args: argparse.Namespace) -> Path | None:
    """Speak `args.text` (or an installed voice's phrase); returns the WAV path (None when
    only played)."""
    if not args.output and not args.play:
        raise SayUsageError("give -o OUT.wav, --play, or both")
    if getattr(args, "voice", None):
        voice, text, segments, features, settings = load_installed(args)
    else:
        if not args.text or getattr(args, "phrase", None):
            raise SayUsageError("give --text TEXT (--phrase needs an installed --voice ID)")
        voice, text, features, settings = load_voice(args), args.text, None, {}
        segments = None
    try:
        options = voice.options(**{**settings, **_overrides(args)})
        if args.max_tokens is not None:
            options = replace(options, max_new_tokens=args.max_tokens)
        if segments is None:
            segments = voice.segments(text, args.lang, args.cut)
        for word in voice.uncovered(segments):
            log.warning("not in any dictionary or the lexicon: %r", word)
        backend, precision = voice.backend, voice.precision  # gone once the voice is closed
        start = time.perf_counter()
        chunks = voice.stream(
            text,
            options=options,
            segments=segments,
            features=features,
            streaming=StreamSettings() if args.stream else None,
        )
        seconds, first, first_cpu = _deliver(chunks, args, start)
    finally:
        voice.close()
    took = time.perf_counter() - start
    report = {
        "first_audio_since_start_s": round(process_age() - (time.perf_counter() - first), 4),
        "first_audio_cpu_s": round(first_cpu, 4),
        "first_audio_after_text_s": round(first - start, 4),
        "audio_s": round(seconds, 4),
        "total_s": round(took, 4),
        "rtf": round(took / max(seconds, 1e-9), 4),
        "backend": backend,
        "precision": precision,
        "stream": bool(args.stream),
    }
    log.info(
        "%.2f s of audio in %.2f s (real-time factor %.2f); first audio %.0f ms after the "
        "text, %.2f s after the process started (%.2f s of CPU time)%s",
        seconds,
        took,
        report["rtf"],
        report["first_audio_after_text_s"] * 1000,
        report["first_audio_since_start_s"],
        first_cpu,
        f" -> {args.output}" if args.output else "",
    )
    if getattr(args, "report_json", None):
        write_report(args.report_json, report)
    return Path(args.output) if args.output else None


def write_report(path: str | Path, report: Mapping[str, Any]) -> Path:
    """The `--report-json` file, written whole or not at all (a reader never sees half)."""
    data = (json.dumps(dict(report), indent=2, ensure_ascii=False) + "\n").encode()
    return atomic_write_bytes(path, data)


def process_age() -> float:
    """Seconds since this process started (from /proc; interpreter start-up included)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter()


def _deliver(
    chunks: Iterator[AudioChunk], args: argparse.Namespace, start: float
) -> tuple[float, float, float]:
    """Write and/or play the chunks; returns (audio seconds, time and CPU time of the
    first chunk)."""
    player = _Player() if args.play else None
    first = start
    first_cpu = 0.0
    samples = 0
    try:
        if args.output and not args.stream:
            samples, first, first_cpu = write_utterance(chunks, Path(args.output), player)
        else:
            writer = WavStreamWriter(args.output) if args.output else None
            try:
                for i, chunk in enumerate(chunks):
                    if i == 0:
                        first, first_cpu = time.perf_counter(), time.process_time()
                    if writer is not None:
                        writer.write(chunk.samples)
                    if player is not None:
                        player.write(chunk.samples)
                    samples += chunk.samples.size
            finally:
                if writer is not None:
                    writer.close()
    finally:
        if player is not None:
            player.close()
    return samples / SAMPLE_RATE, first, first_cpu


def write_utterance(
    chunks: Iterable[AudioChunk], path: Path, player: _Player | None = None
) -> tuple[int, float, float]:
    """Whole segments into a WAV with flat memory, each converted and appended as it comes.

    Returns the sample count and the wall and CPU time of the first chunk.
    """
    first, first_cpu = time.perf_counter(), 0.0
    total = 0
    with WavStreamWriter(path) as out:
        for i, chunk in enumerate(chunks):
            if i == 0:
                first, first_cpu = time.perf_counter(), time.process_time()
            samples = chunk.samples
            out.write(samples)
            if player is not None:
                player.write(samples)
            total += samples.size
    return total, first, first_cpu


class _Player:
    """Raw 16-bit PCM into `aplay` as it arrives; silent (with one log line) without a card."""

    def __init__(self) -> None:
        cards = Path("/proc/asound/cards")
        has_card = cards.is_file() and "no soundcards" not in cards.read_text()
        aplay = shutil.which("aplay")
        self._proc: subprocess.Popen[bytes] | None = None
        if not (has_card and aplay):
            log.warning("no sound card or aplay here: nothing is played")
            return
        self._proc = subprocess.Popen(
            [aplay, "-q", "-t", "raw", "-f", "S16_LE", "-c", "1", "-r", str(SAMPLE_RATE)],
            stdin=subprocess.PIPE,
        )

    def write(self, samples: np.ndarray) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            try:
                self._proc.stdin.write(float_to_pcm16(samples).tobytes())
            except BrokenPipeError:
                log.warning("the player stopped early")
                self._proc = None

    def close(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
            self._proc.wait(timeout=600)


# --- kiosk prepare-voice ---------------------------------------------------------------


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    add_voice_arguments(parser, folder=False)
    parser.add_argument("--id", required=True, help="the voice's id (letters, digits, - _)")
    parser.add_argument("--version", type=int, default=1, help="the voice's version number")
    parser.add_argument("--out", required=True, metavar="DIR", help="the voice folder to write")


def run_prepare(args: argparse.Namespace) -> Path:
    """Official files + reference clip -> a voice folder (prompt precomputed)."""
    files = official_files_from(args)
    voice = Voice.load(files, helpers=helpers_from(args), backend="torch-eager")
    try:
        out = write_voice_folder(
            Path(args.out),
            voice_id=args.id,
            gpt=files.gpt,
            sovits=files.sovits,
            gpt_version=voice.gpt_version,
            sovits_version=voice.sovits_version,
            prompt=voice.prompt,
            reference_text=files.reference_text,
            reference_language=files.reference_language,
            lexicon=files.lexicon,
            version=args.version,
            defaults=voice.defaults,
        )
    finally:
        voice.close()
    log.info("voice folder written: %s (%d files)", out, len(os.listdir(out)))
    return out
