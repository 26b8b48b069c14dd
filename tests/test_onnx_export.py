"""ONNX export on tiny random models: graph IO, operator allow-list, manifest, and the
detection + repair of damaged exports.  Full-size parity lives in
test_onnxruntime_backend.py."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import shutil
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from kiosk_build import export_onnx
from kiosk_build.export_onnx import (
    GRAPH_FILES,
    MANIFEST,
    export_bert,
    export_gpt,
    export_voice,
    read_manifest,
    stale_families,
    verify_export,
    voice_sources,
)

from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
from engines.gpt.config import GPTConfig
from engines.gpt.decoding import generate
from engines.gpt.model import Text2SemanticModel
from engines.gpt.sampling import SamplingParams
from engines.onnx_graphs import contract
from engines.onnx_graphs.contract import GraphsUnavailableError, gpt_config_from_manifest
from engines.onnx_graphs.files import data_file_name
from engines.onnx_graphs.ops import TENSORRT_OPS, graph_ops
from engines.sovits.config import SoVITSConfig
from engines.sovits.synthesizer import SoVITSModel
from engines.voice_models import VoiceModels

TINY_GPT = GPTConfig(
    phoneme_vocab_size=40, vocab_size=65, eos_id=64, hidden_dim=32, num_heads=4,
    num_layers=2, ffn_dim=64, bert_dim=16, max_positions=300,
)  # fmt: skip
TINY_SOVITS = dataclasses.replace(
    SoVITSConfig.for_version("v2Pro"), hidden_channels=32, inter_channels=16,
    filter_channels=32, upsample_initial_channel=32, gin_channels=24, mrte_channels=16,
    ssl_dim=24, codebook_size=64, n_symbols=40, sv_dim=20,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def voice() -> VoiceModels:
    torch.manual_seed(0)
    gpt = Text2SemanticModel(TINY_GPT).eval()
    sovits = SoVITSModel(TINY_SOVITS).eval()
    return VoiceModels(gpt, sovits, "v2", "v2Pro")


@pytest.fixture(scope="module")
def exported(voice: VoiceModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete export (the SoVITS part takes ~45 s: the dynamo exporter's fixed cost)."""
    folder = tmp_path_factory.mktemp("onnx") / "voice"
    export_voice(voice, folder)
    return folder


def test_export_is_unchanged_for_the_caller(voice: VoiceModels, exported: Path) -> None:
    # Weight norm is folded on a copy only.
    assert any(k.endswith("weight_v") for k in voice.sovits.state_dict())
    for name, file_name in GRAPH_FILES.items():
        onnx.checker.check_model(str(exported / file_name))
        assert not any(
            "weight_v" in i.name for i in onnx.load(exported / file_name).graph.initializer
        ), name


def test_manifest_records_graphs_io_and_sources(voice: VoiceModels, exported: Path) -> None:
    manifest = json.loads((exported / MANIFEST).read_text())
    assert manifest["opset"] == export_onnx.OPSET
    assert manifest["max_len"] is None
    assert manifest["sources"] == voice_sources(voice)
    assert manifest["sources"]["gpt"]["sha256"].startswith("weights:")
    assert set(manifest["graphs"]) == set(GRAPH_FILES)
    decode = manifest["graphs"]["gpt_decode"]
    names = [i["name"] for i in decode["inputs"]]
    caches = ["k_cache_0", "v_cache_0", "k_cache_1", "v_cache_1"]
    assert names == ["token", "position", "slot", *caches]
    assert tuple(names) == export_onnx.graph_io("gpt_decode", 2)[0]
    shapes = {i["name"]: i["shape"] for i in decode["inputs"]}
    assert shapes["token"] == [1, 1] and shapes["slot"] == [1]
    assert shapes["k_cache_0"] == shapes["v_cache_1"] == [1, 4, "max_len", 8]
    outs = {o["name"]: o["shape"] for o in decode["outputs"]}
    assert outs["logits"] == [1, 65] and outs["new_k"] == [2, 1, 4, 1, 8]
    flow = {i["name"]: i["shape"] for i in manifest["graphs"]["sovits_flow_vocoder"]["inputs"]}
    assert flow["noise"][:2] == [1, 16] and flow["ge"] == [1, 24, 1]
    assert verify_export(exported, voice_sources(voice)) == []


