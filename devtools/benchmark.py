"""`kiosk bench`: every available backend side by side with torch eager, in one run.

Workloads are fixed so runs compare: full-size GPT v2 with SoVITS v2 or
v2ProPlus, formula weights, and a fixed number of new tokens (EOS is held off,
so an untrained model cannot end a run early):

    short: 30 reference + 20 target phones, 75 prompt tokens,  50 new tokens (2 s)
    long:  30 reference + 120 target phones, 75 prompt tokens, 300 new tokens (12 s)
    voice: a sentence through `engines.Voice` on the demo voice folder, with the
           settings and caps `kiosk say` uses (the voice's defaults, the loop's
           1 500-token cap, its per-phone cap, EOS allowed): what a visitor waits for

Each (model, backend) runs in its own child process, so its peak memory is its
own.  Figures are medians over repeats; ratios against torch eager are taken
from the same run, because the machines are noisy.  With `contended=True` each
child runs twice, idle and then with a separate busy-loop process holding one
core (as the kiosk's browser does), and `format_contention` sets the two
real-time factors side by side.  Every record carries the 1-minute load
average at its start, so a noisy figure shows as one.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devtools.formula_weights import formula_state_dict, named_rng
from engines.backends.base import Backend, VoiceRuntime
from engines.backends.selection import BACKEND_ORDER, DEFAULT_FACTORIES
from engines.gpt.config import GPTConfig
from engines.gpt.decoding import generate
from engines.gpt.model import Text2SemanticModel
from engines.gpt.sampling import SamplingParams
from engines.sovits.spectrogram import reference_spectrogram
from engines.sovits.synthesizer import SoVITSModel
from engines.streaming import StreamSettings, stream_tokens_to_audio, supports_windows
from engines.threads import THREADS_ENV, configure_torch, cpu_budget
from engines.voice_models import VoiceModels

BENCH_SEED = 7
BENCH_MODELS = ("v2", "v2ProPlus")
RECORD_KEYS = (
    "model",
    "backend",
    "workload",
    "prefill_ms",
    "decode_ms_per_token",
    "tokens_per_s",
    "sovits_ms_per_audio_s",
    "rtf",
    "first_audio_ms",
    "total_ms",
    "peak_rss_mb",
    "cpu_load",
    "load_avg",
)
#: `cpu_load` values: nothing else of ours running, or one core held by a busy loop.
IDLE, CONTENDED = "idle", "contended"
#: Contended/idle RTF a CPU backend may reach (the kiosk shares its CPU with a browser).
CONTENTION_TARGET = 2.2


@dataclass(frozen=True)
class Workload:
    ref_phones: int
    target_phones: int
    prompt_tokens: int
    new_tokens: int

    @property
    def audio_seconds(self) -> float:
        return self.new_tokens / 25.0


WORKLOADS = {
    "short": Workload(30, 20, 75, 50),
    "long": Workload(30, 120, 75, 300),
}
#: The `engines.Voice` workload (not a fixed token count: the voice decides).
VOICE_WORKLOAD = "voice"
VOICE_SENTENCE = "这首山歌是外婆年轻的时候在田里唱的。"


def backend_by_name(name: str, options: dict[str, Any] | None = None) -> Backend:
    """The backend object for a name (modules imported lazily: GPU stacks may be absent)."""
    if name in BENCH_VARIANTS:
        name, options = BENCH_VARIANTS[name][0], {**BENCH_VARIANTS[name][1], **(options or {})}
    if name not in DEFAULT_FACTORIES:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_NAMES)}")
    options = dict(options or {})
    if name == "onnxruntime":  # formula voices have no graphs yet: export on demand
        from kiosk_build.export_onnx import export_voice

        options["onnxruntime"] = {"export": export_voice, **options.get("onnxruntime", {})}
    return DEFAULT_FACTORIES[name](options)


#: Bench-only variants: (backend, options).  "onnxruntime" runs as a kiosk
#: would, with 8-bit GPT weights where the build's greedy-token check passed;
#: these pin the GPT precision so both figures appear side by side.
BENCH_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "onnxruntime-fp32": ("onnxruntime", {"onnxruntime": {"gpt_precision": "fp32"}}),
    "onnxruntime-int8": ("onnxruntime", {"onnxruntime": {"gpt_precision": "int8"}}),
}
#: Bench order: the reference first, so every other figure can be read against it.
BACKEND_NAMES = (
    "torch-eager",
    *(n for n in BACKEND_ORDER if n != "torch-eager"),
    *BENCH_VARIANTS,
)


def available_backends() -> list[tuple[str, bool, str]]:
    """(name, available, reason) for every backend the project knows."""
    found = []
    for name in BACKEND_NAMES:
        try:
            ok, why = backend_by_name(name).availability()
        except ImportError as exc:
            ok, why = False, f"not installed ({exc})"
        found.append((name, ok, why))
    return found


def formula_voice(sovits_version: str, seed: int = BENCH_SEED) -> VoiceModels:
    """Full-size GPT v2 + SoVITS `sovits_version` with formula weights."""
    gpt = Text2SemanticModel(GPTConfig.for_version("v2")).eval()
    gpt.load_official_state_dict(
        formula_state_dict({f"model.{k}": v.shape for k, v in gpt.state_dict().items()}, seed)
    )
    sovits = SoVITSModel.for_version(sovits_version).eval()
    sovits.load_official_state_dict(
        formula_state_dict({k: v.shape for k, v in sovits.state_dict().items()}, seed)
    )
    return VoiceModels(gpt, sovits, "v2", sovits_version)


def _inputs(workload: Workload, sovits: SoVITSModel, seed: int) -> dict[str, Any]:
    rng = named_rng(seed, "bench.inputs")
    phones = workload.ref_phones + workload.target_phones
    t = np.arange(32000 * 4) / 32000
    clip = (
        0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
        + 0.02 * rng.standard_normal(t.size)
    ).astype(np.float32)
    spec = reference_spectrogram(torch.from_numpy(clip)[None])
    sv = torch.from_numpy(rng.standard_normal((1, 20480)).astype(np.float32))
    with torch.inference_mode():
        timbre = sovits.timbre(spec, sv if sovits.cfg.uses_sv_embedding else None)
    return {
        "phones": torch.from_numpy(rng.integers(100, 300, phones)).long()[None],
        "bert": torch.from_numpy(rng.standard_normal((1, 1024, phones)).astype(np.float32)),
        "prompt": torch.from_numpy(rng.integers(0, 1024, workload.prompt_tokens)).long()[None],
        "target": torch.from_numpy(rng.integers(100, 300, workload.target_phones)).long()[None],
        "timbre": timbre,
    }


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@torch.inference_mode()
def measure(
    runtime: VoiceRuntime, voice: VoiceModels, name: str, workload: Workload, repeats: int
) -> dict[str, Any]:
    """One record: prefill, decode, SoVITS, streaming first audio and totals."""
    load_avg = _load_avg()
    data = _inputs(workload, voice.sovits, BENCH_SEED)
    params = SamplingParams()
    prefix = data["phones"].shape[1] + workload.prompt_tokens
    n = workload.new_tokens

    def prefill() -> None:
        runtime.gpt.session(prefix + n).prefill(data["phones"], data["bert"], data["prompt"])

    def decode() -> torch.Tensor:
        return generate(
            runtime.gpt,
            data["phones"],
            data["bert"],
            data["prompt"],
            params,
            torch.Generator().manual_seed(0),
            max_new_tokens=n,
            min_new_tokens=n,
        ).tokens

    tokens = decode()  # warm-up, and the codes for SoVITS
    assert tokens.numel() == n, "EOS must not end a benchmark run"
    codes = tokens.view(1, 1, -1)

    def vocode() -> None:
        runtime.sovits.decode(
            codes,
            data["target"],
            data["timbre"],
            noise_scale=0.5,
            generator=torch.Generator().manual_seed(0),
        )

    def first_audio() -> None:
        chunks = stream_tokens_to_audio(
            runtime.gpt,
            _stage_model(runtime, voice),
            data["phones"],
            data["bert"],
            data["prompt"],
            data["target"],
            data["timbre"],
            params,
            torch.Generator().manual_seed(0),
            0.5,
            max_new_tokens=n,
            min_new_tokens=n,
            settings=StreamSettings(),
        )
        next(chunks)
        chunks.close()

    prefill_ms = _median_ms(prefill, repeats)
    generate_ms = _median_ms(decode, repeats)
    vocode()
    sovits_ms = _median_ms(vocode, repeats)
    first_ms = _median_ms(first_audio, repeats)
    decode_per_token = max(generate_ms - prefill_ms, 0.0) / max(n - 1, 1)
    total = generate_ms + sovits_ms
    return {
        "model": voice.sovits_version,
        "backend": name,
        "workload": "",
        "prefill_ms": round(prefill_ms, 2),
        "decode_ms_per_token": round(decode_per_token, 3),
        "tokens_per_s": round(1000.0 / decode_per_token, 1) if decode_per_token else None,
        "sovits_ms_per_audio_s": round(sovits_ms / workload.audio_seconds, 2),
        "rtf": round(total / 1000.0 / workload.audio_seconds, 4),
        "first_audio_ms": round(first_ms, 1),
        "total_ms": round(total, 1),
        "peak_rss_mb": None,
        "cpu_load": IDLE,
        "load_avg": load_avg,
    }


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


#: Sentences for the text-to-first-audio path (10 and 60 characters).
TEXT_SENTENCES = {
    "text-10-chars": "欢迎来到民俗博物馆。",
    "text-60-chars": (
        "这首山歌是外婆年轻的时候在田里干活时唱的，她说每到春天插秧的季节，"
        "全村的人都会一起唱歌，声音传得很远很远。"
    ),
}


def random_bert_folder(folder: Path) -> Path:
    """A chinese-roberta-wwm-ext-large sized BERT with random weights (for timing only)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "，", "。", "！", "？"]
    vocab += [chr(c) for c in range(0x4E00, 0x9FA6)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
    )
    torch.manual_seed(BENCH_SEED)
    BertModel(config).save_pretrained(folder)
    return folder


