"""`Voice`: one speaker, loaded once, that speaks many phrases and frees its memory on close.

Everything above the engine (the `kiosk` commands, the daemon, the build step,
provisioning) holds `Voice` objects and nothing below them:

    voice = Voice.load("voices/ama")               # a prepared voice folder
    audio = voice.synthesize("欢迎来到博物馆。")     # the whole utterance
    for chunk in voice.stream("这首山歌……"):        # typed chunks as they are made
        sink.write(chunk.samples)
    key = voice.phrase_key("欢迎来到博物馆。")       # for phrase caches
    voice.close()

A voice speaks one utterance at a time: its runtimes hold one KV cache and one
set of I/O buffers, so two utterances at once would corrupt each other.  A
second caller waits for the first (up to `wait_seconds`) and then gets a
`VoiceBusyError`, never mixed audio.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.backends.base import VoiceRuntime
from engines.backends.selection import AUTO, Selection, load_voice_runtime
from engines.features import BertFeaturizer, FeatureModelError, HubertEncoder
from engines.gpt.sampling import SamplingParams
from engines.onnx_graphs.contract import GraphExporter, file_sources, model_sources
from engines.speaker import load_speaker_encoder
from engines.streaming import StreamSettings
from engines.synthesis import SynthesisOptions, VoicePrompt, iter_segment_pieces
from engines.text.frontend import PhoneSegment, TextFrontend
from engines.text.lexicon import Lexicon
from engines.voice_folder import (
    GPT_FILE,
    GRAPHS_DIR,
    LEXICON_FILE,
    PROMPT_FILE,
    SOVITS_FILE,
    SpeakDefaults,
    VoiceConfig,
    VoiceFolderError,
    load_prompt,
    read_config,
)
from engines.voice_models import VoiceModels, load_voice_models
from engines.voice_prompt import BERT_DIM, build_voice_prompt, segment_bert
from engines.wav_io import SAMPLE_RATE, float_to_pcm16

log = logging.getLogger(__name__)

#: How long a second caller waits for the voice by default.
DEFAULT_WAIT_SECONDS = 30.0


class VoiceBusyError(RuntimeError):
    """The voice is speaking another utterance and did not finish in time."""


class VoiceClosedError(RuntimeError):
    """The voice was closed; load it again to speak."""


@dataclass(frozen=True)
class AudioChunk:
    """A piece of an utterance, in order, as soon as it is made."""

    samples: np.ndarray
    """Mono float32 samples, nominally in [-1, 1]."""

    sample_rate: int
    """Samples per second (32 000 for every GPT-SoVITS voice)."""

    segment_index: int
    """Which text segment this piece belongs to (0-based)."""

    is_pause: bool
    """The silence the reference puts after every segment (0.3 s)."""

    is_final: bool
    """The last chunk of the utterance: nothing follows it."""

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass(frozen=True)
class Audio:
    """A whole utterance."""

    samples: np.ndarray
    """Mono float32 samples in [-1, 1] (each segment peak-limited as the reference does)."""

    sample_rate: int
    """Samples per second."""

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate

    def pcm16(self) -> np.ndarray:
        """16-bit samples with the reference's conversion (scale by 32768, truncate)."""
        return float_to_pcm16(self.samples)


@dataclass(frozen=True)
class OfficialFiles:
    """A voice as the official trainer leaves it, plus its reference clip."""

    gpt: Path
    """The GPT weights (`NAME-e15.ckpt`)."""

    sovits: Path
    """The SoVITS weights (`NAME_e8_s200.pth`)."""

    reference: Path
    """The 3-10 s reference clip (WAV)."""

    reference_text: str
    """The words spoken in the reference clip."""

    reference_language: str = "zh"
    """Language mode of the reference text."""

    lexicon: Path | None = None
    """Optional custom pronunciations of this voice."""

    voice_id: str = "voice"
    """Name used in logs and phrase keys."""


