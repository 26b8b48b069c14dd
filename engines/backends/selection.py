"""Pick the backend a kiosk runs on: forced by config, or the fastest that works here.

Automatic order: tensorrt > torch-cuda > onnxruntime > torch-eager.  Every
backend that is passed over is logged with its reason ("no CUDA device",
"no engines built for ..."), so a slow kiosk explains itself in the journal.
Backends are constructed lazily and their modules imported lazily: a missing
optional dependency (onnxruntime, TensorRT) only removes that backend.

`load_voice_runtime` can load a voice without its torch models: ONNX Runtime
from a verified graph folder and TensorRT from its engine cache take the GPT
config and versions from their manifests, so `models` (a zero-argument
loader) is called only by a backend that really runs torch, or to export.
Export on demand is the caller's to give (`export=`): this package never
imports the build step.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.onnx_graphs.contract import GraphExporter, Sources
from engines.voice_models import VoiceModels

from .base import Backend, TorchEagerBackend, VoiceRuntime
from .errors import BackendUnavailableError

log = logging.getLogger(__name__)

AUTO = "auto"
BACKEND_ORDER: tuple[str, ...] = ("tensorrt", "torch-cuda", "onnxruntime", "torch-eager")

#: Builds a backend from the config's options (e.g. `engine_dir`, `voice`).
BackendFactory = Callable[[Mapping[str, Any]], Backend]
#: Zero-argument loader of a voice's torch models, called only when they are needed.
ModelLoader = Callable[[], VoiceModels]


def _tensorrt(options: Mapping[str, Any]) -> Backend:
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(
        Path(options.get("engine_dir", "/var/lib/kiosk/engines")),
        voice=str(options.get("voice", "voice")),
        model_hash=options.get("model_hash"),
    )


def _torch_cuda(options: Mapping[str, Any]) -> Backend:
    from .torch_cuda import TorchCudaBackend

    return TorchCudaBackend(validate=bool(options.get("validate", True)))


def _onnxruntime(options: Mapping[str, Any]) -> Backend:
    """`options["onnxruntime"]`: the backend's keyword arguments (`graphs_dir`, `export`, ...)."""
    module = importlib.import_module("engines.backends.onnxruntime_backend")
    return module.OnnxRuntimeBackend(**dict(options.get("onnxruntime", {})))


def _torch_eager(options: Mapping[str, Any]) -> Backend:
    return TorchEagerBackend()


DEFAULT_FACTORIES: dict[str, BackendFactory] = {
    "tensorrt": _tensorrt,
    "torch-cuda": _torch_cuda,
    "onnxruntime": _onnxruntime,
    "torch-eager": _torch_eager,
}


@dataclass
class Selection:
    """The chosen backend, why, and why each one before it was skipped."""

    backend: Backend
    reason: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.backend.name


def _probe(
    name: str, factories: Mapping[str, BackendFactory], options: Mapping[str, Any]
) -> tuple[Backend | None, str]:
    """Construct and ask one backend; any failure becomes a reason, never a crash."""
    factory = factories.get(name)
    if factory is None:
        return None, "unknown backend"
    try:
        backend = factory(options)
    except ImportError as exc:
        return None, f"not installed ({exc})"
    except Exception as exc:  # a broken optional backend must not stop the kiosk
        return None, f"failed to initialise ({exc.__class__.__name__}: {exc})"
    try:
        ok, why = backend.availability()
    except Exception as exc:
        return None, f"availability check failed ({exc.__class__.__name__}: {exc})"
    return (backend, why) if ok else (None, why)


def select_backend(
    preference: str | None = AUTO,
    options: Mapping[str, Any] | None = None,
    *,
    order: Sequence[str] = BACKEND_ORDER,
    factories: Mapping[str, BackendFactory] | None = None,
    exclude: Sequence[str] = (),
) -> Selection:
    """The configured backend (`preference`), or the first available one in `order`.

    A forced backend that cannot run raises `BackendUnavailable`: silently
    running a slower one would hide a broken install.
    """
    options = options or {}
    factories = factories or DEFAULT_FACTORIES
    wanted = (preference or AUTO).strip().lower()
    if wanted != AUTO:
        if wanted not in factories:
            raise BackendUnavailableError(
                f"unknown backend {wanted!r}; choose one of {', '.join(factories)} or 'auto'"
            )
        backend, why = _probe(wanted, factories, options)
        if backend is None:
            raise BackendUnavailableError(f"backend {wanted!r} was configured but {why}")
        log.info("backend %s (set in config): %s", wanted, why)
        return Selection(backend, f"set in config: {why}")
    skipped: list[tuple[str, str]] = []
    for name in order:
        if name in exclude:
            continue
        backend, why = _probe(name, factories, options)
        if backend is None:
            log.info("backend %s skipped: %s", name, why)
            skipped.append((name, why))
            continue
        log.info("backend %s chosen automatically: %s", name, why)
        return Selection(backend, f"first available: {why}", skipped)
    raise BackendUnavailableError(
        "no backend can run: " + "; ".join(f"{n}: {w}" for n, w in skipped)
    )