@torch.inference_mode()
def measure_text(
    runtime: VoiceRuntime,
    voice: VoiceModels,
    name: str,
    bert: Any,
    label: str,
    text: str,
    repeats: int,
) -> dict[str, Any]:
    """Text to the first streamed chunk: frontend, BERT, GPT, first SoVITS chunk."""
    from engines.text.frontend import TextFrontend
    from engines.voice_prompt import segment_bert

    frontend = TextFrontend("v2")
    data = _inputs(WORKLOADS["short"], voice.sovits, BENCH_SEED)
    ref_phones, ref_bert = data["phones"][:, :30], data["bert"][:, :, :30]

    def first_audio() -> None:
        segment = frontend.segments(text, "zh", "cut1")[0]
        ids = torch.tensor(segment.phone_ids, dtype=torch.long)[None]
        feats = segment_bert(segment, bert)[None]
        chunks = stream_tokens_to_audio(
            runtime.gpt,
            _stage_model(runtime, voice),
            torch.cat([ref_phones, ids], dim=1),
            torch.cat([ref_bert, feats], dim=2),
            data["prompt"],
            ids,
            data["timbre"],
            SamplingParams(),
            torch.Generator().manual_seed(0),
            0.5,
            max_new_tokens=200,
            min_new_tokens=200,
            settings=StreamSettings(),
        )
        next(chunks)
        chunks.close()

    first_audio()  # warm-up (jieba dictionary, BERT)
    record = dict.fromkeys(RECORD_KEYS)
    record.update(
        model=voice.sovits_version,
        backend=name,
        workload=label,
        cpu_load=IDLE,
        load_avg=_load_avg(),
        first_audio_ms=round(_median_ms(first_audio, repeats), 1),
    )
    return record