@dataclass(frozen=True)
class HelperModels:
    """Where the pretrained helper models are (local folders only; nothing is downloaded)."""

    hubert: Path | None = None
    """chinese-hubert-base folder: needed to compute a prompt from a reference clip."""

    bert: Path | None = None
    """chinese-roberta-wwm-ext-large folder: needed for Mandarin text."""

    sv: Path | None = None
    """ERes2NetV2 speaker-verification checkpoint: v2Pro/v2ProPlus prompts only."""

    HUBERT_FOLDER = "chinese-hubert-base"
    BERT_FOLDER = "chinese-roberta-wwm-ext-large"
    SV_FILE = "sv/pretrained_eres2netv2w24s4ep4.ckpt"

    @classmethod
    def in_folder(
        cls,
        pretrained: str | Path | None,
        *,
        hubert: str | Path | None = None,
        bert: str | Path | None = None,
        sv: str | Path | None = None,
    ) -> HelperModels:
        """The standard layout of a GPT-SoVITS `pretrained_models/` folder, with overrides.

        A standard sub-folder that does not exist is left out (it may not be
        needed); an override that does not exist is an error at load time.
        """
        root = Path(pretrained) if pretrained else None

        def pick(given: str | Path | None, name: str) -> Path | None:
            if given is not None:
                return Path(given)
            if root is not None and (root / name).exists():
                return root / name
            return None

        return cls(
            hubert=pick(hubert, cls.HUBERT_FOLDER),
            bert=pick(bert, cls.BERT_FOLDER),
            sv=pick(sv, cls.SV_FILE),
        )


def _options_from(defaults: SpeakDefaults) -> SynthesisOptions:
    return SynthesisOptions(
        sampling=SamplingParams(
            top_k=defaults.top_k,
            top_p=defaults.top_p,
            temperature=defaults.temperature,
            repetition_penalty=defaults.repetition_penalty,
        ),
        speed=defaults.speed,
        noise_scale=defaults.noise_scale,
        seed=defaults.seed,
        max_tokens_per_phone=defaults.max_tokens_per_phone,
    )


