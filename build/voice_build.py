"""The engines of one installed voice for this device, built before its phrases are cached.

What "engines" means depends on the backend the box runs:

* torch-eager: none (the voice folder's model files are what it runs);
* onnxruntime (and "auto" on a CPU box): the ONNX export into the voice folder's
  `graphs/` (`kiosk_build.export_onnx`, skipped when `verify_export` finds it up
  to date), then the 8-bit GPT decode check run again on *this voice's* prompt
  and phrases (the export checks it on synthetic inputs only; a voice whose own
  greedy tokens change under 8 bits must decode in FP32), recorded in the
  graph manifest with a digest of the cases, so an unchanged voice is not
  checked twice;
* tensorrt (and "auto" where TensorRT and a CUDA device are present): the same
  export, then FP16 engines validated against the FP32 GPT
  (`kiosk_build.tensorrt_build`) in `<state>/engines/`.

The torch reference models are loaded only when something must be exported or
checked, and freed (with the heap trimmed) before the caller loads the runtime
to speak, so a 2 GB box never holds both.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.backends.precision import ValidationCase
from engines.durable_files import atomic_write_bytes
from engines.onnx_graphs.contract import GRAPH_FILES, MANIFEST, model_sources, read_manifest
from engines.voice import release_heap
from engines.voice_folder import GPT_FILE, GRAPHS_DIR, PROMPT_FILE, SOVITS_FILE, load_prompt
from engines.voice_folder import read_config as read_voice_config
from engines.voice_models import VoiceModels, load_voice_models

log = logging.getLogger(__name__)

#: Backends whose runtime is built from the ONNX export.
GRAPH_BACKENDS = ("onnxruntime", "tensorrt")
#: How many of the voice's own segments the 8-bit check decodes (64 greedy steps each).
OWN_CASES = 4
INT8_GRAPH = "gpt_decode_int8"


@dataclass
class EngineReport:
    """What the engine step did for one voice (for the log and `kiosk build`)."""

    backend: str
    """The backend the engines were built for."""
    exported: list[str] = field(default_factory=list)
    """Families ("gpt", "sovits") exported in this run (empty: up to date or not needed)."""
    int8: str = "not applicable"
    """The 8-bit decode verdict on the voice's own inputs ("accepted", "rejected", ...)."""
    tensorrt: str = "not applicable"
    """What the TensorRT step did."""
    seconds: float = 0.0
    """Wall time of the step."""

    def line(self) -> str:
        done = f"exported {', '.join(self.exported)}" if self.exported else "export up to date"
        if self.backend not in GRAPH_BACKENDS:
            done = "no engines needed"
        return (
            f"engines for {self.backend}: {done}; 8-bit GPT: {self.int8}; TensorRT: "
            f"{self.tensorrt} ({self.seconds:.1f} s)"
        )


def engine_backend(backend: str) -> str:
    """The backend `auto` resolves to on this device, for building (not for speaking)."""
    if backend != "auto":
        return backend
    if torch.cuda.is_available() and _tensorrt_present():
        return "tensorrt"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch-eager"
    return "onnxruntime"


def _tensorrt_present() -> bool:
    from engines.backends.tensorrt_backend import import_tensorrt

    return import_tensorrt() is not None


def voice_cases(
    folder: Path, phrase_features: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]]
) -> list[ValidationCase]:
    """GPT inputs as the voice will see them: its prompt, then a segment of each phrase.

    The segments are taken one per phrase in turn (first segments first) up to
    `OWN_CASES`; a voice without phrases is checked on its reference text.
    """
    prompt = load_prompt(folder / PROMPT_FILE)
    picked: list[tuple[np.ndarray, np.ndarray]] = []
    depth = 0
    while len(picked) < OWN_CASES and any(depth < len(p) for p in phrase_features):
        for segments in phrase_features:
            if depth < len(segments) and len(picked) < OWN_CASES:
                picked.append(segments[depth])
        depth += 1
    if not picked:
        picked = [(prompt.phone_ids.numpy(), prompt.bert.numpy())]
    return [
        ValidationCase(
            torch.cat([prompt.phone_ids, torch.as_tensor(np.asarray(ids), dtype=torch.long)]),
            torch.cat([prompt.bert, torch.as_tensor(np.asarray(bert), dtype=torch.float32)], 1),
            prompt.semantic_tokens,
        )
        for ids, bert in picked
    ]


