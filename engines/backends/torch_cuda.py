"""torch on a CUDA GPU: FP16 GPT with a static KV cache and a CUDA-graph decode step.

Why a graph: one decode step of the 24-layer GPT is ~300 small kernels, and on
a Jetson the CPU cannot launch them as fast as the GPU runs them.  Capturing
the step once and replaying it costs one launch per token.  A graph replays
fixed tensor addresses, hence the static pieces: the KV cache is allocated
once per runtime (length buckets are views of one storage, one captured graph
each) and the step reads its token / position / slot from 1-element tensors
updated in place.  An utterance starts in the smallest bucket that holds its
prefix and moves to the next one when a step reaches its end (no copy: the
buckets share the storage), so attention follows the filled length, not the
1 500-token cap the loop asks room for.

The CUDA specifics sit behind the `GraphCapture` seam: `CudaGraphCapture` is a
real `torch.cuda.CUDAGraph`, `EagerCapture` just calls the step.  With the
latter the whole runtime runs on the CPU, which is how the tests check its
control flow and numerics on machines without a GPU.

The loop-facing side lives on the host: inputs arrive on the CPU and logits
return to the CPU in float32, so sampling uses the same CPU generator (and
the same random stream) as the reference.  The per-step copy is 1025 floats;
the loop syncs on the token anyway.

Importing this module never touches CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from engines.gpt.config import GPTConfig
from engines.gpt.kv_cache import CACHE_BUCKETS, KVCache
from engines.gpt.model import Text2SemanticModel
from engines.sovits.synthesizer import SoVITSModel, Timbre
from engines.voice_models import VoiceModels

from .base import VoiceRuntime
from .precision import (
    FP32,
    PrecisionPolicy,
    ValidationCase,
    apply_gpt_policy,
    compare_greedy,
    configure_cuda_matmul,
    default_validation_cases,
)

log = logging.getLogger(__name__)

#: Cache capacities (text + prompt + generated positions) a session steps
#: through: the shared ones plus 2048 for the 1 500-token cap after a long
#: prefix.  Each bucket's graph is captured when a session first may need it.
DEFAULT_BUCKETS: tuple[int, ...] = (*CACHE_BUCKETS, 2048)

#: Side-stream iterations before capture: the CUDA-graph docs require warm-up
#: so lazy initialisation (cuBLAS handles, autotuning) happens outside capture.
WARMUP_ITERATIONS = 3


def cuda_status() -> tuple[bool, str]:
    """Whether torch can use a CUDA device here, and why not."""
    if not torch.backends.cuda.is_built():
        return False, f"no CUDA device: torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return False, "no CUDA device visible (driver missing or CUDA_VISIBLE_DEVICES empty)"
    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    return True, f"{name} (compute capability {major}.{minor})"


# ------------------------------------------------------------------- capture seam
class GraphCapture(Protocol):
    """Records a step once and re-runs it; the step writes into static buffers."""

    def capture(self, step: Callable[[], None]) -> None:
        """Prepare `step` for replay (warm up and record it, or just remember it)."""
        ...

    def replay(self) -> None:
        """Run the recorded step again with the current contents of its inputs."""
        ...


class EagerCapture:
    """Stand-in for CPUs, or GPUs where graphs fail: replay is a plain call."""

    def __init__(self) -> None:
        self._step: Callable[[], None] | None = None

    def capture(self, step: Callable[[], None]) -> None:
        self._step = step

    def replay(self) -> None:
        if self._step is None:
            raise RuntimeError("replay() before capture()")
        self._step()


class CudaGraphCapture:
    """A real `torch.cuda.CUDAGraph`: warm-up on a side stream, then capture."""

    def __init__(self, warmup: int = WARMUP_ITERATIONS) -> None:
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None

    def capture(self, step: Callable[[], None]) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        self.graph = graph

    def replay(self) -> None:
        if self.graph is None:
            raise RuntimeError("replay() before capture()")
        self.graph.replay()


def default_capture_factory(device: torch.device) -> Callable[[], GraphCapture]:
    """CUDA graphs on a CUDA device, plain calls elsewhere."""
    return CudaGraphCapture if device.type == "cuda" else EagerCapture


# ------------------------------------------------------------------------ the GPT
class _Bucket:
    """One cache capacity: a view of the shared cache plus its captured step."""

    def __init__(self, cache: KVCache, capture: GraphCapture) -> None:
        self.cache = cache
        self.capture = capture
        self.captured = False


class CudaGraphGPTRuntime:
    """`GPTRuntime` for torch on a device with a reduced-precision policy and graph replay.

    `capture_factory` is the seam: by default a CUDA graph on CUDA and eager
    calls elsewhere.  If capturing raises (old driver, unsupported op), the
    runtime logs it and continues eagerly with the same static buffers.
    """

    def __init__(
        self,
        model: Text2SemanticModel,
        device: torch.device | str = "cuda",
        policy: PrecisionPolicy | None = None,
        *,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        capture_factory: Callable[[], GraphCapture] | None = None,
    ) -> None:
        self.device_compute = torch.device(device)
        self.policy = policy or PrecisionPolicy(torch.float16)
        self.config: GPTConfig = model.config
        #: Loop-facing side: inputs and logits live on the host in float32.
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        if self.device_compute.type == "cuda":
            configure_cuda_matmul()
        self.model = apply_gpt_policy(model, self.policy, self.device_compute)
        self.buckets = tuple(sorted(set(buckets)))
        if not self.buckets or self.buckets[0] < 1:
            raise ValueError(f"buckets must be positive lengths, got {buckets!r}")
        self._capture_factory = capture_factory or default_capture_factory(self.device_compute)
        self._graphs_ok = True
        with torch.inference_mode():
            self._storage = KVCache.allocate(
                self.config,
                1,
                self.buckets[-1],
                dtype=self.policy.dtype,
                device=self.device_compute,
            )
            dev = self.device_compute
            self.token = torch.zeros(1, 1, dtype=torch.long, device=dev)
            self.position = torch.zeros(1, dtype=torch.long, device=dev)
            self.slot = torch.zeros(1, dtype=torch.long, device=dev)
            self.logits = torch.zeros(1, self.config.vocab_size, dtype=torch.float32, device=dev)
        self._buckets: dict[int, _Bucket] = {}
        #: Counters for logs and tests: captures made, steps replayed.
        self.captures = 0
        self.replays = 0

    # -------------------------------------------------------------- cache buckets
    def bucket_for(self, max_len: int) -> int:
        """Smallest bucket holding `max_len`; grows the shared storage if none does."""
        for size in self.buckets:
            if size >= max_len:
                return size
        log.info("GPT cache grows to %d positions (graphs are re-captured)", max_len)
        with torch.inference_mode():
            self._storage = KVCache.allocate(
                self.config, 1, max_len, dtype=self.policy.dtype, device=self.device_compute
            )
        self.buckets = (*self.buckets, max_len)
        self._buckets.clear()  # old graphs point at the old storage
        return max_len

    def _bucket(self, size: int) -> _Bucket:
        bucket = self._buckets.get(size)
        if bucket is None:
            view = KVCache(
                keys=self._storage.keys[:, :, :, :size], values=self._storage.values[:, :, :, :size]
            )
            bucket = _Bucket(view, self._capture_factory() if self._graphs_ok else EagerCapture())
            self._buckets[size] = bucket
        return bucket

    def _ensure_captured(self, bucket: _Bucket) -> None:
        if bucket.captured:
            return

        def step() -> None:
            hidden = self.model.decode_hidden(self.token, self.position, bucket.cache, self.slot)
            self.logits.copy_(self.model.logits(hidden))

        # Warm-up writes garbage at `slot`; any slot is fine because prefill
        # rewrites the prefix and each step writes its slot before reading it.
        try:
            bucket.capture.capture(step)
        except Exception as exc:  # capture is best effort; eager is always correct
            if isinstance(bucket.capture, EagerCapture):
                raise
            log.warning("CUDA graph capture failed (%s); decoding eagerly", exc)
            self._graphs_ok = False
            bucket.capture = EagerCapture()
            bucket.capture.capture(step)
        bucket.captured = True
        self.captures += 1

    @property
    def uses_graphs(self) -> bool:
        return self._graphs_ok and self._capture_factory is not EagerCapture

    def session(self, max_len: int) -> CudaGraphSession:
        """A session over the buckets up to the one holding `max_len`, all captured now
        (so no capture happens between two tokens)."""
        with torch.inference_mode():
            top = self.bucket_for(max_len)
            sizes = [size for size in self.buckets if size < top] + [top]
            buckets = [self._bucket(size) for size in sizes]
            for bucket in buckets:
                self._ensure_captured(bucket)
        return CudaGraphSession(self, buckets, max_len)


class CudaGraphSession:
    """One utterance on a `CudaGraphGPTRuntime`: eager prefill, replayed steps.

    `buckets` ascend and share one storage; the session uses the smallest one
    holding the slots written so far, so moving up needs no copy.
    """

    def __init__(
        self, runtime: CudaGraphGPTRuntime, buckets: Sequence[_Bucket], max_len: int
    ) -> None:
        self.runtime = runtime
        self.buckets = list(buckets)
        self.bucket = self.buckets[0]
        self.max_len = max_len
        self.last_hidden: torch.Tensor | None = None

    def _bucket_holding(self, length: int) -> _Bucket:
        """The smallest of the session's buckets with at least `length` slots."""
        for bucket in self.buckets:
            if bucket.cache.max_len >= length:
                return bucket
        raise IndexError(f"{length} positions exceed the session's largest bucket")

    @torch.inference_mode()
    def prefill(
        self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> torch.Tensor:
        rt = self.runtime
        dev, dtype = rt.device_compute, rt.policy.dtype
        self.bucket = self._bucket_holding(phone_ids.shape[1] + prompt_tokens.shape[1])
        hidden = rt.model.prefill_hidden(
            phone_ids.to(dev),
            bert.to(device=dev, dtype=dtype),
            prompt_tokens.to(dev),
            self.bucket.cache,
        )
        return rt.model.logits(hidden).float().cpu()

    @torch.inference_mode()
    def step(self, token: int, position: int, slot: int) -> torch.Tensor:
        if slot >= self.max_len:
            raise IndexError(f"slot {slot} beyond the session's {self.max_len} positions")
        if slot >= self.bucket.cache.max_len:
            self.bucket = self._bucket_holding(slot + 1)
        rt = self.runtime
        rt.token.fill_(token)
        rt.position.fill_(position)
        rt.slot.fill_(slot)
        self.bucket.capture.replay()
        rt.replays += 1
        return rt.logits.to("cpu", copy=True)  # the buffer is overwritten next step


# ------------------------------------------------------------------------ SoVITS
class TorchSoVITSRuntime:
    """SoVITS decode on a device in `dtype` (FP16 on CUDA by default).

    The prior noise is drawn on the CPU from the caller's generator in float32,
    exactly as the reference draws it, then moved over: same seed, same noise.
    Timbre vectors are computed outside (the reference encoder pools in FP32)
    and only cast here.  `content`/`render` decode windows for streaming; they
    take and return float32 CPU tensors like every other runtime.
    """

    def __init__(
        self,
        model: SoVITSModel,
        device: torch.device | str = "cuda",
        dtype: torch.dtype = torch.float16,
    ) -> None:
        import copy

        self.device = torch.device(device)
        self.dtype = dtype
        converted = copy.deepcopy(model).eval()
        converted.fold_weight_norm()
        self.model = converted.to(device=self.device, dtype=dtype)

    @torch.inference_mode()
    def decode(
        self,
        codes: torch.Tensor,
        text_ids: torch.Tensor,
        timbre: Timbre,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        dev, dtype = self.device, self.dtype
        ge = timbre.ge.to(device=dev, dtype=dtype)
        ge_text = timbre.ge_text.to(device=dev, dtype=dtype)
        m_p, logs_p, y_mask = self.model.encode(codes.to(dev), text_ids.to(dev), ge_text, speed)
        noise = None
        if noise_scale != 0:
            noise = torch.randn(m_p.shape, generator=generator, dtype=torch.float32)
            noise = noise.to(device=dev, dtype=dtype)
        z_p = self.model.sample_prior(m_p, logs_p, noise_scale, noise=noise)
        z = self.model.flow_reverse(z_p, y_mask, ge)
        return self.model.vocode(z, ge).float().cpu()

    def _on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=self.device, dtype=self.dtype)

    @torch.inference_mode()
    def content(
        self, codes: torch.Tensor, text_ids: torch.Tensor, ge_text: torch.Tensor
    ) -> torch.Tensor:
        """Encoder frames `[1,192,2T]` at speed 1 (see `SoVITSModel.content`)."""
        frames = self.model.content(
            codes.to(self.device), text_ids.to(self.device), self._on_device(ge_text)
        )
        return frames.float().cpu()

    @torch.inference_mode()
    def render(
        self, content: torch.Tensor, noise: torch.Tensor, noise_scale: float, ge: torch.Tensor
    ) -> torch.Tensor:
        """A window of encoder frames (+ its prior noise) to audio `[1,1,F*640]`."""
        audio = self.model.render(
            self._on_device(content), self._on_device(noise), noise_scale, self._on_device(ge)
        )
        return audio.float().cpu()


# ----------------------------------------------------------------------- backend
class TorchCudaBackend:
    """torch on CUDA: FP16 GPT (validated against FP32, FP32 fallback) + FP16 SoVITS."""

    name = "torch-cuda"

    def __init__(
        self,
        device: str = "cuda",
        gpt_policy: PrecisionPolicy | None = None,
        sovits_dtype: torch.dtype = torch.float16,
        *,
        validate: bool = True,
        validation_cases: list[ValidationCase] | None = None,
        validation_steps: int = 48,
        capture_factory: Callable[[], GraphCapture] | None = None,
        status: Callable[[], tuple[bool, str]] = cuda_status,
    ) -> None:
        self.device = device
        self.gpt_policy = gpt_policy or PrecisionPolicy(torch.float16)
        self.sovits_dtype = sovits_dtype
        self.validate = validate
        self.validation_cases = validation_cases
        self.validation_steps = validation_steps
        self.capture_factory = capture_factory
        self._status = status
        #: What the last `load` decided, for the log and the status page.
        self.decision: dict[str, object] = {}

    def availability(self) -> tuple[bool, str]:
        return self._status()

    def load(self, voice: VoiceModels) -> VoiceRuntime:
        reference = voice.gpt
        gpt = CudaGraphGPTRuntime(
            reference, self.device, self.gpt_policy, capture_factory=self.capture_factory
        )
        self.decision = {"gpt_precision": self.gpt_policy.label}
        if self.validate and self.gpt_policy.is_reduced:
            cases = self.validation_cases or default_validation_cases(reference.config)
            check = compare_greedy(reference, gpt, cases, self.validation_steps)
            self.decision["validation"] = check.as_dict()
            if check.passed:
                log.info(
                    "GPT %s matches FP32 greedy tokens: %s", self.gpt_policy.label, check.detail
                )
            else:
                log.warning(
                    "GPT %s differs from FP32 (%s); falling back to FP32 on %s",
                    self.gpt_policy.label,
                    check.detail,
                    self.device,
                )
                gpt = CudaGraphGPTRuntime(
                    reference, self.device, FP32, capture_factory=self.capture_factory
                )
                self.decision["gpt_precision"] = "fp32"
        sovits = TorchSoVITSRuntime(voice.sovits, self.device, self.sovits_dtype)
        return VoiceRuntime(gpt, sovits, self.name, voice.gpt_version, voice.sovits_version)
