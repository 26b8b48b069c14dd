"""GPU backends without a GPU: FP16 policy numerics on the CPU, CUDA-graph runtime
control flow through the capture seam, TensorRT build logic and bindings with a fake `trt`."""

from __future__ import annotations

import ctypes
import json
import logging
import types
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kiosk_build import tensorrt_build
from kiosk_build.engine_cache import EngineCache
from kiosk_build.tensorrt_build import (
    BuildError,
    BuildSettings,
    GpuInfo,
    ValidationOutcome,
    build_engines,
    profile_shapes,
    read_export,
)

from engines.backends import torch_cuda
from engines.backends.precision import (
    FP32LayerNorm,
    FP32Linear,
    GreedyComparison,
    PrecisionPolicy,
    apply_gpt_policy,
    compare_greedy,
    default_validation_cases,
)
from engines.backends.tensorrt_backend import TensorRTGPTRuntime, TRTGraph
from engines.backends.torch_cuda import (
    CudaGraphGPTRuntime,
    EagerCapture,
    TorchCudaBackend,
    cuda_status,
)
from engines.gpt import GPTConfig, SamplingParams, Text2SemanticModel, generate
from engines.gpt.runtime import TorchRuntime
from engines.voice_models import VoiceModels

TINY = GPTConfig(
    phoneme_vocab_size=50, vocab_size=65, eos_id=64, hidden_dim=64, num_heads=4,
    num_layers=2, ffn_dim=128, bert_dim=32, max_positions=512,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model() -> Text2SemanticModel:
    torch.manual_seed(0)
    return Text2SemanticModel(TINY).eval()


def _inputs(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    phones = torch.randint(1, TINY.phoneme_vocab_size, (9,), generator=g)
    bert = torch.randn(TINY.bert_dim, 9, generator=g)
    prompt = torch.randint(0, TINY.eos_id, (14,), generator=g)
    return phones, bert, prompt


# ===================================================================== FP16 policy
def test_policy_keeps_norms_and_logits_fp32(tiny_model: Text2SemanticModel) -> None:
    half = apply_gpt_policy(tiny_model, PrecisionPolicy(torch.float16))
    assert tiny_model.ar_predict_layer.weight.dtype == torch.float32  # original untouched
    assert type(tiny_model.h.layers[0].norm1) is torch.nn.LayerNorm
    layer = half.h.layers[0]
    assert isinstance(layer.norm1, FP32LayerNorm) and isinstance(layer.norm2, FP32LayerNorm)
    assert layer.norm1.weight.dtype == torch.float32
    assert layer.linear1.weight.dtype == torch.float16
    assert layer.self_attn.in_proj_weight.dtype == torch.float16
    assert isinstance(half.ar_predict_layer, FP32Linear)
    assert half.ar_predict_layer.weight.dtype == torch.float32
    # state-dict keys are unchanged, values equal up to the cast
    ref = tiny_model.state_dict()
    for name, value in half.state_dict().items():
        torch.testing.assert_close(value.float(), ref[name], atol=1e-3, rtol=1e-3)
    # norm output follows its input dtype; logits come out float32
    x = torch.randn(1, 3, TINY.hidden_dim, dtype=torch.float16)
    assert layer.norm1(x).dtype == torch.float16
    assert half.logits(x).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_greedy_tokens_match_fp32(
    tiny_model: Text2SemanticModel, dtype: torch.dtype
) -> None:
    runtime = CudaGraphGPTRuntime(tiny_model, "cpu", PrecisionPolicy(dtype), buckets=(64, 128))
    cases = default_validation_cases(TINY)
    check = compare_greedy(tiny_model, runtime, cases, steps=24)
    assert check.passed, check.detail
    assert sum(len(t) for t in check.reference_tokens) >= 2 * 11  # EOS is suppressed 11 steps
    tolerance = 0.1 if dtype == torch.bfloat16 else 0.02
    assert check.max_logit_diff < tolerance


def test_compare_greedy_reports_an_early_stop(tiny_model: Text2SemanticModel) -> None:
    broken = Text2SemanticModel(TINY).eval()
    broken.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():  # make EOS win as soon as it is allowed (the FP16 failure mode)
        broken.ar_predict_layer.weight[TINY.eos_id] *= 0
        broken.ar_predict_layer.weight[TINY.eos_id] += broken.ar_predict_layer.weight.sum(0)
    check = compare_greedy(tiny_model, broken, default_validation_cases(TINY, count=1), steps=30)
    assert isinstance(check, GreedyComparison)
    assert not check.passed and "tokens differ" in check.detail
    assert check.as_dict()["passed"] is False


# ============================================================ CUDA-graph runtime
class RecordingCapture:
    """Stands in for a CUDA graph: counts warm-ups, captures and replays."""

    instances: list[RecordingCapture] = []  # noqa: RUF012

    def __init__(self) -> None:
        self.step: Callable[[], None] | None = None
        self.warmups = self.replays = 0
        RecordingCapture.instances.append(self)

    def capture(self, step: Callable[[], None]) -> None:
        step()  # a warm-up before capture, as the real one does on a side stream
        self.warmups += 1
        self.step = step

    def replay(self) -> None:
        assert self.step is not None
        self.replays += 1
        self.step()


def test_graph_runtime_equals_torch_eager_on_cpu(tiny_model: Text2SemanticModel) -> None:
    phones, bert, prompt = _inputs()
    params = SamplingParams(top_k=5, temperature=0.8)
    eager = generate(
        TorchRuntime(tiny_model), phones, bert, prompt, params,
        torch.Generator().manual_seed(7), max_new_tokens=40, keep_diagnostics=True,
    )  # fmt: skip
    RecordingCapture.instances.clear()
    runtime = CudaGraphGPTRuntime(
        tiny_model, "cpu", PrecisionPolicy(torch.float32), buckets=(32, 64, 128),
        capture_factory=RecordingCapture,
    )  # fmt: skip
    graph = generate(
        runtime, phones, bert, prompt, params,
        torch.Generator().manual_seed(7), max_new_tokens=40, keep_diagnostics=True,
    )  # fmt: skip
    assert graph.tokens.tolist() == eager.tokens.tolist()
    assert eager.logits is not None and graph.logits is not None
    torch.testing.assert_close(graph.logits, eager.logits, atol=1e-5, rtol=1e-5)
    # 9 + 14 + 40 positions: the session starts in bucket 32 and moves on to 64,
    # both captured up front; one replay per decode step, split between them
    small, large = RecordingCapture.instances
    assert small.warmups == large.warmups == 1
    assert small.replays == 32 - 23 and small.replays + large.replays == graph.steps - 1
    assert runtime.captures == 2 and runtime.replays == graph.steps - 1


def test_buckets_share_storage_and_capture_once_each(tiny_model: Text2SemanticModel) -> None:
    RecordingCapture.instances.clear()
    runtime = CudaGraphGPTRuntime(
        tiny_model, "cpu", PrecisionPolicy(torch.float32), buckets=(32, 64),
        capture_factory=RecordingCapture,
    )  # fmt: skip
    phones, bert, prompt = _inputs()
    for max_new in (5, 8, 30, 30):
        generate(runtime, phones, bert, prompt, SamplingParams(top_k=1), None,
                 max_new_tokens=max_new)  # fmt: skip
    assert runtime.captures == 2 and len(RecordingCapture.instances) == 2
    small, large = (runtime._buckets[s].cache for s in (32, 64))
    assert small.keys.data_ptr() == large.keys.data_ptr()  # one storage
    # a longer utterance than any bucket grows the storage and recaptures
    assert runtime.bucket_for(100) == 100 and runtime._buckets == {}


def test_failed_capture_falls_back_to_eager(
    tiny_model: Text2SemanticModel, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def capture(self, step: Callable[[], None]) -> None:
            raise RuntimeError("operation not permitted when stream is capturing")

        def replay(self) -> None:  # pragma: no cover - never reached
            raise AssertionError

    runtime = CudaGraphGPTRuntime(
        tiny_model, "cpu", PrecisionPolicy(torch.float32), buckets=(64,), capture_factory=Broken
    )
    phones, bert, prompt = _inputs()
    with caplog.at_level(logging.WARNING):
        out = generate(runtime, phones, bert, prompt, SamplingParams(top_k=1), None,
                       max_new_tokens=12)  # fmt: skip
    ref = generate(tiny_model, phones, bert, prompt, SamplingParams(top_k=1), None,
                   max_new_tokens=12)  # fmt: skip
    assert out.tokens.tolist() == ref.tokens.tolist()
    assert "capture failed" in caplog.text and not runtime.uses_graphs
    assert isinstance(runtime._buckets[64].capture, EagerCapture)


def test_cuda_parts_are_guarded_on_this_machine() -> None:
    ok, why = cuda_status()
    if not torch.cuda.is_available():
        assert not ok and "no CUDA device" in why
        assert TorchCudaBackend().availability() == (False, why)
    assert torch_cuda.default_capture_factory(torch.device("cpu")) is EagerCapture


def _voice(model: Text2SemanticModel) -> VoiceModels:
    return VoiceModels(gpt=model, sovits=object(), gpt_version="v2", sovits_version="v2")  # type: ignore[arg-type]


def test_backend_validates_and_falls_back_to_fp32(
    tiny_model: Text2SemanticModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch_cuda, "TorchSoVITSRuntime", lambda *a: "sovits-runtime")
    backend = TorchCudaBackend(
        "cpu", PrecisionPolicy(torch.bfloat16), status=lambda: (True, "fake GPU"),
        validation_steps=16,
    )  # fmt: skip
    runtime = backend.load(_voice(tiny_model))
    assert backend.decision["gpt_precision"] == "bf16"
    assert runtime.gpt.policy.dtype == torch.bfloat16 and runtime.backend == "torch-cuda"

    def fails(*args: Any, **kwargs: Any) -> GreedyComparison:
        return GreedyComparison(False, detail="case 0: tokens differ from step 11")

    monkeypatch.setattr(torch_cuda, "compare_greedy", fails)
    runtime = backend.load(_voice(tiny_model))
    assert backend.decision["gpt_precision"] == "fp32"
    assert runtime.gpt.policy.dtype == torch.float32


@pytest.mark.slow
def test_sovits_runtime_matches_eager_with_same_seed() -> None:
    from engines.sovits.synthesizer import SoVITSModel, Timbre

    torch.manual_seed(0)
    model = SoVITSModel.for_version("v2").eval()
    runtime = torch_cuda.TorchSoVITSRuntime(model, "cpu", torch.float32)
    codes = torch.randint(0, 1024, (1, 1, 4))
    text = torch.randint(1, 300, (1, 5))
    ge = torch.randn(1, 512, 1)
    timbre = Timbre(ge, ge, ge)
    with torch.inference_mode():
        ref = model.decode(codes, text, timbre, generator=torch.Generator().manual_seed(3))
    out = runtime.decode(codes, text, timbre, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


# ============================================================ fake TensorRT module
class LayerType(Enum):
    NORMALIZATION = 1
    SOFTMAX = 2
    MATRIX_MULTIPLY = 3
    ELEMENTWISE = 4
    SHAPE = 5


class DataType(Enum):
    FLOAT = 0
    HALF = 1
    INT32 = 3
    INT64 = 4
    BOOL = 6
    INT8 = 2


class FakeTensor:
    def __init__(self, name: str, shape: tuple[int, ...] = (), dtype: DataType = DataType.FLOAT):
        self.name, self.shape, self.dtype = name, shape, dtype


class FakeLayer:
    def __init__(self, name: str, type_: LayerType, dtypes: tuple[DataType, ...]) -> None:
        self.name, self.type = name, type_
        self.outputs = [FakeTensor(f"{name}:{i}", (), d) for i, d in enumerate(dtypes)]
        self.precision: DataType | None = None
        self.output_types: dict[int, DataType] = {}

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, i: int) -> FakeTensor:
        return self.outputs[i]

    def set_output_type(self, i: int, dtype: DataType) -> None:
        self.output_types[i] = dtype


#: Per ONNX file name: (inputs, outputs, layers) of the parsed network.
NETWORKS: dict[str, Any] = {
    "gpt_prefill.onnx": (
        [FakeTensor("phone_ids", (1, -1), DataType.INT64), FakeTensor("bert", (1, 32, -1)),
         FakeTensor("prompt", (1, -1), DataType.INT64)],
        [FakeTensor("logits"), FakeTensor("keys"), FakeTensor("values")],
        [FakeLayer("/model/h/layers.0/norm1/LayerNormalization", LayerType.NORMALIZATION,
                   (DataType.HALF,)),
         FakeLayer("/model/h/layers.0/Softmax", LayerType.SOFTMAX, (DataType.HALF,)),
         FakeLayer("/model/h/layers.0/linear1/MatMul", LayerType.MATRIX_MULTIPLY, (DataType.HALF,)),
         FakeLayer("/model/ar_predict_layer/MatMul", LayerType.MATRIX_MULTIPLY, (DataType.HALF,)),
         FakeLayer("/model/h/layers.1/norm2/Shape", LayerType.SHAPE, (DataType.INT64,)),
         FakeLayer("/model/h/layers.1/norm2/Sub", LayerType.ELEMENTWISE, (DataType.HALF,))],
    ),
    "gpt_decode.onnx": (
        [FakeTensor("token", (1, 1), DataType.INT64), FakeTensor("position", (1,), DataType.INT64),
         FakeTensor("slot", (1,), DataType.INT64),
         *(FakeTensor(f"{kind}_cache_{i}", (1, 4, -1, 16)) for i in range(2) for kind in "kv")],
        [FakeTensor("logits"), FakeTensor("new_k"), FakeTensor("new_v")],
        [FakeLayer("/model/ar_predict_layer/MatMul", LayerType.MATRIX_MULTIPLY, (DataType.HALF,))],
    ),
    "sovits_encoder.onnx": (
        [FakeTensor("codes", (1, 1, -1), DataType.INT64),
         FakeTensor("text_ids", (1, -1), DataType.INT64), FakeTensor("ge_text", (1, 512, 1))],
        [FakeTensor("content")],
        [FakeLayer("/enc_p/mrte/Softmax", LayerType.SOFTMAX, (DataType.HALF,))],
    ),
}  # fmt: skip


class FakeNetwork:
    def __init__(self) -> None:
        self.inputs: list[FakeTensor] = []
        self.outputs: list[FakeTensor] = []
        self.layers: list[FakeLayer] = []

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, i: int) -> FakeTensor:
        return self.inputs[i]

    def get_output(self, i: int) -> FakeTensor:
        return self.outputs[i]

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]


class FakeParser:
    def __init__(self, network: FakeNetwork, logger: Any) -> None:
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        import copy

        inputs, outputs, layers = copy.deepcopy(NETWORKS[Path(path).name])
        self.network.inputs, self.network.outputs, self.network.layers = inputs, outputs, layers
        FakeTrt.networks[Path(path).stem].append(self.network)
        return True

    def get_error(self, i: int) -> str:  # pragma: no cover
        return "error"


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Any, Any, Any]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+timed"


class FakeConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.pools: dict[str, int] = {}
        self.profiles: list[FakeProfile] = []
        self.timing: FakeTimingCache | None = None
        self.progress_monitor: Any = None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        FakeTrt.timing_reads.append(bytes(data))
        return FakeTimingCache(bytes(data))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.timing = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache | None:
        return self.timing


class FakeBuilder:
    def __init__(self, logger: Any) -> None:
        self.network: FakeNetwork | None = None

    def create_network(self, flags: int) -> FakeNetwork:
        FakeTrt.network_flags.append(flags)
        self.network = FakeNetwork()
        return self.network

    def create_builder_config(self) -> FakeConfig:
        config = FakeConfig()
        FakeTrt.configs.append(config)
        return config

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes:
        precision = "fp16" if "FP16" in config.flags else "fp32"
        name = next(k for k, v in FakeTrt.networks.items() if network in v)
        return f"{name}:{precision}".encode()


class FakeTrt(types.SimpleNamespace):
    """Class-level records of what the builder was asked to do."""

    networks: dict[str, list[FakeNetwork]] = {}  # noqa: RUF012
    configs: list[FakeConfig] = []  # noqa: RUF012
    timing_reads: list[bytes] = []  # noqa: RUF012
    network_flags: list[int] = []  # noqa: RUF012

    @classmethod
    def module(cls, version: str = "10.3.0") -> Any:
        from collections import defaultdict

        cls.networks = defaultdict(list)
        cls.configs, cls.timing_reads, cls.network_flags = [], [], []

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                self.level = level

        return types.SimpleNamespace(
            __version__=version,
            Logger=Logger,
            Builder=FakeBuilder,
            OnnxParser=FakeParser,
            NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0),
            BuilderFlag=types.SimpleNamespace(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY"),
            MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
            LayerType=LayerType,
            DataType=DataType,
        )