def cases_digest(cases: Sequence[ValidationCase]) -> str:
    digest = hashlib.sha256()
    for case in cases:
        for tensor in (case.phone_ids, case.bert, case.prompt_tokens):
            t = tensor.detach().contiguous().cpu()
            digest.update(f"{t.dtype}|{tuple(t.shape)}\n".encode())
            digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def build_engines(
    folder: str | Path,
    backend: str,
    *,
    phrase_features: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]] = (),
    engine_dir: Path | None = None,
) -> EngineReport:
    """Export/check/build what `backend` runs for the voice folder; idempotent."""
    from kiosk_build.export_onnx import export_voice, stale_families
    from kiosk_build.quantize_int8 import validate_int8

    start = time.perf_counter()
    folder = Path(folder)
    wanted = engine_backend(backend)
    report = EngineReport(wanted)
    if wanted not in GRAPH_BACKENDS:
        report.seconds = time.perf_counter() - start
        return report
    config = read_voice_config(folder)
    sources = model_sources(
        config.gpt_version,
        config.sovits_version,
        config.gpt_sha256,
        config.sovits_sha256,
        gpt_file=GPT_FILE,
        sovits_file=SOVITS_FILE,
    )
    graphs = folder / GRAPHS_DIR
    models: VoiceModels | None = None

    def loaded() -> VoiceModels:
        nonlocal models
        if models is None:
            log.info("loading the torch models of %s (export and checks)", config.id)
            models = load_voice_models(folder / GPT_FILE, folder / SOVITS_FILE)
        return models

    try:
        stale = sorted(stale_families(graphs, sources))
        if stale:
            log.info("exporting %s of %s to ONNX", ", ".join(stale), config.id)
            export_voice(loaded(), graphs, sources=sources, families=stale)
            report.exported = stale
        report.int8 = _check_int8(graphs, folder, phrase_features, loaded, validate_int8)
        if wanted == "tensorrt":
            report.tensorrt = _tensorrt(folder, graphs, config.id, loaded, engine_dir)
    finally:
        models = None
        gc.collect()
        release_heap()  # the reference models are garbage now; give their pages back
    report.seconds = time.perf_counter() - start
    log.info("%s: %s", config.id, report.line())
    return report


def _check_int8(
    graphs: Path,
    folder: Path,
    phrase_features: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
    loaded: Any,
    validate_int8: Any,
) -> str:
    """Run the 8-bit greedy check on the voice's own inputs, once per export and voice."""
    manifest = read_manifest(graphs) or {}
    entry = (manifest.get("graphs") or {}).get(INT8_GRAPH)
    if entry is None:
        return "no 8-bit graph (FP32 decode)"
    cases = voice_cases(folder, phrase_features)
    digest = cases_digest(cases)
    verdict = entry.get("validation") or {}
    if verdict.get("cases") == f"voice:{digest}":
        return ("accepted" if verdict.get("passed") else "rejected") + " (checked before)"
    result = validate_int8(
        loaded().gpt, graphs / GRAPH_FILES["gpt_prefill"], graphs / GRAPH_FILES[INT8_GRAPH], cases
    )
    result["cases"] = f"voice:{digest}"
    result["detail"] = f"{result.get('detail')} (this voice's prompt and phrases)"
    entry["validation"] = result
    atomic_write_bytes(graphs / MANIFEST, json.dumps(manifest, indent=2).encode())
    return "accepted" if result.get("passed") else "rejected: the GPT decodes in FP32"


def _tensorrt(
    folder: Path, graphs: Path, voice_id: str, loaded: Any, engine_dir: Path | None
) -> str:
    """FP16 engines (FP32 fallback) for this GPU, validated against the FP32 GPT."""
    if not (torch.cuda.is_available() and _tensorrt_present()):
        return "not present here"
    if engine_dir is None:
        return "no engine folder given"
    from kiosk_build.engine_cache import hash_model_files
    from kiosk_build.tensorrt_build import build_engines as build_trt

    from engines.backends.tensorrt_backend import make_gpt_validator

    model_hash = hash_model_files([folder / GPT_FILE, folder / SOVITS_FILE])
    built = build_trt(
        graphs,
        engine_dir,
        voice=voice_id,
        # The torch GPT is loaded only if an engine is (re)built and must be validated.
        validators={"gpt": lambda engines: make_gpt_validator(loaded().gpt)(engines)},
        model_hash=model_hash,
    )
    return f"{'built' if built.built else 'up to date'} in {built.entry_dir}"
