"""TensorRT runtime: deserialize a voice's engines and run them on torch CUDA tensors.

No pycuda: every binding is a torch tensor on the GPU, addressed with
`set_tensor_address(name, tensor.data_ptr())`, and every launch is
`execute_async_v3` on torch's current stream, so the caching allocator, the
stream order and the host copies stay torch's business.

Graph contract: the names of `engines.onnx_graphs` (the build step exports the
graphs and builds the engines, `kiosk export-onnx` then `kiosk build-engines`;
`engines.backends.tensorrt_engines` finds and verifies them):

* `gpt_prefill`: `phone_ids` [1,N], `bert` [1,1024,N], `prompt` [1,P] ->
  `logits` [1,V], `keys`/`values` [L,1,H,N+P,Dh] (copied into the cache).
* `gpt_decode`: `token` [1,1], `position` [1], `slot` [1], `k_cache_<i>`/`v_cache_<i>`
  [1,H,S,Dh] per layer (read only) -> `logits` [1,V], `new_k`/`new_v` [L,1,H,1,Dh],
  which the host writes at `slot`.  S is the session's cache length (one
  contiguous cache per utterance, bound layer by layer; the engine's profile bounds it).
* `sovits_encoder`: `codes` [1,1,T], `text_ids` [1,N], `ge_text` [1,512,1] ->
  `content` [1,192,2T]; the speed stretch runs in torch between the graphs.
* `sovits_flow_vocoder`: `content`, `noise` [1,192,T'], `noise_scale` [1],
  `ge` [1,gin,1] -> `audio` [1,1,T'*640].

Loading needs no torch models when the engine manifest records the voice (GPT
config, versions, SoVITS channels; every build does).  The one exception is the
SoVITS fallback for windows longer than the engines' profile, which runs the
torch SoVITS on the GPU: given a model loader, it is built on first use only.

Importing this module never imports TensorRT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from engines.gpt.config import GPTConfig
from engines.gpt.kv_cache import CACHE_BUCKETS, bucket_length
from engines.gpt.model import Text2SemanticModel
from engines.onnx_graphs.contract import Sources, gpt_config_from_manifest
from engines.onnx_graphs.sovits import decode_staged, prior_frames
from engines.sovits.synthesizer import Timbre
from engines.voice_models import VoiceModels

from .base import SoVITSRuntime, VoiceRuntime
from .precision import ValidationCase, compare_greedy, default_validation_cases
from .tensorrt_engines import (
    BUILD_COMMAND,
    CacheEntry,
    EngineCacheReader,
    EngineKey,
    ValidationOutcome,
    combine_hashes,
    detect_gpu_info,
)
from .torch_cuda import TorchSoVITSRuntime, cuda_status

log = logging.getLogger(__name__)

GPT_PREFILL, GPT_DECODE = "gpt_prefill", "gpt_decode"
SOVITS_ENCODER, SOVITS_FLOW_VOCODER = "sovits_encoder", "sovits_flow_vocoder"

#: Zero-argument loader of a voice's torch models, called only when they are needed.
ModelLoader = Callable[[], VoiceModels]


def import_tensorrt() -> ModuleType | None:
    """The `tensorrt` module, or None when the bindings are not installed."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def torch_dtype(trt: ModuleType, dtype: Any) -> torch.dtype:
    """torch dtype of a TensorRT tensor type."""
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
    }
    for name, value in (("INT64", torch.int64), ("BF16", torch.bfloat16), ("UINT8", torch.uint8)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = value
    try:
        return table[dtype]
    except KeyError:
        raise TypeError(f"unsupported TensorRT tensor type {dtype}") from None


def _current_stream_handle() -> int:
    return torch.cuda.current_stream().cuda_stream


class TRTGraph:
    """One deserialized engine with its execution context, bound to torch tensors.

    `device` and `stream_handle` exist so the binding logic can be tested with
    CPU tensors and a fake `trt`; on the kiosk they are "cuda" and torch's
    current stream.
    """

    def __init__(
        self,
        trt: ModuleType,
        engine_data: bytes,
        name: str = "engine",
        *,
        device: torch.device | str = "cuda",
        stream_handle: Callable[[], int] = _current_stream_handle,
        runtime: Any | None = None,
    ) -> None:
        self.trt = trt
        self.name = name
        self.device = torch.device(device)
        self._stream_handle = stream_handle
        # The runtime must outlive its engines, hence the attribute.
        self.runtime = runtime or trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_data)
        if self.engine is None:
            raise RuntimeError(
                f"{name}: TensorRT could not deserialize the engine (built for another "
                "GPU or TensorRT version?); rebuild it"
            )
        self.context = self.engine.create_execution_context()
        self.inputs: dict[str, torch.dtype] = {}
        self.outputs: dict[str, torch.dtype] = {}
        for i in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(i)
            dtype = torch_dtype(trt, self.engine.get_tensor_dtype(tensor))
            if self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT:
                self.inputs[tensor] = dtype
            else:
                self.outputs[tensor] = dtype

    def static_shape(self, tensor: str) -> tuple[int, ...]:
        """Shape the engine declares (-1 for dynamic dimensions)."""
        return tuple(int(d) for d in self.engine.get_tensor_shape(tensor))

    def run(
        self, feeds: Mapping[str, torch.Tensor], out: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Bind `feeds` (cast/moved as the engine wants), enqueue, return the outputs.

        Outputs in `out` are written in place (preallocated buffers); the rest
        are allocated at the shapes TensorRT infers from the input shapes.
        """
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise KeyError(f"{self.name}: missing inputs {sorted(missing)}")
        keep = []
        for tensor, dtype in self.inputs.items():
            value = feeds[tensor].to(device=self.device, dtype=dtype).contiguous()
            keep.append(value)
            if not self.context.set_input_shape(tensor, tuple(value.shape)):
                raise ValueError(
                    f"{self.name}: input {tensor} shape {tuple(value.shape)} is outside the "
                    "engine's optimisation profile"
                )
            self.context.set_tensor_address(tensor, value.data_ptr())
        results = {}
        for tensor, dtype in self.outputs.items():
            shape = tuple(int(d) for d in self.context.get_tensor_shape(tensor))
            given = (out or {}).get(tensor)
            if given is not None:
                if tuple(given.shape) != shape or given.dtype != dtype:
                    raise ValueError(f"{self.name}: buffer for {tensor} must be {shape} {dtype}")
                buffer = given
            else:
                buffer = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(tensor, buffer.data_ptr())
            results[tensor] = buffer
        if not self.context.execute_async_v3(self._stream_handle()):
            raise RuntimeError(f"{self.name}: execute_async_v3 failed")
        del keep  # torch's allocator orders reuse on the same stream: safe to drop
        return results


# --------------------------------------------------------------------------- GPT
class TensorRTGPTRuntime:
    """`GPTRuntime` over a prefill engine and a decode-step engine.

    Host-facing like the torch-CUDA runtime: inputs and logits on the CPU in
    float32, so sampling uses the reference's CPU generator.
    """

    def __init__(self, config: GPTConfig, prefill: TRTGraph, decode: TRTGraph) -> None:
        self.config = config
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.prefill_graph = prefill
        self.decode_graph = decode
        self.cache_dtype = decode.inputs["k_cache_0"]

    def session(self, max_len: int) -> TensorRTSession:
        return TensorRTSession(self, max_len)


class TensorRTSession:
    """One utterance: its own contiguous cache for up to `max_len` slots.

    The decode engine attends over every slot it is given, so the cache is
    sized in buckets (`engines.gpt.kv_cache.bucket_length`, inside the engine's
    profile) and grows by copying when a step reaches its end: a short phrase
    pays for its own length, not for the 1 500-token cap.
    """

    def __init__(self, runtime: TensorRTGPTRuntime, max_len: int) -> None:
        self.rt = runtime
        self.max_len = max_len
        cfg = runtime.config
        dev = runtime.decode_graph.device
        first = bucket_length(min(max_len, CACHE_BUCKETS[0]), max_len)
        shape = (cfg.num_layers, 1, cfg.num_heads, first, cfg.head_dim)
        self.keys = torch.zeros(shape, dtype=runtime.cache_dtype, device=dev)
        self.values = torch.zeros(shape, dtype=runtime.cache_dtype, device=dev)
        self.token = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.position = torch.zeros(1, dtype=torch.long, device=dev)
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)

    def _room_for(self, length: int, filled: int) -> None:
        """Grow the cache to the bucket holding `length` slots, keeping slots `< filled`."""
        if length <= self.keys.shape[3]:
            return
        shape = (*self.keys.shape[:3], bucket_length(length, self.max_len), self.keys.shape[4])
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_zeros(shape)
            new[:, :, :, :filled].copy_(old[:, :, :, :filled])
            setattr(self, name, new)

    def prefill(
        self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> torch.Tensor:
        out = self.rt.prefill_graph.run(
            {"phone_ids": phone_ids, "bert": bert, "prompt": prompt_tokens}
        )
        length = out["keys"].shape[3]
        self._room_for(length, 0)
        self.keys[:, :, :, :length].copy_(out["keys"])
        self.values[:, :, :, :length].copy_(out["values"])
        return out["logits"].float().cpu()

    def step(self, token: int, position: int, slot: int) -> torch.Tensor:
        self._room_for(slot + 1, slot)
        self.token.fill_(token)
        self.position.fill_(position)
        self.slot.fill_(slot)
        feeds = {"token": self.token, "position": self.position, "slot": self.slot}
        for layer in range(self.keys.shape[0]):  # contiguous per-layer views, no copy
            feeds[f"k_cache_{layer}"] = self.keys[layer]
            feeds[f"v_cache_{layer}"] = self.values[layer]
        out = self.rt.decode_graph.run(feeds)
        # Written after the step: the graph attends the new row on its own.
        self.keys.index_copy_(3, self.slot, out["new_k"].to(self.keys.dtype))
        self.values.index_copy_(3, self.slot, out["new_v"].to(self.values.dtype))
        return out["logits"].float().cpu()


# ------------------------------------------------------------------------ SoVITS
class TensorRTSoVITSRuntime:
    """SoVITS through the encoder and flow+vocoder engines, speed stretch in torch.

    Lengths outside the engines' profiles (very long or very slow speech) go
    to `fallback`, the torch runtime, instead of failing.  `content`/`render`
    run the same two engines on streaming windows.
    """

    def __init__(
        self,
        encoder: TRTGraph,
        flow_vocoder: TRTGraph,
        inter_channels: int,
        fallback: SoVITSRuntime,
        max_frames: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.flow_vocoder = flow_vocoder
        self.inter_channels = inter_channels
        self.fallback = fallback
        self.max_frames = max_frames

    def decode(
        self,
        codes: torch.Tensor,
        text_ids: torch.Tensor,
        timbre: Timbre,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        frames = prior_frames(codes.shape[-1], speed)
        if self.max_frames is not None and frames > self.max_frames:
            return self.fallback.decode(codes, text_ids, timbre, speed, noise_scale, generator)
        return decode_staged(
            self, codes, text_ids, timbre, speed, noise_scale, generator, self.inter_channels
        )

    def content(
        self, codes: torch.Tensor, text_ids: torch.Tensor, ge_text: torch.Tensor
    ) -> torch.Tensor:
        """Encoder frames `[1,192,2T]` at speed 1, float32 on the CPU."""
        if self.max_frames is not None and 2 * codes.shape[-1] > self.max_frames:
            return self.fallback.content(codes, text_ids, ge_text)
        out = self.encoder.run({"codes": codes, "text_ids": text_ids, "ge_text": ge_text})
        return out["content"].float().cpu()

    def render(
        self, content: torch.Tensor, noise: torch.Tensor, noise_scale: float, ge: torch.Tensor
    ) -> torch.Tensor:
        """A window of encoder frames (+ its prior noise) to audio `[1,1,F*640]`."""
        if self.max_frames is not None and content.shape[-1] > self.max_frames:
            return self.fallback.render(content, noise, noise_scale, ge)
        out = self.flow_vocoder.run(
            {
                "content": content,
                "noise": noise,
                "noise_scale": torch.tensor([float(noise_scale)]),
                "ge": ge,
            }
        )
        return out["audio"].float().cpu()


# ------------------------------------------------------------------- validation
def make_gpt_validator(
    reference: Text2SemanticModel,
    cases: list[ValidationCase] | None = None,
    steps: int = 48,
    trt: ModuleType | None = None,
) -> Callable[[Mapping[str, bytes]], ValidationOutcome]:
    """Build-time check: greedy tokens of the engines == those of the FP32 torch model."""

    def validate(engines: Mapping[str, bytes]) -> ValidationOutcome:
        module = trt or import_tensorrt()
        if module is None:
            return ValidationOutcome(False, "tensorrt not importable")
        runtime = TensorRTGPTRuntime(
            reference.config,
            TRTGraph(module, engines[GPT_PREFILL], GPT_PREFILL),
            TRTGraph(module, engines[GPT_DECODE], GPT_DECODE),
        )
        check = compare_greedy(
            reference, runtime, cases or default_validation_cases(reference.config), steps
        )
        return ValidationOutcome(check.passed, check.detail, check.as_dict())

    return validate


# ----------------------------------------------------------------------- backend
class LazyTorchSoVITS:
    """The torch SoVITS fallback (FP16 on CUDA), built from `models` on first use.

    Keeps the loader, never the models: the runtime copies the SoVITS weights
    to the GPU and the loaded `VoiceModels` is dropped right after.
    """

    def __init__(self, models: ModelLoader, device: str = "cuda") -> None:
        self._models = models
        self._device = device
        self._runtime: TorchSoVITSRuntime | None = None

    def runtime(self) -> TorchSoVITSRuntime:
        if self._runtime is None:
            log.info("TensorRT: window beyond the engines' profile; loading the torch SoVITS")
            self._runtime = TorchSoVITSRuntime(self._models().sovits, self._device, torch.float16)
        return self._runtime

    def decode(
        self,
        codes: torch.Tensor,
        text_ids: torch.Tensor,
        timbre: Timbre,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.runtime().decode(codes, text_ids, timbre, speed, noise_scale, generator)

    def content(
        self, codes: torch.Tensor, text_ids: torch.Tensor, ge_text: torch.Tensor
    ) -> torch.Tensor:
        return self.runtime().content(codes, text_ids, ge_text)

    def render(
        self, content: torch.Tensor, noise: torch.Tensor, noise_scale: float, ge: torch.Tensor
    ) -> torch.Tensor:
        return self.runtime().render(content, noise, noise_scale, ge)


class TensorRTBackend:
    """Engines from the cache (`tensorrt_engines`, built by `kiosk build-engines`),
    torch tensors as bindings.

    `model_hash` (sha256 of the voice's files, as the build recorded it) pins
    the exact weights; without it the newest entry built for this GPU and
    TensorRT version under `voice` is used, and the log says so.
    """

    name = "tensorrt"

    def __init__(
        self,
        cache_root: str | Path,
        voice: str = "voice",
        model_hash: str | None = None,
        *,
        trt: ModuleType | None = None,
        status: Callable[[], tuple[bool, str]] = cuda_status,
    ) -> None:
        self.cache_root = Path(cache_root)
        self.voice = voice
        self.model_hash = model_hash
        self._trt = trt
        self._status = status

    def _module(self) -> ModuleType | None:
        return self._trt or import_tensorrt()

    def availability(self) -> tuple[bool, str]:
        trt = self._module()
        if trt is None:
            return False, "TensorRT Python bindings not installed"
        ok, why = self._status()
        if not ok:
            return False, why
        if not (self.cache_root / self.voice).is_dir():
            return False, f"no engines built for {self.voice!r} under {self.cache_root}"
        return True, f"TensorRT {trt.__version__} on {why}"

    def find_entry(self, model_hash: str | None = None) -> CacheEntry:
        """The cache entry for this device (and model hash, when known)."""
        trt = self._module()
        if trt is None:
            raise RuntimeError("TensorRT Python bindings not installed")
        gpu = detect_gpu_info()
        cache = EngineCacheReader(self.cache_root)
        device = (str(trt.__version__), gpu.name, gpu.compute_capability, gpu.cuda_version)
        pinned = model_hash or self.model_hash
        hashes = [pinned] if pinned else cache.model_hashes(self.voice, device)
        reasons = []
        for digest in hashes:
            found = cache.lookup(self.voice, EngineKey(digest, *device))
            if found.entry is not None:
                if not pinned:
                    log.warning("TensorRT: model hash not given; using %s", found.entry.directory)
                return found.entry
            reasons.append(found.reason)
        raise RuntimeError(
            f"no valid engines for {self.voice!r}: {'; '.join(reasons) or 'none for this device'}"
            f"; build them with `{BUILD_COMMAND}`"
        )

    def load(self, voice: VoiceModels) -> VoiceRuntime:
        """Engines of `voice` (its config and SoVITS fallback from the models given)."""
        return self.load_graphs(models=voice)

    def load_graphs(
        self, *, models: VoiceModels | ModelLoader | None = None, sources: Sources | None = None
    ) -> VoiceRuntime:
        """The voice's engines, without torch models when the entry records the voice.

        `sources` (the model files' hashes, as the export records them) pins
        the entry unless `model_hash` already does.  `models`: a `VoiceModels`
        (the SoVITS fallback is built now; nothing keeps the models) or a
        zero-argument loader (called for an entry without a voice record, or
        on the first window beyond the engines' profile); None means such
        windows fail.
        """
        trt = self._module()
        if trt is None:
            raise RuntimeError("TensorRT Python bindings not installed")
        digest = None
        if sources is not None and {"gpt", "sovits"} <= set(sources):
            digest = combine_hashes(str(sources[k]["sha256"]) for k in ("gpt", "sovits"))
        entry = self.find_entry(digest)
        recorded = entry.manifest.get("voice") or {}
        given = models if isinstance(models, VoiceModels) else None
        if given is None and not {"gpt_config", "gpt_version", "sovits_version"} <= set(recorded):
            if models is None:
                raise RuntimeError(
                    f"{entry.directory}: engines without a voice record need the torch models; "
                    f"rebuild them with `{BUILD_COMMAND}`"
                )
            given = models()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))

        def graph(name: str) -> TRTGraph:
            return TRTGraph(trt, entry.engine_path(name).read_bytes(), name, runtime=runtime)

        if given is not None:
            config, versions = given.gpt.config, (given.gpt_version, given.sovits_version)
            inter = given.sovits.cfg.inter_channels
        else:
            config = gpt_config_from_manifest(recorded)
            versions = (str(recorded["gpt_version"]), str(recorded["sovits_version"]))
            inter = (recorded.get("sovits_config") or {}).get("inter_channels")
        gpt = TensorRTGPTRuntime(config, graph(GPT_PREFILL), graph(GPT_DECODE))
        fallback: SoVITSRuntime | None = None
        if given is not None:
            fallback = TorchSoVITSRuntime(given.sovits, "cuda", torch.float16)
        elif models is not None and not isinstance(models, VoiceModels):
            fallback = LazyTorchSoVITS(models)
        del given
        engines_cover = {SOVITS_ENCODER, SOVITS_FLOW_VOCODER} <= set(entry.graphs)
        if engines_cover and inter is not None:
            profile = entry.manifest.get("precision", {}).get("graphs", {})
            frames = profile.get(SOVITS_FLOW_VOCODER, {}).get("profile", {}).get("content")
            sovits: SoVITSRuntime = TensorRTSoVITSRuntime(
                graph(SOVITS_ENCODER),
                graph(SOVITS_FLOW_VOCODER),
                int(inter),
                fallback or _NoFallback(entry.directory),
                max_frames=int(frames[2][2]) if frames else None,
            )
        elif fallback is not None:
            sovits = fallback
        else:
            raise RuntimeError(
                f"{entry.directory}: no SoVITS engines and no torch models to run SoVITS with"
            )
        log.info("TensorRT engines loaded from %s (%s)", entry.directory, entry.precision)
        return VoiceRuntime(gpt, sovits, self.name, *versions)


class _NoFallback:
    """Stands in for the torch fallback when no models were given: says so when used."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _fail(self, *args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError(
            f"{self.directory}: this window exceeds the SoVITS engines' profile and no torch "
            "models were given for the fallback (pass `models=` a loader)"
        )

    decode = content = render = _fail
