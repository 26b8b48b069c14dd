"""ONNX Runtime backend: the exported graphs on the CUDA EP when present, else the CPU.

Graphs come from a folder that follows `engines.onnx_graphs.contract` (written
by the build step, `kiosk export-onnx`).  A verified folder is all a voice needs:
`load_graphs` opens it with the GPT config and versions from its manifest, so
the torch models are never loaded and nothing here keeps a reference to them.
A folder that is missing, stale (other weights, older format) or damaged
(truncated file, foreign graph) is re-exported when the caller passed an
exporter (`export=`, the build step's `export_voice`) and a way to get the
torch models; otherwise loading fails with `GraphsUnavailableError` naming the
command that builds the graphs.  This module never imports the build step.

GPT decoding keeps the KV cache in two preallocated torch tensors whose
per-layer slices are bound to the decode graph by pointer (IO binding): a step
passes the caches without any copy, the graph returns just the new key/value
rows, and the host writes those rows into the cache slot (48 KB).  Logits and
the rows land in preallocated output buffers too, so a step allocates nothing.

On the CPU the decode step runs the 8-bit-weight graph when the build step
found that it decodes the same greedy tokens as FP32 (`gpt_precision="auto"`,
its verdict is in the manifest); `gpt_precision="fp32"` always runs FP32, and
"int8" runs 8-bit weights regardless of the check (with a warning).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.backends.base import VoiceRuntime
from engines.cache_folder import cache_folder
from engines.gpt.config import GPTConfig
from engines.gpt.kv_cache import CACHE_BUCKETS, bucket_length
from engines.onnx_graphs.contract import (
    GRAPH_FILES,
    GraphExporter,
    Sources,
    families_of,
    gpt_config_from_manifest,
    graph_io,
    read_manifest,
    unavailable,
    verify_export,
    voice_sources,
)
from engines.onnx_graphs.sovits import decode_staged
from engines.sovits.synthesizer import Timbre
from engines.threads import cpu_budget
from engines.voice_models import VoiceModels

from .ort_sessions import (
    CUDA_EP,
    GPT_PRECISIONS,
    choose_providers,
    decode_choice,
    drop_early,
    onnxruntime_module,
    open_session,
)

log = logging.getLogger(__name__)


#: Where graphs exported on demand are kept, one sub-folder per model pair.
def default_cache_dir() -> Path:
    """Where exports are kept: `$KIOSK_ONNX_CACHE`, else `kiosk/onnx` in the user's cache
    folder (`$XDG_CACHE_HOME`, which the service sets to its CacheDirectory=, else
    `~/.cache`)."""
    if os.environ.get("KIOSK_ONNX_CACHE"):
        return Path(os.environ["KIOSK_ONNX_CACHE"])
    return cache_folder("onnx")


def physical_cores() -> int:
    """Threads for the CPU EP: the cores this process may use (see `engines.threads`)."""
    return cpu_budget().threads


def _np(t: torch.Tensor, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)


# =============================================================================== GPT
class OrtDecoderSession:
    """One utterance on ONNX Runtime: KV cache for up to `max_len` slots, IO-bound.

    The decode graph attends over every cache slot it is given, so the cache
    is sized in buckets (`engines.gpt.kv_cache.bucket_length`) and grows by
    copying (and rebinding) when a step reaches its end: a short phrase pays
    for its own length, not the 1 500-token cap.  `fixed` keeps exactly
    `max_len` slots, for a decode graph exported with a static cache length.
    """

    def __init__(self, runtime: OrtGPTRuntime, max_len: int, *, fixed: bool = False) -> None:
        cfg = runtime.config
        self.runtime = runtime
        self.max_len = max_len
        self.fixed = fixed
        device = runtime.cache_device
        first = max_len if fixed else bucket_length(min(max_len, CACHE_BUCKETS[0]), max_len)
        shape = (cfg.num_layers, 1, cfg.num_heads, first, cfg.head_dim)
        self.k_cache = torch.zeros(shape, dtype=torch.float32, device=device)
        self.v_cache = torch.zeros(shape, dtype=torch.float32, device=device)
        row = (cfg.num_layers, 1, cfg.num_heads, 1, cfg.head_dim)
        self._new_k = torch.empty(row, dtype=torch.float32, device=device)
        self._new_v = torch.empty(row, dtype=torch.float32, device=device)
        self._logits = torch.empty(1, cfg.vocab_size, dtype=torch.float32, device=device)
        self._token = torch.zeros(1, 1, dtype=torch.int64)
        self._position = torch.zeros(1, dtype=torch.int64)
        self._slot = torch.zeros(1, dtype=torch.int64)
        self._binding = self._bind()

    def _bind(self) -> Any:
        """Bind every decode input/output once; steps only update the three scalars."""
        binding = self.runtime.decode.io_binding()

        def bind(kind: str, name: str, tensor: torch.Tensor) -> None:
            dev = "cuda" if tensor.is_cuda else "cpu"
            index = tensor.device.index or 0
            dtype = np.int64 if tensor.dtype == torch.int64 else np.float32
            method = binding.bind_input if kind == "in" else binding.bind_output
            method(name, dev, index, dtype, list(tensor.shape), tensor.data_ptr())

        bind("in", "token", self._token)
        bind("in", "position", self._position)
        bind("in", "slot", self._slot)
        for layer in range(self.k_cache.shape[0]):  # layer slices are contiguous views
            bind("in", f"k_cache_{layer}", self.k_cache[layer])
            bind("in", f"v_cache_{layer}", self.v_cache[layer])
        bind("out", "logits", self._logits)
        bind("out", "new_k", self._new_k)
        bind("out", "new_v", self._new_v)
        return binding

    def _room_for(self, length: int, filled: int) -> None:
        """Grow the cache (keeping slots `< filled`) and rebind, if it holds fewer than `length`."""
        if length <= self.k_cache.shape[3]:
            return
        size = bucket_length(length, self.max_len)
        shape = (*self.k_cache.shape[:3], size, self.k_cache.shape[4])
        for name in ("k_cache", "v_cache"):
            old = getattr(self, name)
            new = old.new_zeros(shape)
            new[:, :, :, :filled] = old[:, :, :, :filled]
            setattr(self, name, new)
        self._binding = self._bind()

    def prefill(
        self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Run the prefill graph and copy its keys/values into slots `0..N+P-1` (once)."""
        total = phone_ids.shape[1] + prompt_tokens.shape[1]
        if total > self.max_len:
            raise ValueError(f"prefix of {total} positions does not fit max_len {self.max_len}")
        self._room_for(total, 0)
        logits, keys, values = self.runtime.prefill.run(
            None,
            {
                "phone_ids": _np(phone_ids, np.int64),
                "bert": _np(bert, np.float32),
                "prompt": _np(prompt_tokens, np.int64),
            },
        )
        self.k_cache[:, :, :, :total] = torch.from_numpy(keys).to(self.k_cache.device)
        self.v_cache[:, :, :, :total] = torch.from_numpy(values).to(self.v_cache.device)
        return torch.from_numpy(logits)

    def step(self, token: int, position: int, slot: int) -> torch.Tensor:
        """Feed `token`; afterwards its key/value rows sit in cache slot `slot`."""
        if not 0 <= slot < self.max_len:
            raise ValueError(f"slot {slot} outside the cache (max_len {self.max_len})")
        self._room_for(slot + 1, slot)
        self._token.fill_(token)
        self._position.fill_(position)
        self._slot.fill_(slot)
        self.runtime.decode.run_with_iobinding(self._binding)
        self.k_cache[:, :, :, slot] = self._new_k[:, :, :, 0]
        self.v_cache[:, :, :, slot] = self._new_v[:, :, :, 0]
        # The output buffer is reused by the next step; the caller may keep this one.
        return self._logits.cpu().clone()