def measure_voice(name: str, voice_dir: str | Path, repeats: int) -> dict[str, Any]:
    """`VOICE_SENTENCE` through `engines.Voice` on backend `name`, as `kiosk say` runs it.

    The demo voice folder (written once into `voice_dir`, ONNX graphs exported
    into it on first use) with the voice's own settings and caps; RTF is the
    median whole-utterance time over the audio it made, first audio the
    median time to the first streamed chunk.
    """
    from appliance.say import export_on_demand
    from devtools.demo_voice import write_demo_voice_folder
    from engines.voice import Voice

    base, options = BENCH_VARIANTS.get(name, (name, {}))
    folder = write_demo_voice_folder(Path(voice_dir))
    load_avg = _load_avg()
    with Voice.load(
        folder, backend=base, backend_options=options or None, export=export_on_demand
    ) as voice:
        settings = voice.options()  # the voice's defaults, as `kiosk say` without flags
        segments = voice.segments(VOICE_SENTENCE)
        # Warm-up; the voice's seed fixes the length, so every repeat makes this much audio.
        seconds = voice.synthesize(VOICE_SENTENCE, options=settings, segments=segments).seconds

        def whole() -> None:
            voice.synthesize(VOICE_SENTENCE, options=settings, segments=segments)

        def first_chunk() -> None:
            chunks = voice.stream(VOICE_SENTENCE, options=settings, segments=segments)
            next(chunks)
            chunks.close()

        total_ms = _median_ms(whole, repeats)
        first_ms = _median_ms(first_chunk, repeats)
        model = voice.sovits_version
    record = dict.fromkeys(RECORD_KEYS)
    record.update(
        model=model,
        backend=name,
        workload=VOICE_WORKLOAD,
        rtf=round(total_ms / 1000.0 / max(seconds, 1e-9), 4),
        first_audio_ms=round(first_ms, 1),
        total_ms=round(total_ms, 1),
        cpu_load=IDLE,
        load_avg=load_avg,
    )
    return record


