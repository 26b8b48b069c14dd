"""`kiosk say`: one voice's official files + a reference clip + text -> a 32 kHz WAV.

This is the whole offline pipeline a technician can run by hand to hear a
voice before it is packed: official model files, the pretrained helper models
from local folders, the text frontend with the voice's lexicon, segment-by-
segment synthesis written to the WAV as it is produced.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from engines.gpt.sampling import SamplingParams
from engines.text.language_split import LANGUAGE_MODES
from engines.text.segmentation import CUT_METHODS

log = logging.getLogger(__name__)

#: Standard sub-folders of the pretrained-models folder (as GPT-SoVITS names them).
HUBERT_FOLDER = "chinese-hubert-base"
BERT_FOLDER = "chinese-roberta-wwm-ext-large"
SV_FILE = "sv/pretrained_eres2netv2w24s4ep4.ckpt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    voice = parser.add_argument_group("voice")
    voice.add_argument("--gpt", required=True, metavar="G.ckpt", help="GPT weights (.ckpt)")
    voice.add_argument("--sovits", required=True, metavar="S.pth", help="SoVITS weights (.pth)")
    voice.add_argument("--ref", required=True, metavar="REF.wav", help="reference clip, 3-10 s")
    voice.add_argument("--ref-text", required=True, help="the words spoken in the clip")
    voice.add_argument("--ref-lang", default="zh", choices=LANGUAGE_MODES)
    voice.add_argument("--lexicon", metavar="FILE", help="custom pronunciations of this voice")
    text = parser.add_argument_group("text")
    text.add_argument("--text", required=True, help="what the voice should say")
    text.add_argument(
        "--lang",
        default="zh",
        choices=LANGUAGE_MODES,
        help="zh: Mandarin with English words; en: English; auto: detect",
    )
    text.add_argument("--cut", default="cut1", choices=CUT_METHODS, help="segmentation method")
    text.add_argument("-o", "--output", required=True, metavar="OUT.wav")
    text.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch-eager", "onnxruntime", "torch-cuda", "tensorrt"),
        help="runtime for the voice (auto: the fastest that works here)",
    )
    models = parser.add_argument_group("pretrained helper models (local folders only)")
    models.add_argument(
        "--pretrained",
        default="pretrained_models",
        metavar="DIR",
        help=f"folder holding {HUBERT_FOLDER}/, {BERT_FOLDER}/ and {SV_FILE}",
    )
    models.add_argument("--hubert", metavar="DIR", help=f"default: DIR/{HUBERT_FOLDER}")
    models.add_argument("--bert", metavar="DIR", help=f"default: DIR/{BERT_FOLDER}")
    models.add_argument("--sv", metavar="SV.ckpt", help=f"v2Pro/Plus only; default DIR/{SV_FILE}")
    sampling = parser.add_argument_group("sampling")
    defaults = SamplingParams()
    sampling.add_argument("--seed", type=int, default=0)
    sampling.add_argument("--top-k", type=int, default=defaults.top_k)
    sampling.add_argument("--top-p", type=float, default=defaults.top_p)
    sampling.add_argument("--temperature", type=float, default=defaults.temperature)
    sampling.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    sampling.add_argument("--speed", type=float, default=1.0)
    sampling.add_argument("--noise-scale", type=float, default=0.5)
    sampling.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="cap on semantic tokens per segment (25 per second of audio)",
    )


def run(args: argparse.Namespace) -> Path:
    """Synthesise `args.text`; returns the WAV path."""
    # Heavy imports (transformers, dictionaries) only when a voice is really loaded.
    from engines.backends.selection import load_voice_runtime
    from engines.features import BertFeaturizer, HubertEncoder
    from engines.speaker import load_speaker_encoder
    from engines.synthesis import SynthesisOptions
    from engines.text.frontend import TextFrontend
    from engines.text.lexicon import Lexicon
    from engines.text_to_speech import TextToSpeech
    from engines.voice_models import load_voice_models
    from engines.voice_prompt import build_voice_prompt
    from engines.wav_io import SAMPLE_RATE, WavStreamWriter

    options = SynthesisOptions(
        sampling=SamplingParams(
            top_k=args.top_k,
            top_p=args.top_p,
            temperature=args.temperature,
            repetition_penalty=args.repetition_penalty,
        ),
        speed=args.speed,
        noise_scale=args.noise_scale,
        seed=args.seed,
        max_new_tokens=args.max_tokens,
    )
    pretrained = Path(args.pretrained)
    start = time.perf_counter()
    voice = load_voice_models(args.gpt, args.sovits)
    lexicon = Lexicon.from_file(args.lexicon) if args.lexicon else None
    frontend = TextFrontend(voice.symbols_version, lexicon)
    hubert = HubertEncoder.from_folder(args.hubert or pretrained / HUBERT_FOLDER)
    bert_dir = Path(args.bert) if args.bert else pretrained / BERT_FOLDER
    needs_bert = args.bert is not None or bert_dir.is_dir()
    bert = BertFeaturizer.from_folder(bert_dir) if needs_bert else None
    speaker = None
    if voice.sovits.cfg.uses_sv_embedding:
        speaker = load_speaker_encoder(args.sv or pretrained / SV_FILE)
    log.info(
        "models loaded in %.1f s (GPT %s, SoVITS %s)",
        time.perf_counter() - start,
        voice.gpt_version,
        voice.sovits_version,
    )
    for item in frontend.uncovered(args.text, args.lang):
        log.warning("not in any dictionary or the lexicon: %r", item)
    prompt = build_voice_prompt(
        voice, frontend, args.ref, args.ref_text, args.ref_lang, hubert, bert, speaker
    )
    runtime, selection = load_voice_runtime(voice, args.backend)
    log.info("backend: %s (%s)", runtime.backend, selection.reason)
    tts = TextToSpeech(runtime, frontend, prompt, bert)
    start = time.perf_counter()
    with WavStreamWriter(args.output) as out:
        for audio in tts.stream(args.text, args.lang, args.cut, options):
            out.write(audio)
    seconds = out.samples / SAMPLE_RATE
    took = time.perf_counter() - start
    log.info(
        "%.2f s of audio in %.2f s (real-time factor %.2f) -> %s",
        seconds,
        took,
        took / max(seconds, 1e-9),
        args.output,
    )
    return Path(args.output)