def test_only_tensorrt_operators(exported: Path) -> None:
    """Every graph TensorRT builds from; the int8 decode graph is for ONNX Runtime's CPU EP."""
    for name, file_name in GRAPH_FILES.items():
        ops = graph_ops(exported / file_name)
        if name == "gpt_decode_int8":
            assert ops["com.microsoft::MatMulNBits"] == 4 * 2  # 4 projections x 2 layers
            assert ops["MatMul"] >= 1  # the logits projection stays FP32
            continue
        assert set(ops) <= TENSORRT_OPS, f"{file_name}: {sorted(set(ops) - TENSORRT_OPS)}"
        assert "Loop" not in ops and "If" not in ops


def test_bert_export_tiny(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    bert = BertModel(config).eval()
    info = export_bert(bert, tmp_path / "bert.onnx")  # also checks ORT == torch at 2 lengths
    assert [i["name"] for i in info.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert info.outputs[0]["shape"][1:] == ["length", 32]
    assert set(graph_ops(tmp_path / "bert.onnx")) <= TENSORRT_OPS
    import onnxruntime as ort

    ids = torch.randint(0, 50, (1, 9))
    with torch.no_grad():
        want = bert(ids, output_hidden_states=True).hidden_states[-3]
    session = ort.InferenceSession(str(tmp_path / "bert.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy(), "attention_mask": np.ones((1, 9), np.int64),
            "token_type_ids": np.zeros((1, 9), np.int64)}  # fmt: skip
    np.testing.assert_allclose(session.run(None, feed)[0], want.numpy(), atol=1e-5)


def test_static_max_len_decode_graph(voice: VoiceModels, tmp_path: Path) -> None:
    infos = export_gpt(voice.gpt, tmp_path, max_len=24)
    shapes = {i["name"]: i["shape"] for i in infos["gpt_decode"].inputs}
    assert shapes["k_cache_0"] == [1, 4, 24, 8]


def _sampled_runs(voice: VoiceModels, runtime: Any, prompt_len: int = 6) -> list[Any]:
    gen = torch.Generator().manual_seed(3)
    phones = torch.randint(0, 40, (11,), generator=gen)
    bert = torch.randn(16, 11, generator=gen)
    prompt = torch.randint(0, 64, (6,), generator=gen)[:prompt_len]
    params = SamplingParams(top_k=5, top_p=0.9, temperature=0.8, repetition_penalty=1.35)
    return [
        generate(
            rt,
            phones,
            bert,
            prompt,
            params,
            torch.Generator().manual_seed(7),
            max_new_tokens=30,
            keep_diagnostics=True,
        )
        for rt in (voice.gpt, runtime)
    ]


def test_sampled_decoding_matches_eager(voice: VoiceModels, exported: Path) -> None:
    """Top-k sampling from one seed: same tokens as eager, so the logits agree closely."""
    backend = OnnxRuntimeBackend(exported.parent, gpt_precision="fp32")
    runtime = backend.open_gpt(exported, voice)
    assert runtime.precision == "fp32"
    runs = _sampled_runs(voice, runtime)
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    assert float((runs[0].logits - runs[1].logits).abs().max()) < 1e-4
    # An empty prompt (P = 0) works as well.
    a, b = _sampled_runs(voice, runtime, prompt_len=0)
    assert torch.equal(a.tokens, b.tokens)


def test_int8_decode_is_validated_and_used(voice: VoiceModels, exported: Path) -> None:
    """The build checks the 8-bit graph's greedy tokens; "auto" then uses it on the CPU."""
    manifest = json.loads((exported / MANIFEST).read_text())
    verdict = manifest["graphs"]["gpt_decode_int8"]["validation"]
    assert verdict["passed"] is True, verdict
    assert 0 < verdict["tokens_compared"] <= 4 * 64 and 0 < verdict["max_logit_diff"] < 0.1
    runtime = OnnxRuntimeBackend(exported.parent).open_gpt(exported, voice)
    assert runtime.precision == "int8"
    runs = _sampled_runs(voice, runtime)
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    diff = float((runs[0].logits - runs[1].logits).abs().max())
    assert 0 < diff < 0.1  # quantised weights: close, not bit-equal


def test_failed_quantisation_leaves_a_usable_fp32_export(
    voice: VoiceModels,
    exported: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kiosk_build import quantize_int8

    def broken(src: Path, dst: Path) -> int:
        Path(dst).write_bytes(b"half a graph")
        raise RuntimeError("quantiser exploded")

    monkeypatch.setattr(quantize_int8, "quantize_decode_graph", broken)
    folder = tmp_path / "voice"
    shutil.copytree(exported, folder)
    manifest = export_onnx.export_voice(voice, folder, families=("gpt",))
    assert "gpt_decode_int8" not in manifest["graphs"]
    assert not (folder / GRAPH_FILES["gpt_decode_int8"]).exists()
    assert not (folder / data_file_name(GRAPH_FILES["gpt_decode_int8"])).exists()
    assert "quantiser exploded" in caplog.text and "decode in FP32" in caplog.text
    assert verify_export(folder, voice_sources(voice)) == []
    assert OnnxRuntimeBackend(tmp_path).open_gpt(folder, voice).precision == "fp32"


def test_failed_int8_verdict_keeps_fp32(voice: VoiceModels, exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "voice"
    shutil.copytree(exported, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["graphs"]["gpt_decode_int8"]["validation"]["passed"] = False
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert OnnxRuntimeBackend(tmp_path).open_gpt(folder, voice).precision == "fp32"
    with pytest.raises(ValueError, match="gpt_precision 'int4'"):
        OnnxRuntimeBackend(tmp_path, gpt_precision="int4")


def test_int8_check_rejects_a_graph_that_decodes_differently(
    voice: VoiceModels, exported: Path
) -> None:
    """The check is real: another model's weights behind the same graph fail it."""
    from kiosk_build.quantize_int8 import validate_int8

    other = copy.deepcopy(voice.gpt)
    with torch.no_grad():
        other.ar_predict_layer.weight.mul_(-1.0)
    verdict = validate_int8(
        other, exported / GRAPH_FILES["gpt_prefill"], exported / GRAPH_FILES["gpt_decode_int8"]
    )
    assert verdict["passed"] is False and "tokens differ from step" in verdict["detail"]


# ------------------------------------------------------------------ damaged exports
@pytest.fixture()
def cache(exported: Path, voice: VoiceModels, tmp_path: Path) -> tuple[OnnxRuntimeBackend, Path]:
    """A backend whose cache holds a copy of the good export under the voice's key."""
    backend = OnnxRuntimeBackend(tmp_path / "cache", intra_op_threads=1, export=export_voice)
    folder = backend.folder_for(voice_sources(voice))
    shutil.copytree(exported, folder)
    return backend, folder


def _assert_repaired(backend: OnnxRuntimeBackend, voice: VoiceModels, folder: Path) -> None:
    runtime = backend.load(voice)
    assert verify_export(folder, voice_sources(voice)) == []
    session = runtime.gpt.session(16)
    logits = session.prefill(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 16, 3),
                             torch.zeros(1, 2, dtype=torch.long))  # fmt: skip
    assert torch.isfinite(logits).all() and logits.shape == (1, 65)


def test_truncated_graph_is_reexported(
    cache: tuple[OnnxRuntimeBackend, Path], voice: VoiceModels
) -> None:
    backend, folder = cache
    path = folder / GRAPH_FILES["gpt_decode"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert stale_families(folder, voice_sources(voice)) == {"gpt"}
    _assert_repaired(backend, voice, folder)


def test_weights_apart_recorded_and_checked(
    cache: tuple[OnnxRuntimeBackend, Path], voice: VoiceModels, exported: Path
) -> None:
    manifest = read_manifest(exported)
    assert manifest is not None
    for name in ("gpt_prefill", "gpt_decode", "sovits_encoder", "sovits_flow_vocoder"):
        data = manifest["graphs"][name]["data"]
        weights = exported / data["file"]
        assert data["file"] == GRAPH_FILES[name] + ".data"
        assert data["file"] in manifest["data_files"]
        assert weights.stat().st_size > 50_000  # the tiny voice's weights
        mode = (exported / GRAPH_FILES[name]).stat().st_mode
        assert weights.stat().st_mode & 0o777 == mode & 0o777  # readable as the graph is
        assert data["sha256"] == contract.file_sha256(weights)
    assert manifest["graphs"]["gpt_decode_int8"]["data"]["file"] == "gpt_decode_int8.onnx.data"
    assert not list(exported.glob(".*.onnx.*"))  # no scratch folder left
    backend, folder = cache
    weights = folder / data_file_name(GRAPH_FILES["gpt_prefill"])
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte in the weights: same size
    weights.write_bytes(bytes(damaged))
    assert verify_export(folder, voice_sources(voice)) == [
        "gpt_prefill: gpt_prefill.onnx.data does not match its recorded SHA-256"
    ]
    weights.unlink()
    assert stale_families(folder, voice_sources(voice)) == {"gpt"}
    _assert_repaired(backend, voice, folder)


def test_wrong_manifest_hash_is_reexported(
    cache: tuple[OnnxRuntimeBackend, Path], voice: VoiceModels
) -> None:
    backend, folder = cache
    manifest = read_manifest(folder)
    assert manifest is not None
    manifest["sources"]["gpt"]["sha256"] = "weights:" + "0" * 64
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert stale_families(folder, voice_sources(voice)) == {"gpt"}
    _assert_repaired(backend, voice, folder)


def test_foreign_input_names_are_reexported(
    cache: tuple[OnnxRuntimeBackend, Path], voice: VoiceModels
) -> None:
    """A file whose hash matches its manifest but whose graph has other IO names."""
    backend, folder = cache
    path = folder / GRAPH_FILES["gpt_prefill"]
    model = onnx.load(path)
    old = model.graph.input[0].name
    model.graph.input[0].name = "phones"
    for node in model.graph.node:
        node.input[:] = ["phones" if i == old else i for i in node.input]
    onnx.save(model, path)
    manifest = read_manifest(folder)
    assert manifest is not None
    manifest["graphs"]["gpt_prefill"]["sha256"] = export_onnx.file_sha256(path)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert verify_export(folder, voice_sources(voice)) == []  # only the session sees it
    _assert_repaired(backend, voice, folder)


def test_damaged_sovits_graph_reexports_only_sovits(
    cache: tuple[OnnxRuntimeBackend, Path], voice: VoiceModels, exported: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    backend, folder = cache
    (folder / GRAPH_FILES["sovits_encoder"]).write_bytes(b"not an onnx file")
    (folder / MANIFEST).write_text("{ truncated")
    assert stale_families(folder, voice_sources(voice)) == {"gpt", "sovits"}
    (folder / MANIFEST).write_text((exported / MANIFEST).read_text())
    assert stale_families(folder, voice_sources(voice)) == {"sovits"}
    exported_families = []

    def fast_sovits(model: SoVITSModel, out_dir: Path, **kwargs: object) -> dict:
        # The real SoVITS export costs ~45 s; re-use the good graphs instead.
        exported_families.append("sovits")
        for name in ("sovits_encoder", "sovits_flow_vocoder"):
            for file in (GRAPH_FILES[name], data_file_name(GRAPH_FILES[name])):
                shutil.copy(exported / file, Path(out_dir) / file)
        manifest = read_manifest(exported) or {}
        return {
            name: _Info(manifest["graphs"][name])
            for name in ("sovits_encoder", "sovits_flow_vocoder")
        }

    monkeypatch.setattr(export_onnx, "export_sovits", fast_sovits)
    _assert_repaired(backend, voice, folder)
    assert exported_families == ["sovits"]


class _Info:
    def __init__(self, data: dict) -> None:
        self._data = data

    def as_json(self) -> dict:
        return self._data


# ------------------------------------------------------------------ the runtime's contract
def _no_models() -> VoiceModels:
    raise AssertionError("the torch models were loaded although the graphs are verified")


def test_verified_folder_runs_without_the_torch_models(voice: VoiceModels, exported: Path) -> None:
    """Config and versions come from the manifest; the lazy loader is never called."""
    manifest = read_manifest(exported)
    assert manifest is not None
    assert gpt_config_from_manifest(manifest) == voice.gpt.config
    backend = OnnxRuntimeBackend(graphs_dir=exported, gpt_precision="fp32", intra_op_threads=1)
    runtime = backend.load_graphs(models=_no_models, sources=voice_sources(voice))
    assert (runtime.gpt_version, runtime.sovits_version) == ("v2", "v2Pro")
    assert runtime.gpt.config == voice.gpt.config
    runs = _sampled_runs(voice, runtime.gpt)
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    # Without sources the folder is trusted once its own checks pass.
    assert OnnxRuntimeBackend(intra_op_threads=1).load_graphs(exported).backend == "onnxruntime"


def test_stale_folder_without_an_exporter_names_the_command(
    voice: VoiceModels, exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "voice"
    shutil.copytree(exported, folder)
    other = voice_sources(voice)
    other["gpt"] = {**other["gpt"], "sha256": "f" * 64}
    backend = OnnxRuntimeBackend(graphs_dir=folder)
    with pytest.raises(GraphsUnavailableError, match=r"gpt source hash .*kiosk export-onnx"):
        backend.load_graphs(models=voice, sources=other)
    with pytest.raises(GraphsUnavailableError, match=r"missing or unreadable.*kiosk export-onnx"):
        OnnxRuntimeBackend().load_graphs(tmp_path / "nothing", models=voice)
    exporting = OnnxRuntimeBackend(graphs_dir=folder, export=export_voice)
    with pytest.raises(GraphsUnavailableError, match="no torch models were given"):
        exporting.load_graphs(sources=other)


def test_lazy_models_are_loaded_once_to_export_and_not_kept(
    voice: VoiceModels, exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "voice"
    shutil.copytree(exported, folder)
    manifest = read_manifest(folder)
    assert manifest is not None
    manifest["sources"]["gpt"]["sha256"] = "0" * 64  # files of another GPT
    (folder / MANIFEST).write_text(json.dumps(manifest))
    loaded: list[weakref.ref[VoiceModels]] = []

    def models() -> VoiceModels:
        copy_ = VoiceModels(copy.deepcopy(voice.gpt), voice.sovits, "v2", "v2Pro")
        loaded.append(weakref.ref(copy_))
        return copy_

    backend = OnnxRuntimeBackend(graphs_dir=folder, export=export_voice, intra_op_threads=1)
    runtime = backend.load_graphs(models=models, sources=voice_sources(voice))
    assert len(loaded) == 1  # only the GPT was stale: one load, one GPT export
    gc.collect()
    assert loaded[0]() is None, "the runtime keeps a reference to the torch models"
    assert verify_export(folder, voice_sources(voice)) == []
    assert runtime.gpt.session(16).max_len == 16


def test_runtime_checks_graph_code_and_the_build_also_its_exporter(
    exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "voice"
    shutil.copytree(exported, folder)
    manifest = read_manifest(folder)
    assert manifest is not None
    manifest["exporter"] = "an older exporter"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert contract.verify_export(folder) == []  # still runs correctly
    assert stale_families(folder) == {"gpt", "sovits"}  # `kiosk export-onnx` redoes it
    manifest["code"] = "other graph code"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert contract.verify_export(folder) == ["exported by other graph code"]
    assert contract.stale_families(folder) == {"gpt", "sovits"}


def test_graph_hashes_are_checked_once_then_by_size_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A box re-hashes a graph only when the file changed since it last matched."""
    import hashlib
    import os

    from engines.onnx_graphs import contract

    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"x" * 1000)
    digest = hashlib.sha256(graph.read_bytes()).hexdigest()
    assert contract._has_sha256(graph, digest)
    stamp = json.loads((tmp_path / contract.VERIFIED_STAMP).read_text())
    assert stamp["g.onnx"][2] == digest
    calls: list[Path] = []
    real = contract.file_sha256
    monkeypatch.setattr(contract, "file_sha256", lambda p, *a: calls.append(p) or real(p, *a))
    assert contract._has_sha256(graph, digest) and calls == []  # stamp matches: no hashing
    graph.write_bytes(b"y" * 1000)  # same size, new content and mtime
    os.utime(graph, ns=(1, 1))
    assert not contract._has_sha256(graph, digest) and calls == [graph]
    assert not contract._has_sha256(graph, "not-a-hash")