class Voice:
    """One loaded voice.  Make it with `Voice.load`; speak with `synthesize` or `stream`."""

    def __init__(
        self,
        *,
        voice_id: str,
        identity: str,
        runtime: VoiceRuntime,
        selection: Selection | None,
        frontend: TextFrontend,
        prompt: VoicePrompt,
        bert: BertFeaturizer | None,
        zero_bert: bool,
        defaults: SpeakDefaults,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self.voice_id = voice_id
        self.identity = identity
        self.runtime: VoiceRuntime | None = runtime
        self.selection = selection
        self.frontend = frontend
        self.prompt = prompt
        self.bert = bert
        self.zero_bert = zero_bert
        self.defaults = defaults
        self.wait_seconds = wait_seconds
        self.sample_rate = SAMPLE_RATE
        self.gpt_version = runtime.gpt_version
        self.sovits_version = runtime.sovits_version
        self._lock = threading.Lock()

    # --- loading ----------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: str | Path | OfficialFiles,
        *,
        helpers: HelperModels | None = None,
        backend: str = AUTO,
        backend_options: Mapping[str, Any] | None = None,
        defaults: SpeakDefaults | None = None,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        export: GraphExporter | None = None,
    ) -> Voice:
        """A voice from a prepared voice folder, or from official files and a reference clip.

        A voice folder needs no HuBERT or speaker model (its prompt is
        precomputed); Mandarin text still needs BERT (`helpers.bert`) unless the
        folder says otherwise.  `backend` is "auto" (the fastest that works
        here) or one backend name; `backend_options` are handed to it.
        `export` (the build step's exporter) lets a backend export missing
        graphs on demand; without it, missing graphs make that backend unusable
        (auto mode then takes the next one).  From a voice folder, the torch
        models are read only if the chosen backend runs torch or exports.
        """
        helpers = helpers or HelperModels()
        if isinstance(source, OfficialFiles):
            return cls._from_official(
                source, helpers, backend, backend_options, defaults, wait_seconds, export
            )
        return cls._from_folder(
            Path(source), helpers, backend, backend_options, defaults, wait_seconds, export
        )

    @classmethod
    def _from_folder(
        cls,
        folder: Path,
        helpers: HelperModels,
        backend: str,
        backend_options: Mapping[str, Any] | None,
        defaults: SpeakDefaults | None,
        wait_seconds: float,
        export: GraphExporter | None,
    ) -> Voice:
        start = time.perf_counter()
        config = read_config(folder)
        if config.notice:
            log.warning("voice %s: %s", config.id, config.notice)

        def models() -> VoiceModels:
            # Called only by a backend that runs torch, or to export missing graphs.
            loaded = load_voice_models(folder / GPT_FILE, folder / SOVITS_FILE)
            _check_versions(folder, config, loaded.gpt_version, loaded.sovits_version, "files")
            return loaded

        sources = model_sources(
            config.gpt_version,
            config.sovits_version,
            config.gpt_sha256,
            config.sovits_sha256,
            gpt_file=GPT_FILE,
            sovits_file=SOVITS_FILE,
        )
        # The runtime opens its graphs (native code that releases the GIL) on a second
        # core while this thread reads the prompt, BERT and the dictionaries: the three
        # together are most of a box's boot, and none needs the others.
        pool = ThreadPoolExecutor(1, thread_name_prefix=f"load-{config.id}")
        pending = pool.submit(
            load_voice_runtime,
            None,
            backend,
            backend_options,
            models=models,
            sources=sources,
            graphs_dir=folder / GRAPHS_DIR,
            export=export,
        )
        pool.shutdown(wait=False)  # the one job runs on; nothing waits for the pool itself
        try:
            prompt = load_prompt(folder / PROMPT_FILE)
            lexicon = Lexicon.from_file(folder / LEXICON_FILE) if config.lexicon else None
            frontend = TextFrontend("v1" if config.sovits_version == "v1" else "v2", lexicon)
            zero_bert = config.text_features == "zeros"
            bert = None if zero_bert else _load_bert(helpers.bert)
            if bert is None and not zero_bert:
                # Curated phrases carry their features and English needs none, so the
                # voice loads; say now, not at the first Mandarin sentence, what is missing.
                log.warning(
                    "voice %s: no BERT model (%s folder): Mandarin text it has no stored "
                    "features for will be refused; to speak it, give the folder (--bert DIR "
                    "or --pretrained DIR) or install the BERT base pack on the box",
                    config.id,
                    HelperModels.BERT_FOLDER,
                )
            # The voice's own language only: its first sentence needs nothing else
            # (`warm()` loads the rest before a daemon serves visitors).
            _warm_quietly(frontend, config.defaults.language)
        except BaseException:
            # Report at once (a bad BERT folder must not wait for a graph export); the
            # runtime, when it is done, is closed by whoever finishes it.
            pending.add_done_callback(_close_quietly)
            raise
        ready = time.perf_counter()
        runtime, selection = pending.result()
        log.debug(
            "voice %s: prompt, BERT and dictionaries in %.2f s, then %.2f s waiting for "
            "the runtime",
            config.id,
            ready - start,
            time.perf_counter() - ready,
        )
        _check_versions(folder, config, runtime.gpt_version, runtime.sovits_version, "runtime")
        identity = f"{config.id}:v{config.version}:{config.gpt_sha256}:{config.sovits_sha256}"
        voice = cls(
            voice_id=config.id,
            identity=hashlib.sha256(f"{identity}:{config.prompt_sha256}".encode()).hexdigest(),
            runtime=runtime,
            selection=selection,
            frontend=frontend,
            prompt=prompt,
            bert=bert,
            zero_bert=zero_bert,
            defaults=defaults or config.defaults,
            wait_seconds=wait_seconds,
        )
        voice._log_loaded(time.perf_counter() - start)
        return voice

    @classmethod
    def _from_official(
        cls,
        files: OfficialFiles,
        helpers: HelperModels,
        backend: str,
        backend_options: Mapping[str, Any] | None,
        defaults: SpeakDefaults | None,
        wait_seconds: float,
        export: GraphExporter | None,
    ) -> Voice:
        start = time.perf_counter()
        models = load_voice_models(files.gpt, files.sovits)
        lexicon = Lexicon.from_file(files.lexicon) if files.lexicon else None
        frontend = TextFrontend(models.symbols_version, lexicon)
        if helpers.hubert is None:
            raise FeatureModelError(
                "computing a prompt from a reference clip needs HuBERT: give the "
                f"{HelperModels.HUBERT_FOLDER} folder (--hubert DIR or --pretrained DIR)"
            )
        hubert = HubertEncoder.from_folder(helpers.hubert)
        bert = _load_bert(helpers.bert)
        speaker = None
        if models.sovits.cfg.uses_sv_embedding:
            speaker = load_speaker_encoder(helpers.sv) if helpers.sv else None
        prompt = build_voice_prompt(
            models,
            frontend,
            files.reference,
            files.reference_text,
            files.reference_language,
            hubert,
            bert,
            speaker,
        )
        del hubert, speaker  # the prompt is all the voice needs of them
        sources = file_sources(files.gpt, files.sovits, models.gpt_version, models.sovits_version)
        runtime, selection = load_voice_runtime(
            models, backend, backend_options, sources=sources, export=export
        )
        digest = hashlib.sha256()
        for path in (files.gpt, files.sovits, files.reference):
            digest.update(Path(path).read_bytes())
        digest.update(files.reference_text.encode())
        if files.lexicon:
            digest.update(Path(files.lexicon).read_bytes())
        voice = cls(
            voice_id=files.voice_id,
            identity=digest.hexdigest(),
            runtime=runtime,
            selection=selection,
            frontend=frontend,
            prompt=prompt,
            bert=bert,
            zero_bert=False,
            defaults=defaults or SpeakDefaults(language=files.reference_language),
            wait_seconds=wait_seconds,
        )
        voice._log_loaded(time.perf_counter() - start)
        return voice

    def warm(self, runtime: bool = True) -> float:
        """Pay the one-time costs now, not on a visitor's first press; returns seconds.

        The text frontend loads its dictionaries on first use (seconds); with
        `runtime`, one short utterance is synthesised and dropped, so the
        backend's first-run allocations and kernel choices happen here too.
        """
        start = time.perf_counter()
        _warm_frontend(self.frontend)
        if runtime:
            warm_options = replace(self.options(), max_new_tokens=8)
            for _ in self.stream("你好。", language="zh", options=warm_options):
                pass
        took = time.perf_counter() - start
        log.info("voice %s warmed in %.1f s", self.voice_id, took)
        return took

    def _log_loaded(self, seconds: float) -> None:
        runtime = self._runtime()
        reason = f" ({self.selection.reason})" if self.selection else ""
        log.info(
            "voice %s loaded in %.1f s: GPT %s, SoVITS %s, backend %s%s",
            self.voice_id,
            seconds,
            runtime.gpt_version,
            runtime.sovits_version,
            runtime.backend,
            reason,
        )
        gc.collect()  # whatever the loading left behind (the runtime keeps what it runs on)

    # --- speaking -----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self._runtime().backend

    @property
    def precision(self) -> str:
        """What the GPT decode runs in (e.g. fp32, int8, fp16), for logs and cache keys."""
        return str(getattr(self._runtime().gpt, "precision", "fp32"))

    def options(self, **overrides: Any) -> SynthesisOptions:
        """The voice's default settings with some changed (keys of `SpeakDefaults`; the
        language and cut are arguments of `synthesize`/`stream` instead)."""
        allowed = set(asdict(self.defaults)) - {"language", "cut"}
        unknown = set(overrides) - allowed
        if unknown:
            raise ValueError(
                f"unknown setting(s): {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(sorted(allowed))}"
            )
        return _options_from(replace(self.defaults, **overrides))

    def segments(
        self, text: str, language: str | None = None, cut: str | None = None
    ) -> list[PhoneSegment]:
        """The text as the voice will say it (raises TextFrontendError for unspeakable text)."""
        return self.frontend.segments(
            text, language or self.defaults.language, cut or self.defaults.cut
        )

    def uncovered(self, segments: list[PhoneSegment]) -> list[str]:
        """Words of the segments no dictionary or lexicon covers (from the same g2p pass)."""
        return list(dict.fromkeys(w for s in segments for w in s.uncovered))

    def phrase_key(
        self,
        text: str,
        *,
        language: str | None = None,
        cut: str | None = None,
        options: SynthesisOptions | None = None,
    ) -> str:
        """A cache key: the same key means the same samples.

        It covers the voice's identity (model files, prompt, version), the
        normalised text of every segment and its phones, language, cut, every
        setting that changes the samples, and the backend and precision.
        """
        language = language or self.defaults.language
        cut = cut or self.defaults.cut
        options = options or _options_from(self.defaults)
        segments = self.segments(text, language, cut)
        record = {
            "voice": self.identity,
            "text": [[s.norm_text, s.phone_ids] for s in segments],
            "language": language,
            "cut": cut,
            "options": asdict(options),
            "backend": self.backend,
            "precision": self.precision,
        }
        blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def stream(
        self,
        text: str,
        *,
        language: str | None = None,
        cut: str | None = None,
        options: SynthesisOptions | None = None,
        streaming: StreamSettings | None = StreamSettings(),  # noqa: B008 - frozen
        segments: list[PhoneSegment] | None = None,
        features: Sequence[torch.Tensor] | None = None,
    ) -> Iterator[AudioChunk]:
        """The utterance as typed chunks, the first after a few tokens (with `streaming`).

        The voice is held from the first chunk until the generator is exhausted
        or closed.  Pass `segments` from `segments()` to skip a second g2p pass,
        and `features` (BERT features `[1024, phones]` per segment, e.g. a curated
        phrase's, computed when its pack was made) to need no BERT here.
        """
        if segments is None:
            segments = self.segments(text, language, cut)
        if features is not None:
            _check_features(segments, features)
        options = options or _options_from(self.defaults)
        return self._chunks(segments, options, streaming, features)

    def _chunks(
        self,
        segments: list[PhoneSegment],
        options: SynthesisOptions,
        streaming: StreamSettings | None,
        features: Sequence[torch.Tensor] | None,
    ) -> Iterator[AudioChunk]:
        with self._held():
            runtime = self._runtime()
            inputs = [
                (
                    torch.tensor(s.phone_ids, dtype=torch.long),
                    features[i].float() if features is not None else self._segment_bert(s),
                )
                for i, s in enumerate(segments)
            ]
            last = len(segments) - 1
            for index, is_pause, samples in iter_segment_pieces(
                runtime, self.prompt, inputs, options, streaming
            ):
                # Every segment ends with its pause, so the last segment's pause is the
                # last chunk: no chunk is held back to find out.
                final = is_pause and index == last
                yield AudioChunk(samples, self.sample_rate, index, is_pause, final)

    def synthesize(
        self,
        text: str,
        *,
        language: str | None = None,
        cut: str | None = None,
        options: SynthesisOptions | None = None,
        segments: list[PhoneSegment] | None = None,
        features: Sequence[torch.Tensor] | None = None,
    ) -> Audio:
        """The whole utterance at once (each segment decoded whole, as the reference does)."""
        pieces = [
            c.samples
            for c in self.stream(
                text, language=language, cut=cut, options=options, streaming=None,
                segments=segments,
                features=features,
            )
        ]  # fmt: skip
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return Audio(samples, self.sample_rate)

    def _segment_bert(self, segment: PhoneSegment) -> torch.Tensor:
        if self.zero_bert:
            return torch.zeros(BERT_DIM, len(segment.phone_ids))
        return segment_bert(segment, self.bert)

    # --- the one-utterance rule, and closing ------------------------------------------

    def _runtime(self) -> VoiceRuntime:
        if self.runtime is None:
            raise VoiceClosedError(f"voice {self.voice_id} is closed; load it again to speak")
        return self.runtime

    def _held(self) -> _Held:
        return _Held(self)

    def close(self) -> None:
        """Free the runtimes, the torch models and GPU memory.  Safe to call twice."""
        if not self._lock.acquire(timeout=self.wait_seconds):
            raise VoiceBusyError(f"voice {self.voice_id} is still speaking; stop it first")
        try:
            runtime, self.runtime = self.runtime, None
            close = getattr(runtime, "close", None)
            if callable(close):
                close()
            del runtime
            self.bert = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            release_heap()
        finally:
            self._lock.release()

    def __enter__(self) -> Voice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Held:
    """Holds a voice's lock for one utterance (a second caller waits, then fails clearly)."""

    def __init__(self, voice: Voice) -> None:
        self.voice = voice

    def __enter__(self) -> None:
        voice = self.voice
        if not voice._lock.acquire(timeout=voice.wait_seconds):
            raise VoiceBusyError(
                f"voice {voice.voice_id} is busy with another utterance for more than "
                f"{voice.wait_seconds:.0f} s"
            )
        if voice.runtime is None:
            voice._lock.release()
            raise VoiceClosedError(f"voice {voice.voice_id} is closed; load it again to speak")

    def __exit__(self, *exc: object) -> None:
        self.voice._lock.release()