class _OnceLoader:
    """Calls `load` at most once while a selection runs (backends that fail to load
    may have loaded the models already); after `release` it keeps nothing, so a
    lazy fallback that holds the loader does not hold the models."""

    def __init__(self, load: ModelLoader) -> None:
        self._load = load
        self._voice: VoiceModels | None = None
        self._released = False

    def __call__(self) -> VoiceModels:
        if self._released:
            return self._load()
        if self._voice is None:
            self._voice = self._load()
        return self._voice

    def release(self) -> None:
        self._voice = None
        self._released = True


def _load(backend: Backend, voice: VoiceModels | None, models: _OnceLoader | None,
          sources: Sources | None) -> VoiceRuntime:  # fmt: skip
    """`load_graphs` where the backend has it (no torch models needed), else `load`."""
    load_graphs = getattr(backend, "load_graphs", None)
    if load_graphs is not None and (models is not None or sources is not None):
        return load_graphs(models=voice if voice is not None else models, sources=sources)
    if voice is None:
        if models is None:
            raise ValueError(f"backend {backend.name!r} needs the torch models: pass `models=`")
        voice = models()
    return backend.load(voice)


def load_voice_runtime(
    voice: VoiceModels | None = None,
    preference: str | None = AUTO,
    options: Mapping[str, Any] | None = None,
    *,
    order: Sequence[str] = BACKEND_ORDER,
    factories: Mapping[str, BackendFactory] | None = None,
    models: ModelLoader | None = None,
    sources: Sources | None = None,
    graphs_dir: str | Path | None = None,
    export: GraphExporter | None = None,
) -> tuple[VoiceRuntime, Selection]:
    """Select and load; in auto mode a backend whose `load` fails is skipped too.

    (TensorRT may be available yet hold no valid engines for this voice: that
    is only known at load time, and the next backend must take over.)

    `voice`: the loaded torch models; or leave it None and give `models`, a
    zero-argument loader called only if the chosen backend needs torch (torch
    backends, an export, the TensorRT long-window fallback).  `sources`: the
    model files' identity (`engines.onnx_graphs.contract.model_sources`), which
    graph folders and engines must record.  `graphs_dir` (the voice's ONNX
    export folder) and `export` (the build step's exporter, for export on
    demand) go to the ONNX Runtime backend, as `options["onnxruntime"]` would.
    """
    if voice is None and models is None:
        raise ValueError("load_voice_runtime needs `voice` or `models`")
    options = dict(options or {})
    ort_options = {
        **dict(options.get("onnxruntime", {})),
        **({"graphs_dir": graphs_dir} if graphs_dir is not None else {}),
        **({"export": export} if export is not None else {}),
    }
    if ort_options:
        options["onnxruntime"] = ort_options
    once = _OnceLoader(models) if voice is None and models is not None else None
    excluded: list[str] = []
    failures: list[tuple[str, str]] = []
    try:
        while True:
            selection = select_backend(
                preference, options, order=order, factories=factories, exclude=excluded
            )
            try:
                runtime = _load(selection.backend, voice, once, sources)
            except Exception as exc:
                if (preference or AUTO).strip().lower() != AUTO:
                    raise BackendUnavailableError(
                        f"backend {selection.name!r} failed to load: {exc}"
                    ) from exc
                why = f"load failed ({exc.__class__.__name__}: {exc})"
                log.warning("backend %s skipped: %s", selection.name, why)
                excluded.append(selection.name)
                failures.append((selection.name, why))
                continue
            selection.skipped = failures + selection.skipped
            return runtime, selection
    finally:
        if once is not None:
            once.release()  # a lazy fallback keeps the loader, not the models