class OrtGPTRuntime:
    """`GPTRuntime` over the prefill and decode graphs of one voice."""

    def __init__(
        self,
        prefill_path: Path,
        decode_path: Path,
        config: GPTConfig,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        static_max_len: int | None = None,
        precision: str = "fp32",
    ) -> None:
        self.config = config
        self.precision = precision
        self.providers = choose_providers(providers)
        layers = config.num_layers
        self.prefill = open_session(
            prefill_path, graph_io("gpt_prefill", layers), self.providers, intra_op_threads
        )
        self.decode = open_session(
            decode_path, graph_io("gpt_decode", layers), self.providers, intra_op_threads
        )
        self.static_max_len = static_max_len
        # Logits go back to the host loop; the cache stays wherever the EP runs.
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        on_gpu = self.providers[0] == CUDA_EP and torch.cuda.is_available()
        self.cache_device = torch.device("cuda") if on_gpu else torch.device("cpu")

    def session(self, max_len: int) -> OrtDecoderSession:
        if self.static_max_len is not None:
            if max_len > self.static_max_len:
                raise ValueError(
                    f"needs {max_len} cache slots; the decode graph was exported with "
                    f"max_len {self.static_max_len}"
                )
            return OrtDecoderSession(self, self.static_max_len, fixed=True)
        return OrtDecoderSession(self, max_len)