def _check_versions(folder: Path, config: VoiceConfig, gpt: str, sovits: str, what: str) -> None:
    """The models (or their graphs) must be the versions `voice.json` names."""
    if (gpt, sovits) != (config.gpt_version, config.sovits_version):
        raise VoiceFolderError(
            f"{folder}: voice.json says GPT {config.gpt_version} / SoVITS "
            f"{config.sovits_version}, the {what} has {gpt} / {sovits}; install the voice again"
        )


def _check_features(segments: list[PhoneSegment], features: Sequence[torch.Tensor]) -> None:
    """Precomputed features must fit the segments this voice reads from the text."""
    if len(features) != len(segments):
        raise ValueError(
            f"{len(features)} precomputed feature blocks for {len(segments)} segments: "
            "the text is read differently than when the features were made; rebuild the pack"
        )
    for i, (segment, block) in enumerate(zip(segments, features, strict=True)):
        if tuple(block.shape) != (BERT_DIM, len(segment.phone_ids)):
            raise ValueError(
                f"segment {i}: precomputed features are {tuple(block.shape)}, the text reads "
                f"as {len(segment.phone_ids)} phones; rebuild the pack"
            )


#: One short sentence per language mode, enough to load its dictionaries.
WARM_TEXTS = {"zh": "你好，欢迎。", "en": "Hello."}