def _export(tmp_path: Path, names: tuple[str, ...] = ("gpt_prefill", "gpt_decode")) -> Path:
    """An export folder shaped like `kiosk_build.export_onnx` writes it."""
    folder = tmp_path / "export"
    folder.mkdir()
    graphs = {}
    for name in names:
        (folder / f"{name}.onnx").write_bytes(b"onnx " + name.encode())
        inputs, _, _ = NETWORKS[f"{name}.onnx"]
        shapes = {
            "phone_ids": [1, "num_phones"], "bert": [1, 32, "num_phones"],
            "prompt": [1, "num_prompt"], "codes": [1, 1, "num_codes"],
            "text_ids": [1, "num_phones"],
            **{f"{kind}_cache_{i}": [1, 4, "max_len", 16] for i in range(2) for kind in "kv"},
        }  # fmt: skip
        graphs[name] = {
            "file": f"{name}.onnx",
            "inputs": [
                {"name": t.name, "shape": shapes.get(t.name, list(t.shape))} for t in inputs
            ],
        }
    manifest = {
        "graphs": graphs,
        "sources": {"gpt": {"sha256": "11" * 32}, "sovits": {"sha256": "22" * 32}},
        "profiles": {"num_prompt": [1, 100, 400]},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


GPU = GpuInfo("Orin", "8.7", "12.6")


def test_read_export_takes_dynamic_axes_from_named_dims(tmp_path: Path) -> None:
    export = read_export(_export(tmp_path))
    prefill = export.graphs["gpt_prefill"]
    assert prefill.group == "gpt"
    assert prefill.dynamic_axes["bert"] == {2: "num_phones"}
    assert export.graphs["gpt_decode"].dynamic_axes["v_cache_1"] == {2: "max_len"}
    assert export.profiles == {"num_prompt": (1, 100, 400)}
    assert export.model_hash and len(export.model_hash) == 64


def test_read_export_skips_cpu_only_graphs(tmp_path: Path) -> None:
    """The 8-bit decode graph uses ONNX Runtime CPU operators: no engine is built from it."""
    folder = _export(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "gpt_decode_int8.onnx").write_bytes(b"MatMulNBits")
    manifest["graphs"]["gpt_decode_int8"] = {
        "file": "gpt_decode_int8.onnx", "inputs": [], "cpu_only": True,
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "gpt_decode_int8" not in read_export(folder).graphs
    assert "gpt_decode" in read_export(folder).graphs


def test_profile_shapes_fixed_inputs_need_no_profile() -> None:
    shapes = profile_shapes(
        {"token": [1, 1], "bert": [1, 32, -1]}, {"bert": {2: "num_phones"}},
        {"num_phones": (1, 96, 512)},
    )  # fmt: skip
    assert shapes == {"bert": ((1, 32, 1), (1, 32, 96), (1, 32, 512))}
    with pytest.raises(BuildError, match="does not name it"):
        profile_shapes({"bert": [1, -1, -1]}, {"bert": {2: "n"}}, {"n": (1, 2, 3)})


def test_build_sets_fp16_profiles_workspace_precision_and_timing_cache(tmp_path: Path) -> None:
    trt = FakeTrt.module()
    out = tmp_path / "engines"
    report = build_engines(
        _export(tmp_path), out, GPU, voice="anna", trt_module=trt,
        settings=BuildSettings(workspace_bytes=512 << 20),
    )  # fmt: skip
    assert report.built
    assert FakeTrt.network_flags == [0, 0]  # TensorRT 10: explicit batch is implicit
    prefill_cfg, decode_cfg = FakeTrt.configs
    for config in FakeTrt.configs:
        assert {"FP16", "OBEY"} <= config.flags
        assert config.pools == {"WORKSPACE": 512 << 20}
    (profile,) = prefill_cfg.profiles
    assert profile.shapes["phone_ids"] == ((1, 1), (1, 96), (1, 512))
    assert profile.shapes["bert"] == ((1, 32, 1), (1, 32, 96), (1, 32, 512))
    assert profile.shapes["prompt"] == ((1, 1), (1, 100), (1, 400))  # manifest override
    assert decode_cfg.profiles[0].shapes["k_cache_1"][2] == (1, 4, 2600, 16)
    assert "token" not in decode_cfg.profiles[0].shapes  # static inputs: no profile

    # FP32 islands: LayerNorm (type and decomposed by name), softmax, logits; not FFN
    layers = {layer.name: layer for layer in FakeTrt.networks["gpt_prefill"][0].layers}
    pinned = {n for n, layer in layers.items() if layer.precision == DataType.FLOAT}
    assert pinned == {
        "/model/h/layers.0/norm1/LayerNormalization", "/model/h/layers.0/Softmax",
        "/model/ar_predict_layer/MatMul", "/model/h/layers.1/norm2/Sub",
    }  # fmt: skip
    assert layers["/model/ar_predict_layer/MatMul"].output_types == {0: DataType.FLOAT}
    assert layers["/model/h/layers.1/norm2/Shape"].output_types == {}  # int stays int
    # the KV cache crosses the engine boundary in FP16
    decode_net = FakeTrt.networks["gpt_decode"][0]
    assert [t.dtype for t in decode_net.inputs[3:]] == [DataType.HALF] * 4

    # timing cache: created empty, then read back by the second graph, saved to disk
    assert FakeTrt.timing_reads == [b"", b"+timed"]
    (timing_file,) = out.glob("timing-*.cache")
    assert "Orin-sm8-7-trt10-3-0" in timing_file.name
    assert timing_file.read_bytes() == b"+timed+timed"

    manifest = json.loads((report.entry_dir / "manifest.json").read_text())
    assert manifest["key"]["gpu_name"] == "Orin" and manifest["key"]["compute_capability"] == "8.7"
    assert manifest["settings"]["workspace_bytes"] == 512 << 20
    assert manifest["precision"]["graphs"]["gpt_decode"]["precision"] == "fp16"
    assert manifest["precision"]["groups"]["gpt"]["validation"].startswith("not run")
    assert (report.entry_dir / "gpt_decode.engine").read_bytes() == b"gpt_decode:fp16"


def test_second_build_reuses_the_cache_and_key_changes_rebuild(tmp_path: Path) -> None:
    export, out = _export(tmp_path), tmp_path / "engines"
    build_engines(export, out, GPU, trt_module=FakeTrt.module())
    again = build_engines(export, out, GPU, trt_module=FakeTrt.module())
    assert not again.built and FakeTrt.configs == []
    newer = build_engines(export, out, GPU, trt_module=FakeTrt.module("10.7.0"))
    assert newer.built and "trt_version" in newer.reason
    other_gpu = GpuInfo("NVIDIA GeForce RTX 3060", "8.6", "12.6")
    rebuilt = build_engines(export, out, other_gpu, trt_module=FakeTrt.module("10.7.0"))
    assert rebuilt.built and "gpu_name" in rebuilt.reason and "compute_capability" in rebuilt.reason


def test_validation_failure_rebuilds_the_group_in_fp32(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[dict[str, bytes]] = []

    def gpt_validator(engines: Mapping[str, bytes]) -> ValidationOutcome:
        seen.append(dict(engines))
        fp16 = any(v.endswith(b":fp16") for v in engines.values())
        detail = "tokens differ from step 11" if fp16 else "identical"
        return ValidationOutcome(not fp16, detail, {"max_logit_diff": 3.0 if fp16 else 0.0})

    with caplog.at_level(logging.WARNING, logger=tensorrt_build.__name__):
        report = build_engines(
            _export(tmp_path, ("gpt_prefill", "gpt_decode", "sovits_encoder")),
            tmp_path / "engines", GPU, trt_module=FakeTrt.module(),
            validators={"gpt": gpt_validator},
        )  # fmt: skip
    assert "rebuilding in FP32" in caplog.text
    assert [sorted(s) for s in seen] == [["gpt_decode", "gpt_prefill"]] * 2
    group = report.precision["groups"]["gpt"]
    assert group["fallback"] == "fp32"
    assert group["fp16_validation"]["passed"] is False
    assert group["fp32_validation"]["passed"] is True
    graphs = report.precision["graphs"]
    assert graphs["gpt_prefill"]["precision"] == "fp32"
    assert graphs["sovits_encoder"]["precision"] == "fp16"  # other groups keep FP16
    assert (report.entry_dir / "gpt_prefill.engine").read_bytes() == b"gpt_prefill:fp32"
    fp32_configs = [c for c in FakeTrt.configs if "FP16" not in c.flags]
    assert len(fp32_configs) == 2 and all("OBEY" not in c.flags for c in fp32_configs)
    manifest = json.loads((report.entry_dir / "manifest.json").read_text())
    assert manifest["precision"]["groups"]["gpt"]["fallback"] == "fp32"


def test_nothing_is_installed_when_fp32_fails_too(tmp_path: Path) -> None:
    out = tmp_path / "engines"
    with pytest.raises(BuildError, match="even in FP32"):
        build_engines(
            _export(tmp_path), out, GPU, trt_module=FakeTrt.module(),
            validators={"gpt": lambda engines: ValidationOutcome(False, "EOS at step 11")},
        )  # fmt: skip
    assert EngineCache(out).lookup("voice", _key_of(tmp_path)).reason == "no engines built yet"


def _key_of(tmp_path: Path) -> Any:
    return tensorrt_build.engine_key(read_export(tmp_path / "export"), GPU, "10.3.0")


def test_missing_graph_file_is_a_clear_error(tmp_path: Path) -> None:
    export = _export(tmp_path)
    (export / "gpt_decode.onnx").unlink()
    with pytest.raises(BuildError, match=r"gpt_decode.*missing"):
        build_engines(export, tmp_path / "engines", GPU, trt_module=FakeTrt.module())


def test_main_reports_missing_tensorrt(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert tensorrt_build.main([str(_export(tmp_path)), str(tmp_path / "e")]) == 1
    else:  # pragma: no cover - only where TensorRT exists
        pytest.skip("TensorRT installed")


# ======================================================= TensorRT bindings (fake)
_TORCH_OF = {DataType.FLOAT: torch.float32, DataType.HALF: torch.float16,
             DataType.INT64: torch.int64, DataType.INT32: torch.int32}  # fmt: skip
_CTYPE = {torch.float32: ctypes.c_float, torch.int64: ctypes.c_int64}


def _view(ptr: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor over memory given by address: how the fake engine reads its bindings."""
    count = 1
    for d in shape:
        count *= d
    buffer = (_CTYPE[dtype] * count).from_address(ptr)
    return torch.frombuffer(buffer, dtype=dtype, count=count).view(shape)


class FakeEngine:
    """An 'engine' that runs a torch module on the bound CPU memory."""

    def __init__(self, module: torch.nn.Module, inputs: dict[str, Any], outputs: dict[str, Any]):
        self.module, self.inputs, self.outputs = module, inputs, outputs
        self.names = list(inputs) + list(outputs)

    num_io_tensors = property(lambda self: len(self.names))

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.inputs else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> DataType:
        return (
            DataType.INT64
            if name in ("phone_ids", "prompt", "token", "position", "slot", "codes", "text_ids")
            else DataType.FLOAT
        )

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1,)

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.streams: list[int] = []
        self._outputs: dict[str, torch.Tensor] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        self._outputs = {}  # output shapes follow the inputs set so far
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        # TensorRT infers output shapes from the input shapes; emulate by running the module.
        if not self._outputs:
            args = [
                torch.zeros(self.shapes[n], dtype=_dtype(self.engine, n))
                for n in self.engine.inputs
            ]
            with torch.no_grad():
                outs = self.engine.module(*args)
            outs = (outs,) if isinstance(outs, torch.Tensor) else outs
            self._outputs = dict(zip(self.engine.outputs, outs, strict=True))
        return tuple(self._outputs[name].shape)

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        self.streams.append(stream)
        args = [_view(self.addresses[n], self.shapes[n], _dtype(self.engine, n)).clone()
                for n in self.engine.inputs]  # fmt: skip
        with torch.no_grad():
            outs = self.engine.module(*args)
        outs = (outs,) if isinstance(outs, torch.Tensor) else outs
        for name, value in zip(self.engine.outputs, outs, strict=True):
            _view(self.addresses[name], tuple(value.shape), value.dtype).copy_(value)
        return True


def _dtype(engine: FakeEngine, name: str) -> torch.dtype:
    return _TORCH_OF[engine.get_tensor_dtype(name)]


def _fake_runtime_trt(engines: dict[bytes, FakeEngine]) -> Any:
    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
            return engines.get(data)

    trt = FakeTrt.module()
    trt.Runtime = Runtime
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    return trt


def test_tensorrt_gpt_runtime_binds_torch_tensors_and_matches_eager(
    tiny_model: Text2SemanticModel,
) -> None:
    from engines.onnx_graphs.gpt import GPTDecodeGraph, GPTPrefillGraph, cache_input_names

    prefill = FakeEngine(
        GPTPrefillGraph(tiny_model), dict.fromkeys(("phone_ids", "bert", "prompt")),
        dict.fromkeys(("logits", "keys", "values")),
    )  # fmt: skip
    decode = FakeEngine(
        GPTDecodeGraph(tiny_model),
        dict.fromkeys(("token", "position", "slot", *cache_input_names(TINY.num_layers))),
        dict.fromkeys(("logits", "new_k", "new_v")),
    )  # fmt: skip
    trt = _fake_runtime_trt({b"prefill": prefill, b"decode": decode})
    graphs = [
        TRTGraph(trt, data, name, device="cpu", stream_handle=lambda: 1234)
        for data, name in ((b"prefill", "gpt_prefill"), (b"decode", "gpt_decode"))
    ]
    runtime = TensorRTGPTRuntime(TINY, *graphs)
    phones, bert, prompt = _inputs()
    params = SamplingParams(top_k=3)
    got = generate(runtime, phones, bert, prompt, params, torch.Generator().manual_seed(5),
                   max_new_tokens=30, keep_diagnostics=True)  # fmt: skip
    ref = generate(tiny_model, phones, bert, prompt, params, torch.Generator().manual_seed(5),
                   max_new_tokens=30, keep_diagnostics=True)  # fmt: skip
    assert got.tokens.tolist() == ref.tokens.tolist()
    assert got.logits is not None and ref.logits is not None
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-4, rtol=1e-4)
    context = graphs[1].context
    assert set(context.streams) == {1234}  # every launch on the given stream
    assert context.shapes["k_cache_1"] == (1, 4, phones.numel() + prompt.numel() + 30 - 1, 16)


def test_trt_graph_checks_inputs_and_preallocated_outputs(tiny_model: Text2SemanticModel) -> None:
    from engines.onnx_graphs.gpt import GPTPrefillGraph

    engine = FakeEngine(
        GPTPrefillGraph(tiny_model), dict.fromkeys(("phone_ids", "bert", "prompt")),
        dict.fromkeys(("logits", "keys", "values")),
    )  # fmt: skip
    trt = _fake_runtime_trt({b"e": engine})
    graph = TRTGraph(trt, b"e", device="cpu", stream_handle=lambda: 0)
    assert graph.inputs["phone_ids"] == torch.int64 and graph.outputs["logits"] == torch.float32
    with pytest.raises(KeyError, match="missing inputs"):
        graph.run({"phone_ids": torch.zeros(1, 3, dtype=torch.long)})
    phones, bert, prompt = _inputs()
    feeds = {"phone_ids": phones[None].int(), "bert": bert[None].double(), "prompt": prompt[None]}
    logits = torch.empty(1, TINY.vocab_size)
    out = graph.run(feeds, out={"logits": logits})
    assert out["logits"] is logits  # written in place
    assert graph.context.addresses["logits"] == logits.data_ptr()
    assert out["keys"].shape == (2, 1, 4, phones.numel() + prompt.numel(), 16)
    with pytest.raises(RuntimeError, match="deserialize"):
        TRTGraph(trt, b"stale", device="cpu")


# ============================================================ streaming windows
@pytest.fixture(scope="module")
def sovits_v2() -> Any:
    from engines.sovits.synthesizer import SoVITSModel

    torch.manual_seed(0)
    return SoVITSModel.for_version("v2").eval()


def _streamed(sovits: Any, model: Any) -> np.ndarray:
    """Chunks for a growing 30-token sequence, as the player would receive them."""
    from engines.sovits.synthesizer import Timbre
    from engines.streaming import ChunkVocoder, StreamSettings

    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 1024, (30,), generator=gen).tolist()
    text = torch.randint(1, 300, (1, 9), generator=gen)
    ge = torch.randn(1, 512, 1, generator=gen) * 0.1
    settings = StreamSettings(first_chunk_tokens=8, chunk_tokens=8)
    vocoder = ChunkVocoder(sovits, text, Timbre(ge, ge, ge), 0.5,
                           torch.Generator().manual_seed(4), settings)  # fmt: skip
    chunks = [vocoder.push(tokens[:n]) for n in (8, 16, 24)]
    chunks.append(vocoder.push(tokens, final=True))
    assert all(len(c) for c in chunks)
    return np.concatenate(chunks)


@pytest.mark.slow
def test_torch_cuda_sovits_streams_windows_like_eager(sovits_v2: Any) -> None:
    from engines.streaming import supports_windows

    runtime = torch_cuda.TorchSoVITSRuntime(sovits_v2, "cpu", torch.float32)
    assert supports_windows(runtime)
    np.testing.assert_allclose(_streamed(runtime, sovits_v2), _streamed(sovits_v2, sovits_v2),
                               atol=1e-4)  # fmt: skip


@pytest.mark.slow
def test_tensorrt_sovits_streams_through_its_engines_with_torch_fallback(sovits_v2: Any) -> None:
    """Windows run the encoder and flow+vocoder engines; longer ones than the engines'
    profile go to the torch runtime, and the audio is the same either way."""
    from engines.backends.tensorrt_backend import TensorRTSoVITSRuntime
    from engines.onnx_graphs.sovits import SoVITSEncoderGraph, SoVITSFlowVocoderGraph
    from engines.streaming import supports_windows

    engines = {
        b"encoder": FakeEngine(SoVITSEncoderGraph(sovits_v2),
                               dict.fromkeys(("codes", "text_ids", "ge_text")),
                               dict.fromkeys(("content",))),
        b"flow": FakeEngine(SoVITSFlowVocoderGraph(sovits_v2),
                            dict.fromkeys(("content", "noise", "noise_scale", "ge")),
                            dict.fromkeys(("audio",))),
    }  # fmt: skip
    trt = _fake_runtime_trt(engines)
    encoder, flow = (
        TRTGraph(trt, data, name, device="cpu", stream_handle=lambda: 7)
        for data, name in ((b"encoder", "sovits_encoder"), (b"flow", "sovits_flow_vocoder"))
    )
    fallback = torch_cuda.TorchSoVITSRuntime(sovits_v2, "cpu", torch.float32)
    calls: list[str] = []
    for method in ("content", "render"):
        original = getattr(fallback, method)

        def counted(*args: Any, _name: str = method, _fn: Any = original) -> Any:
            calls.append(_name)
            return _fn(*args)

        setattr(fallback, method, counted)
    runtime = TensorRTSoVITSRuntime(encoder, flow, 192, fallback, max_frames=40)
    assert supports_windows(runtime)
    got = _streamed(runtime, sovits_v2)
    np.testing.assert_allclose(got, _streamed(sovits_v2, sovits_v2), atol=1e-4)
    assert encoder.context.streams and flow.context.streams  # the engines ran
    assert "content" in calls  # 24 and 30 tokens = 48 and 60 frames: over the profile
    # A whole short utterance (20 frames) runs on the engines alone, seeded like eager.
    from engines.sovits.synthesizer import Timbre

    calls.clear()
    codes, text = torch.randint(0, 1024, (1, 1, 10)), torch.randint(1, 300, (1, 7))
    ge = torch.randn(1, 512, 1) * 0.1
    timbre = Timbre(ge, ge, ge)
    got = runtime.decode(codes, text, timbre, 1.0, 0.5, torch.Generator().manual_seed(9))
    with torch.inference_mode():
        want = sovits_v2.decode(codes, text, timbre, 1.0, 0.5, torch.Generator().manual_seed(9))
    assert calls == []
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