# =============================================================================== SoVITS
class OrtSoVITSRuntime:
    """`SoVITSRuntime` over the encoder and flow+vocoder graphs.

    Speed is applied between the graphs with eager's own `stretch_frames`.  The
    prior noise is drawn on the host from the caller's generator with the same
    call eager torch makes (`randn` of the prior's shape), and not at all for
    noise_scale 0 (eager does not draw then either), so both backends consume
    the generator identically and agree to float tolerance for any seed.
    """

    def __init__(
        self,
        encoder_path: Path,
        flow_vocoder_path: Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        self.providers = choose_providers(providers)
        self.encoder = open_session(
            encoder_path, graph_io("sovits_encoder", 0), self.providers, intra_op_threads
        )
        self.flow_vocoder = open_session(
            flow_vocoder_path,
            graph_io("sovits_flow_vocoder", 0),
            self.providers,
            intra_op_threads,
        )
        #: Channels of the prior latent (the noise input), read from the graph.
        self.noise_channels = int(self.flow_vocoder.get_inputs()[1].shape[1])

    def content(
        self, codes: torch.Tensor, text_ids: torch.Tensor, ge_text: torch.Tensor
    ) -> torch.Tensor:
        """Encoder output `[1, 192, 2T]` at speed 1."""
        (content,) = self.encoder.run(
            None,
            {
                "codes": _np(codes, np.int64),
                "text_ids": _np(text_ids, np.int64),
                "ge_text": _np(ge_text, np.float32),
            },
        )
        return torch.from_numpy(content)

    def render(
        self, content: torch.Tensor, noise: torch.Tensor, noise_scale: float, ge: torch.Tensor
    ) -> torch.Tensor:
        """A window of encoder frames (+ its prior noise) to audio, for streaming."""
        (audio,) = self.flow_vocoder.run(
            None,
            {
                "content": _np(content, np.float32),
                "noise": _np(noise, np.float32),
                "noise_scale": np.array([noise_scale], dtype=np.float32),
                "ge": _np(ge, np.float32),
            },
        )
        return torch.from_numpy(audio)

    def decode(
        self,
        codes: torch.Tensor,
        text_ids: torch.Tensor,
        timbre: Timbre,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return decode_staged(
            self, codes, text_ids, timbre, speed, noise_scale, generator, self.noise_channels
        )


# =============================================================================== backend
#: Zero-argument loader of a voice's torch models: called only when an export needs them.
ModelLoader = Callable[[], VoiceModels]


def _memoized(models: VoiceModels | ModelLoader | None) -> ModelLoader | None:
    """`models` as a loader that loads at most once (and only when called)."""
    if models is None:
        return None
    if isinstance(models, VoiceModels):
        voice = models
        return lambda: voice
    loaded: list[VoiceModels] = []

    def load() -> VoiceModels:
        if not loaded:
            loaded.append(models())
        return loaded[0]

    return load


def cache_key(sources: Mapping[str, Mapping[str, str]]) -> str:
    """Folder name for an export: versions plus a digest of both source hashes."""
    digest = hashlib.sha256(
        f"{sources['gpt']['sha256']}|{sources['sovits']['sha256']}".encode()
    ).hexdigest()[:16]
    return f"{sources['gpt']['version']}-{sources['sovits']['version']}-{digest}"


class OnnxRuntimeBackend:
    """Runs voices through ONNX Runtime from verified graph folders.

    `graphs_dir`: the voice's export folder (else one sub-folder of `cache_dir`
    per pair of sources).  `export`: the build step's exporter, for export on
    demand; without it a missing or stale folder is an error that names
    `kiosk export-onnx`.
    """

    name = "onnxruntime"

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
        max_len: int | None = None,
        gpt_precision: str = "auto",
        export: GraphExporter | None = None,
        graphs_dir: str | Path | None = None,
    ) -> None:
        if gpt_precision not in GPT_PRECISIONS:
            raise ValueError(
                f"gpt_precision {gpt_precision!r} is not one of {', '.join(GPT_PRECISIONS)}"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.intra_op_threads = intra_op_threads
        self.preferred_providers = providers
        self.max_len = max_len
        self.gpt_precision = gpt_precision
        self.export = export
        self.graphs_dir = Path(graphs_dir) if graphs_dir is not None else None

    def availability(self) -> tuple[bool, str]:
        try:
            ort = onnxruntime_module()
        except ImportError as exc:
            return False, f"onnxruntime is not installed ({exc})"
        providers = ort.get_available_providers()
        chosen = choose_providers(self.preferred_providers)
        return True, (
            f"onnxruntime {ort.__version__}; providers {', '.join(providers)}; using {chosen[0]}"
        )

    def folder_for(self, sources: Mapping[str, Mapping[str, str]]) -> Path:
        """`graphs_dir` when set, else the cache sub-folder keyed by `sources`."""
        return self.graphs_dir or self.cache_dir / cache_key(sources)

    def prepare(
        self, voice: VoiceModels, sources: Mapping[str, Mapping[str, str]] | None = None
    ) -> Path:
        """A verified export folder for `voice`; missing or damaged graphs are re-exported."""
        sources = sources or voice_sources(voice)
        folder = self.folder_for(sources)
        self._ensure(folder, _memoized(voice), sources)
        return folder

    def _ensure(self, folder: Path, models: ModelLoader | None, sources: Sources | None) -> None:
        """Export the families of `folder` that fail the contract's checks."""
        problems = verify_export(folder, sources)
        if problems:
            stale = sorted(families_of(problems))
            self._export(folder, models, sources, stale, "; ".join(problems))

    def _export(
        self,
        folder: Path,
        models: ModelLoader | None,
        sources: Sources | None,
        families: Sequence[str],
        why: str,
    ) -> None:
        """(Re-)export `families` ("gpt", "sovits") of `folder`, or say who can."""
        if self.export is None:
            raise unavailable(folder, f"unusable ({why})")
        if models is None:
            raise unavailable(folder, f"unusable ({why}); no torch models were given")
        log.warning("ONNX graphs (%s) in %s missing or unusable (%s); exporting",
                    ", ".join(families), folder, why)  # fmt: skip
        voice = models()
        self.export(
            voice,
            folder,
            sources=sources or voice_sources(voice),
            max_len=self.max_len,
            families=tuple(families),
        )
        del voice
        gc.collect()  # the exporter's traces and protos are garbage now

    def open_gpt(self, folder: Path, voice: VoiceModels | None = None) -> OrtGPTRuntime:
        """ORT sessions of the GPT graphs (raises if a graph is unusable).

        The GPT config comes from `voice` when given, else from the manifest.
        """
        manifest = read_manifest(folder) or {}
        precision = self.decode_precision(manifest)
        decode = "gpt_decode_int8" if precision == "int8" else "gpt_decode"
        config = voice.gpt.config if voice is not None else gpt_config_from_manifest(manifest)
        return OrtGPTRuntime(
            folder / GRAPH_FILES["gpt_prefill"],
            folder / GRAPH_FILES[decode],
            config,
            static_max_len=manifest.get("max_len"),
            providers=self.preferred_providers,
            intra_op_threads=self.intra_op_threads,
            precision=precision,
        )

    def decode_precision(self, manifest: Mapping[str, Any]) -> str:
        """Decode weights to run: 8-bit if asked for or validated by the build (CPU EP only)."""
        first = choose_providers(self.preferred_providers)[0]
        precision, level, why = decode_choice(manifest, self.gpt_precision, first)
        log.log(level, "GPT decode %s: %s", "with 8-bit weights" if precision == "int8" else
                "in FP32", why)  # fmt: skip
        return precision

    def open_sovits(self, folder: Path) -> OrtSoVITSRuntime:
        """ORT sessions of the SoVITS graphs (raises if a graph is unusable)."""
        return OrtSoVITSRuntime(
            folder / GRAPH_FILES["sovits_encoder"],
            folder / GRAPH_FILES["sovits_flow_vocoder"],
            providers=self.preferred_providers,
            intra_op_threads=self.intra_op_threads,
        )

    def load(
        self, voice: VoiceModels, sources: Mapping[str, Mapping[str, str]] | None = None
    ) -> VoiceRuntime:
        """Prepare `voice`.  `sources` (`contract.file_sources`/`model_sources`) keys the
        graphs by the official files' SHA-256; without it the weights are hashed.
        """
        sources = sources or voice_sources(voice)
        return self.load_graphs(self.folder_for(sources), models=voice, sources=sources)

    def load_graphs(
        self,
        folder: str | Path | None = None,
        *,
        models: VoiceModels | ModelLoader | None = None,
        sources: Sources | None = None,
    ) -> VoiceRuntime:
        """A voice from its graph folder (default: `graphs_dir`, else the cache folder
        of `sources`), with config and versions from the manifest.

        `models` (the torch models, or a zero-argument loader) is used only to
        export a missing, stale or unloadable family, and only with `export`
        set; no reference to it survives this call.  `sources` ties the folder
        to the model files (a folder recording other hashes is stale); without
        it the folder is trusted to be this voice's once its own checks pass.
        A graph that passes the manifest checks but still fails to load (or
        has foreign IO names) is re-exported once; a second failure propagates.
        """
        loader = _memoized(models)
        if folder is None:
            if self.graphs_dir is None and sources is None:
                if loader is None:
                    raise ValueError("load_graphs needs a folder, graphs_dir, sources or models")
                sources = voice_sources(loader())
            folder = self.folder_for(sources or {})
        folder = Path(folder)
        self._ensure(folder, loader, sources)

        def opened(family: str, make: Callable[[], Any]) -> Any:
            try:
                return make()
            except Exception as exc:  # ORT raises its own exception types for bad graphs
                log.warning("ONNX %s graphs in %s failed to load (%s)", family, folder, exc)
                self._export(folder, loader, sources, (family,), f"{family} failed to load")
                return make()

        try:
            gpt = opened("gpt", lambda: self.open_gpt(folder))
            sovits = opened("sovits", lambda: self.open_sovits(folder))
        finally:
            drop_early()  # sessions opened early for other settings are not needed now
        manifest = read_manifest(folder) or {}
        return VoiceRuntime(
            gpt, sovits, self.name, str(manifest["gpt_version"]), str(manifest["sovits_version"])
        )