def _stage_model(runtime: VoiceRuntime, voice: VoiceModels) -> Any:
    """The windowed SoVITS the chunked vocoder runs: the backend's own when it has one
    (all of ours do), else the torch model."""
    return runtime.sovits if supports_windows(runtime.sovits) else voice.sovits


def _child(
    model: str,
    backend: str,
    workloads: Sequence[str],
    repeats: int,
    threads: int | None,
    bert_dir: str | None,
    voice_dir: str | None,
    out: Any,
) -> None:
    try:
        if threads:  # torch and ONNX Runtime alike
            os.environ[THREADS_ENV] = str(threads)
        configure_torch()
        records = []
        if voice_dir and VOICE_WORKLOAD in workloads:
            records.append(measure_voice(backend, voice_dir, repeats))
        fixed = [w for w in workloads if w in WORKLOADS]
        voice = formula_voice(model) if fixed or bert_dir else None
        runtime = backend_by_name(backend).load(voice) if voice is not None else None
        for name in fixed:
            assert voice is not None and runtime is not None
            record = measure(runtime, voice, backend, WORKLOADS[name], repeats)
            record["workload"] = name
            records.append(record)
        if bert_dir and voice is not None and runtime is not None:
            from engines.features import BertFeaturizer

            bert = BertFeaturizer.from_folder(bert_dir)
            for label, text in TEXT_SENTENCES.items():
                records.append(measure_text(runtime, voice, backend, bert, label, text, repeats))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        for record in records:
            record["peak_rss_mb"] = round(peak, 1)
        out.put(("ok", records))
    except Exception as exc:  # reported by the parent
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def run_isolated(
    model: str,
    backend: str,
    workloads: Sequence[str],
    repeats: int,
    threads: int | None,
    bert_dir: str | None = None,
    voice_dir: str | None = None,
    *,
    contended: bool = False,
) -> list[dict[str, Any]]:
    """Measure one (model, backend) in a fresh process; raises RuntimeError on failure.

    `contended`: while a busy-loop process holds one core (`busy_core`).
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(
        target=_child,
        args=(model, backend, workloads, repeats, threads, bert_dir, voice_dir, out),
    )
    with busy_core() if contended else contextlib.nullcontext():
        proc.start()
        status, payload = _result(proc, out)
        proc.join()
    if status != "ok":
        raise RuntimeError(payload)
    for record in payload:
        record["cpu_load"] = CONTENDED if contended else IDLE
    return payload


def _result(proc: Any, out: Any) -> tuple[str, Any]:
    """The child's answer; an error (not a hang) when it died without one."""
    while True:
        try:
            return out.get(timeout=1.0)
        except queue.Empty:
            if not proc.is_alive():
                return "error", f"benchmark process died (exit code {proc.exitcode})"