def _warm_frontend(frontend: TextFrontend, languages: Sequence[str] = tuple(WARM_TEXTS)) -> None:
    """Run the g2p once per language, so its dictionaries are loaded (seconds each)."""
    for language in languages:
        text = WARM_TEXTS.get(language.replace("all_", ""))
        if text is not None:
            frontend.segments(text, language, "cut0")


def _warm_quietly(frontend: TextFrontend, language: str) -> None:
    """Warm one language (all for mixed modes); a failure shows up, with its message, on use."""
    languages = (language,) if language.replace("all_", "") in WARM_TEXTS else tuple(WARM_TEXTS)
    try:
        _warm_frontend(frontend, languages)
    except Exception:
        log.debug("frontend warm-up failed", exc_info=True)


def _close_quietly(pending: Future[tuple[VoiceRuntime, Selection | None]]) -> None:
    """Free a runtime that finished loading for a voice that failed to load."""
    if pending.cancelled() or pending.exception() is not None:
        return  # the first error is the one to report
    runtime, _ = pending.result()
    close = getattr(runtime, "close", None)
    if callable(close):
        close()


def release_heap() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise).

    Model weights are thousands of separate allocations below glibc's mmap
    threshold, so after `close()` the process would keep ~1 GB per voice that
    it no longer uses; a daemon that reloads voices for months must not.
    """
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return
    trim(0)


def _load_bert(path: Path | None) -> BertFeaturizer | None:
    return BertFeaturizer.from_folder(path) if path is not None else None