def _spin() -> None:
    """A plain busy loop: one core's worth of someone else's work."""
    while True:
        pass


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """Keep one core busy with a separate process for the duration of the block."""
    proc = mp.get_context("spawn").Process(target=_spin, daemon=True)
    proc.start()
    try:
        time.sleep(0.5)  # let it start spinning before anything is timed
        yield
    finally:
        proc.terminate()
        proc.join(5)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_threads": cpu_budget().threads,
        "load_avg": _load_avg(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_table(records: list[dict[str, Any]]) -> str:
    """A fixed-width table with speed-ups against torch eager of the same model/workload."""
    base = {
        (r["model"], r["workload"]): r
        for r in records
        if r["backend"] == "torch-eager" and r.get("cpu_load") != CONTENDED
    }
    head = (
        f"{'model':10} {'workload':8} {'backend':16} {'prefill ms':>10} {'ms/token':>9} "
        f"{'tok/s':>7} {'SoVITS ms/s':>11} {'RTF':>7} {'1st audio':>9} {'total ms':>9} "
        f"{'RSS MB':>7} {'speed-up':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        if r["workload"].startswith("text-") or r["workload"] == VOICE_WORKLOAD:
            continue
        if r.get("cpu_load") == CONTENDED:
            continue
        ref = base.get((r["model"], r["workload"]))
        ratio = f"{ref['total_ms'] / r['total_ms']:.2f}x" if ref and r["total_ms"] else "-"
        lines.append(
            f"{r['model']:10} {r['workload']:8} {r['backend']:16} {r['prefill_ms']:>10.1f} "
            f"{r['decode_ms_per_token']:>9.2f} {r['tokens_per_s'] or 0:>7.1f} "
            f"{r['sovits_ms_per_audio_s']:>11.1f} {r['rtf']:>7.3f} {r['first_audio_ms']:>9.1f} "
            f"{r['total_ms']:>9.1f} {r['peak_rss_mb'] or 0:>7.0f} {ratio:>8}"
        )
    voices = [r for r in records if r["workload"] == VOICE_WORKLOAD and r["cpu_load"] != CONTENDED]
    if voices:
        lines += ["", f"engines.Voice, `kiosk say` settings ({VOICE_SENTENCE}):"]
        lines += [
            f"  {r['model']:10} {r['backend']:16} RTF {r['rtf']:>7.3f}  "
            f"first audio {r['first_audio_ms']:>8.1f} ms  total {r['total_ms']:>8.1f} ms"
            for r in voices
        ]
    texts = [r for r in records if r["workload"].startswith("text-")]
    if texts:
        lines += ["", "text to first audio (frontend + BERT + GPT + first SoVITS chunk):"]
        lines += [
            f"  {r['model']:10} {r['backend']:16} {r['workload']:14} {r['first_audio_ms']:>8.1f} ms"
            for r in texts
        ]
    return "\n".join(lines)


def write_json(path: str | Path, machine: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """The `--json` file: the machine and one record per (model, backend, workload)."""
    payload = {"machine": machine, "records": [{k: r[k] for k in RECORD_KEYS} for r in records]}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def format_contention(records: list[dict[str, Any]]) -> str:
    """Idle and contended RTF side by side per (model, workload, backend), with the ratio."""
    runs: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("rtf") is not None:
            runs.setdefault((r["model"], r["workload"], r["backend"]), {})[r["cpu_load"]] = r
    head = (
        f"{'model':10} {'workload':8} {'backend':16} {'idle RTF':>8} {'load':>5} "
        f"{'busy RTF':>8} {'load':>5} {'ratio':>6}"
    )
    lines = [f"one core held by a busy loop (target: ratio <= {CONTENTION_TARGET}x)", head]
    lines.append("-" * len(head))
    for (model, workload, backend), pair in runs.items():
        idle, busy = pair.get(IDLE), pair.get(CONTENDED)
        if idle is None or busy is None:
            continue
        ratio = busy["rtf"] / idle["rtf"] if idle["rtf"] else float("inf")
        flag = "" if ratio <= CONTENTION_TARGET else "  over target"
        lines.append(
            f"{model:10} {workload:8} {backend:16} {idle['rtf']:>8.3f} "
            f"{_load(idle):>5} {busy['rtf']:>8.3f} {_load(busy):>5} {ratio:>5.2f}x{flag}"
        )
    return "\n".join(lines)


def _load(record: dict[str, Any]) -> str:
    value = record.get("load_avg")
    return "-" if value is None else f"{value:.2f}"
