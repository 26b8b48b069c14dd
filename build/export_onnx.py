"""Build step: export a voice's GPT and SoVITS networks to ONNX graphs plus a manifest.

What the folder holds, how it is verified and what the manifest records is the
graph contract of the runtime, `engines.onnx_graphs.contract` (file names, IO
names, manifest format, source hashes).  This module writes such folders:

* `export_gpt`: the prefill and decode-step graphs (TorchScript exporter), then
  `gpt_decode_int8.onnx`, an 8-bit-weight copy of the decode step for CPUs,
  with its greedy-token verdict against FP32 (`quantize_int8`); a failed
  quantisation leaves a usable FP32 export.
* `export_sovits`: encoder and flow+vocoder, weight norm folded on a copy
  (dynamo exporter: the TorchScript one produced a wrong encoder).
* `export_bert`: the shared BERT feature graph.
* `export_voice`: both families (or one, keeping the other) into a staging
  folder that replaces the output only when complete; the manifest is written
  last and records each graph's SHA-256 and IO, the full GPT config, the model
  versions, the sources' hashes, the graph code's fingerprint (checked by every
  runtime) and this exporter's own fingerprint (checked by `verify_export`
  here, so a changed exporter or torch/onnx version re-exports).

Every graph is checked by `onnx.checker`, its IO names and ONNX Runtime
against torch on several input lengths before it is accepted (opset `OPSET`).
Runtimes get `export_voice` passed in as their exporter for export on demand.

Run as ``kiosk export-onnx --gpt X.ckpt --sovits Y.pth --out DIR``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from engines.gpt.config import GPTConfig
from engines.gpt.model import Text2SemanticModel
from engines.onnx_graphs import contract
from engines.onnx_graphs.contract import (
    FAMILIES,
    FORMAT_VERSION,
    GRAPH_FILES,
    MANIFEST,
    OPTIONAL_GRAPHS,
    Sources,
    data_file_name,
    families_of,
    file_sha256,
    graph_code_fingerprint,
    manifest_gpt_config,
    read_manifest,
    voice_sources,
)

# Re-exported: callers of the build step name them from here too.
from engines.onnx_graphs.contract import graph_io as graph_io
from engines.onnx_graphs.contract import weights_sha256 as weights_sha256
from engines.onnx_graphs.gpt import GPTDecodeGraph, GPTPrefillGraph, cache_input_names
from engines.onnx_graphs.sovits import SoVITSEncoderGraph, SoVITSFlowVocoderGraph
from engines.sovits.synthesizer import SoVITSModel
from engines.voice_models import VoiceModels, load_voice_models

from .log_levels import quieted

log = logging.getLogger(__name__)

OPSET = 18
#: Tensors from this size on are written to the graph's weights file, not into the graph.
WEIGHTS_APART_BYTES = 1024
#: Exporter per model.  The TorchScript exporter is 3-4x faster on the GPT
#: (about 15 s vs 50 s per graph here) and its GPT graphs pass every parity check.
#: On the SoVITS encoder it produced a *wrong* graph (its transpose folding
#: breaks the relative-position attention), so SoVITS goes through the dynamo
#: exporter, which needs no patching of the model either.
GPT_EXPORTER = "torchscript"
SOVITS_EXPORTER = "dynamo"


class ExportError(RuntimeError):
    """An export did not produce a valid graph."""


# ----------------------------------------------------------------------------- hashing
def code_fingerprint() -> str:
    """Digest of what decides the graphs besides the weights: graph code, exporter, versions.

    Stored in the manifest as "exporter" and checked by `verify_export` here, so
    `kiosk export-onnx` rebuilds an export made by another exporter or torch.
    Runtimes check only the graph code (`graph_code_fingerprint`): they cannot
    know the exporter, and a folder that passes the contract runs correctly.
    """
    import onnxruntime

    versions = f"{torch.__version__}|{onnx.__version__}|{onnxruntime.__version__}"
    digest = hashlib.sha256(f"{graph_code_fingerprint()}|{versions}".encode())
    for path in (Path(__file__), Path(__file__).with_name("quantize_int8.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- export core
@dataclass(frozen=True)
class GraphInfo:
    """What a manifest records about one graph."""

    name: str
    file: str
    sha256: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    #: For a reduced-precision graph: its greedy-token check against FP32.
    validation: dict[str, Any] | None = None
    #: Uses ONNX Runtime CPU operators (int8 MatMulNBits): TensorRT skips it.
    cpu_only: bool = False
    #: The weights file beside the graph (`<file>.data`) and its SHA-256, if it has one.
    data: dict[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        out = {
            "file": self.file,
            "sha256": self.sha256,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }
        if self.validation is not None:
            out["validation"] = self.validation
        if self.cpu_only:
            out["cpu_only"] = True
        if self.data is not None:
            out["data"] = self.data
        return out


def describe_graph(
    path: Path,
    validation: dict[str, Any] | None = None,
    *,
    cpu_only: bool = False,
    model: onnx.ModelProto | None = None,
) -> GraphInfo:
    """The manifest record of a graph file on disk (`model`: its proto, if loaded already)."""
    if model is None:
        model = onnx.load(str(path), load_external_data=False)
    weights = path.with_name(data_file_name(path.name))
    return GraphInfo(
        name=path.stem,
        file=path.name,
        sha256=file_sha256(path),
        inputs=_value_info(model.graph.input),
        outputs=_value_info(model.graph.output),
        validation=validation,
        cpu_only=cpu_only,
        data={"file": weights.name, "sha256": file_sha256(weights)} if weights.is_file() else None,
    )


def _save_with_weights_apart(model: onnx.ModelProto, path: Path) -> None:
    """Write `model` as `path` plus its weights in `<path>.data`, both replacing old files.

    ONNX Runtime opens such a graph in a fraction of the time an inline one
    takes (0.2-0.3 s less for each 300 MB GPT graph): its protobuf no longer
    holds the weights.  Both files are written in a scratch folder first, as
    the graph names its weights file and onnx appends to one that exists.
    """
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        onnx.save_model(
            model,
            str(scratch / path.name),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_file_name(path.name),
            size_threshold=WEIGHTS_APART_BYTES,
        )
        weights = scratch / data_file_name(path.name)
        if weights.is_file():
            shutil.copymode(scratch / path.name, weights)  # onnx creates it private
            os.replace(weights, path.with_name(weights.name))
        else:  # nothing large enough to move out
            path.with_name(weights.name).unlink(missing_ok=True)
        os.replace(scratch / path.name, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _value_info(values: Sequence[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
    out = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        out.append({"name": value.name, "shape": shape, "dtype": dtype})
    return out


def _max_diff(got: Sequence[Any], want: Sequence[torch.Tensor]) -> float:
    import numpy as np

    return max(
        float(np.max(np.abs(g - w.numpy()), initial=0.0)) for g, w in zip(got, want, strict=True)
    )


def export_graph(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    *,
    exporter: str = "torchscript",
    opset: int = OPSET,
    check_args: Sequence[tuple[torch.Tensor, ...]] = (),
    atol: float = 1e-4,
) -> GraphInfo:
    """Export `module(*args)` to `path` (atomically), check it, and describe its IO.

    Checks: `onnx.checker`, the IO names, and ONNX Runtime against torch on
    `args` and every `check_args` tuple (other lengths exercise the dynamic
    axes).  The numeric check is what caught a TorchScript-exporter bug that
    silently produced a wrong SoVITS encoder; no graph is accepted without it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    started = time.monotonic()
    module.eval()
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        quieted("onnx_ir", "onnxscript", "torch.onnx", level=logging.ERROR),
    ):
        # The TorchScript exporter warns about its own deprecation and about
        # Python-int shape arithmetic it records as constants; both are expected.
        # The dynamo exporter logs each pass and missing torchvision ops; noise here.
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims: dict[str, Any] = {}
            shapes = tuple(
                {
                    axis: dims.setdefault(dim, torch.export.Dim(dim))
                    for axis, dim in dynamic_axes.get(name, {}).items()
                }
                or None
                for name in input_names
            )
            torch.onnx.export(
                module,
                args,
                str(tmp),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=shapes,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        else:
            torch.onnx.export(
                module,
                args,
                str(tmp),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    try:
        onnx.checker.check_model(str(tmp), full_check=False)
        model = onnx.load(str(tmp), load_external_data=False)
        got_in = tuple(v.name for v in model.graph.input)
        got_out = tuple(v.name for v in model.graph.output)
        if got_in != tuple(input_names) or got_out != tuple(output_names):
            raise ExportError(f"graph IO {got_in} -> {got_out} is not the expected one")
        seen = _check_numerics(module, tmp, input_names, [args, *check_args], atol)
        _settle_output_shapes(model, seen, dynamic_axes)
        onnx.load_external_data_for_model(model, str(tmp.parent))
        _save_with_weights_apart(model, path)
    except Exception as exc:  # onnx and onnxruntime raise several unrelated types
        raise ExportError(f"{path.name}: exported graph rejected: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s in %.1f s (%.1f MB, %s)", path.name, time.monotonic() - started,
             path.stat().st_size / 1e6, exporter)  # fmt: skip
    return describe_graph(path, model=model)


def _check_numerics(
    module: nn.Module,
    path: Path,
    input_names: Sequence[str],
    cases: Sequence[tuple[torch.Tensor, ...]],
    atol: float,
) -> list[list[tuple[int, ...]]]:
    """ONNX Runtime (CPU, no optimisation) must reproduce torch on every case.

    Returns the output shapes of every case.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    seen: list[list[tuple[int, ...]]] = []
    for case in cases:
        with torch.no_grad():
            want = module(*case)
        want = (want,) if isinstance(want, torch.Tensor) else tuple(want)
        got = session.run(None, {n: a.numpy() for n, a in zip(input_names, case, strict=True)})
        diff = _max_diff(got, want)
        if not diff <= atol:
            shapes = [tuple(a.shape) for a in case]
            raise ExportError(f"ONNX Runtime differs from torch by {diff:.3g} on inputs {shapes}")
        seen.append([tuple(w.shape) for w in want])
    return seen


def _settle_output_shapes(
    model: onnx.ModelProto,
    seen: Sequence[Sequence[tuple[int, ...]]],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> bool:
    """Give graph outputs readable shapes: declared names for dynamic axes, numbers for
    axes that never changed across the check cases, `<output>_<axis>` otherwise.

    The exporters name unknown output dims after internal nodes
    ('MatMullogits_dim_0'), which makes the manifest useless to a reader.
    """
    changed = False
    for index, output in enumerate(model.graph.output):
        dims = output.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            values = {case[index][axis] for case in seen}
            declared = dynamic_axes.get(output.name, {}).get(axis)
            if declared:
                new: str | int = declared
            elif len(values) == 1:
                new = values.pop()
            elif dim.dim_param:
                new = f"{output.name}_{axis}"
            else:
                continue
            if isinstance(new, int) and dim.dim_value != new:
                dim.dim_value = new
                changed = True
            elif isinstance(new, str) and dim.dim_param != new:
                dim.dim_param = new
                changed = True
    return changed


# ----------------------------------------------------------------------------- per model
def _gpt_prefill_args(
    cfg: GPTConfig, n: int, p: int, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    return (
        torch.randint(0, cfg.phoneme_vocab_size, (1, n), generator=gen),
        torch.randn(1, cfg.bert_dim, n, generator=gen),
        torch.randint(0, cfg.eos_id, (1, p), generator=gen),
    )


def _gpt_decode_args(
    cfg: GPTConfig, max_len: int, position: int, slot: int, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    shape = (1, cfg.num_heads, max_len, cfg.head_dim)
    return (
        torch.randint(0, cfg.eos_id, (1, 1), generator=gen),
        torch.tensor([position]),
        torch.tensor([slot]),
        *(torch.randn(shape, generator=gen) for _ in range(2 * cfg.num_layers)),
    )


def export_gpt(
    model: Text2SemanticModel,
    out_dir: str | Path,
    *,
    max_len: int | None = None,
    opset: int = OPSET,
) -> dict[str, GraphInfo]:
    """Write `gpt_prefill.onnx` and `gpt_decode.onnx`.

    `max_len=None` leaves the cache length of the decode graph symbolic
    (`max_len`), so ONNX Runtime allocates exactly what an utterance needs and
    TensorRT pins it with an optimisation profile (min = opt = max).  An int
    bakes it into the graph (fully static, e.g. for CUDA-graph capture).
    """
    out = Path(out_dir)
    cfg = model.config
    model = model.float().eval()
    n, p = 7, 5
    gen = torch.Generator().manual_seed(0)
    prefill_args = _gpt_prefill_args(cfg, n, p, gen)
    infos = {}
    log.info("exporting GPT prefill (%d layers)", cfg.num_layers)
    infos["gpt_prefill"] = export_graph(
        GPTPrefillGraph(model),
        prefill_args,
        out / GRAPH_FILES["gpt_prefill"],
        GPTPrefillGraph.input_names,
        GPTPrefillGraph.output_names,
        {
            "phone_ids": {1: "num_phones"},
            "bert": {2: "num_phones"},
            "prompt": {1: "num_prompt"},
            "keys": {3: "prefix_len"},
            "values": {3: "prefix_len"},
        },
        exporter=GPT_EXPORTER,
        opset=opset,
        check_args=[_gpt_prefill_args(cfg, 13, 9, gen), _gpt_prefill_args(cfg, 4, 0, gen)],
    )
    length = max_len if max_len is not None else n + p + 4
    decode_args = _gpt_decode_args(cfg, length, p, n + p, gen)
    checks = [_gpt_decode_args(cfg, length, p + 3, length - 1, gen)]
    if max_len is None:
        checks.append(_gpt_decode_args(cfg, 2 * length + 3, p + 9, length + 2, gen))
    decode_graph = GPTDecodeGraph(model)
    cache_names = cache_input_names(cfg.num_layers)
    cache_axes = {} if max_len is not None else {name: {2: "max_len"} for name in cache_names}
    log.info("exporting GPT decode step (cache length %s)", max_len or "dynamic")
    infos["gpt_decode"] = export_graph(
        decode_graph,
        decode_args,
        out / GRAPH_FILES["gpt_decode"],
        decode_graph.input_names,
        GPTDecodeGraph.output_names,
        cache_axes,
        exporter=GPT_EXPORTER,
        opset=opset,
        check_args=checks,
    )
    try:
        infos["gpt_decode_int8"] = _int8_decode(model, out, validate=max_len is None)
    except ExportError as exc:  # the FP32 graphs above are complete and usable
        log.warning("%s; this voice will decode in FP32", exc)
    return infos


def _int8_decode(model: Text2SemanticModel, out: Path, *, validate: bool) -> GraphInfo:
    """Derive the 8-bit decode graph from the FP32 one and record its greedy check.

    A static cache length means a GPU build (CUDA-graph capture), where the
    8-bit CPU graph is never used: it is then written but not validated.
    """
    from kiosk_build.quantize_int8 import not_validated, quantize_decode_graph, validate_int8

    started = time.monotonic()
    path = out / GRAPH_FILES["gpt_decode_int8"]
    try:
        converted = quantize_decode_graph(out / GRAPH_FILES["gpt_decode"], path)
        _save_with_weights_apart(onnx.load(str(path)), path)  # as the other graphs
        verdict = (
            validate_int8(model, out / GRAPH_FILES["gpt_prefill"], path)
            if validate
            else not_validated("static cache length (a GPU build)")
        )
    except Exception as exc:  # the quantiser and ORT raise assorted types
        path.unlink(missing_ok=True)
        path.with_name(data_file_name(path.name)).unlink(missing_ok=True)
        raise ExportError(f"{path.name}: int8 quantisation failed: {exc}") from exc
    log.info("quantised %s (%d MatMuls) and checked it in %.1f s", path.name, converted,
             time.monotonic() - started)  # fmt: skip
    return describe_graph(path, verdict, cpu_only=True)


def export_sovits(
    model: SoVITSModel, out_dir: str | Path, *, opset: int = OPSET
) -> dict[str, GraphInfo]:
    """Write `sovits_encoder.onnx` and `sovits_flow_vocoder.onnx` (weight norm folded).

    The caller's model is left untouched: folding runs on a copy.
    """
    out = Path(out_dir)
    folded = copy.deepcopy(model).float().eval()
    folded.fold_weight_norm()
    cfg = folded.cfg
    gen = torch.Generator().manual_seed(0)
    t, n = 6, 9

    def encoder_args(t: int, n: int) -> tuple[torch.Tensor, ...]:
        return (
            torch.randint(0, cfg.codebook_size, (1, 1, t), generator=gen),
            torch.randint(0, cfg.n_symbols, (1, n), generator=gen),
            torch.randn(1, cfg.mrte_channels, 1, generator=gen),
        )

    def flow_args(frames: int) -> tuple[torch.Tensor, ...]:
        return (
            torch.randn(1, cfg.hidden_channels, frames, generator=gen),
            torch.randn(1, cfg.inter_channels, frames, generator=gen),
            torch.tensor([0.5]),
            torch.randn(1, cfg.gin_channels, 1, generator=gen),
        )

    infos = {}
    log.info("exporting SoVITS %s encoder", cfg.version)
    infos["sovits_encoder"] = export_graph(
        SoVITSEncoderGraph(folded),
        encoder_args(t, n),
        out / GRAPH_FILES["sovits_encoder"],
        SoVITSEncoderGraph.input_names,
        SoVITSEncoderGraph.output_names,
        {"codes": {2: "num_codes"}, "text_ids": {1: "num_phones"}, "content": {2: "frames"}},
        exporter=SOVITS_EXPORTER,
        opset=opset,
        check_args=[encoder_args(17, 5)],
    )
    log.info("exporting SoVITS %s flow + vocoder", cfg.version)
    infos["sovits_flow_vocoder"] = export_graph(
        SoVITSFlowVocoderGraph(folded),
        flow_args(2 * t),
        out / GRAPH_FILES["sovits_flow_vocoder"],
        SoVITSFlowVocoderGraph.input_names,
        SoVITSFlowVocoderGraph.output_names,
        {"content": {2: "frames"}, "noise": {2: "frames"}, "audio": {2: "samples"}},
        exporter=SOVITS_EXPORTER,
        opset=opset,
        check_args=[flow_args(7)],
    )
    return infos


class _BertHidden(nn.Module):
    """transformers `BertModel` -> `hidden_states[-3]`, the layer GPT-SoVITS feeds the GPT."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=True,
        )
        return out.hidden_states[-3]


def export_bert(bert: nn.Module, path: str | Path, *, opset: int = OPSET) -> GraphInfo:
    """Export a transformers `BertModel` as `input_ids, attention_mask, token_type_ids
    [1,L] int64 -> hidden [1,L,hidden]` (hidden_states[-3]); one graph shared by all voices.

    Eager attention is forced for the export: the SDPA path builds its mask with
    ops the TorchScript exporter turns into data-dependent branches.
    """
    config = bert.config
    previous = getattr(config, "_attn_implementation", None)
    try:
        if previous is not None:
            config._attn_implementation = "eager"
        length = 6
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, config.vocab_size, (1, length), generator=gen)
        ids2 = torch.randint(0, config.vocab_size, (1, length + 5), generator=gen)
        names_in = ("input_ids", "attention_mask", "token_type_ids")
        return export_graph(
            _BertHidden(bert.float().eval()),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            Path(path),
            names_in,
            ("hidden",),
            {**{name: {1: "length"} for name in names_in}, "hidden": {1: "length"}},
            opset=opset,
            check_args=[(ids2, torch.ones_like(ids2), torch.zeros_like(ids2))],
        )
    finally:
        if previous is not None:
            config._attn_implementation = previous


# ----------------------------------------------------------------------------- whole voice
def export_voice(
    voice: VoiceModels,
    out_dir: str | Path,
    *,
    sources: Sources | None = None,
    max_len: int | None = None,
    opset: int = OPSET,
    families: Collection[str] = FAMILIES,
) -> dict[str, Any]:
    """Export the graphs of `voice` into `out_dir` and write its manifest.

    `families` limits the export to "gpt" and/or "sovits"; the other family's
    graphs are then kept from the existing (verified) folder, so a damaged GPT
    graph does not cost a SoVITS re-export.  Graphs are written into a sibling
    temporary folder that replaces `out_dir` only when complete, so an
    interrupted export never leaves a half-valid folder.  Returns the manifest.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sources = dict(sources) if sources is not None else voice_sources(voice)
    previous = read_manifest(out) or {}
    if set(families) != set(FAMILIES) and not previous:
        families = FAMILIES  # nothing to keep: export everything
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        graphs: dict[str, Any] = {}
        if "gpt" in families:
            infos = export_gpt(voice.gpt, staging, max_len=max_len, opset=opset)
            graphs.update({name: info.as_json() for name, info in infos.items()})
        else:
            max_len = previous.get("max_len")
        if "sovits" in families:
            infos = export_sovits(voice.sovits, staging, opset=opset)
            graphs.update({name: info.as_json() for name, info in infos.items()})
        for name, file_name in GRAPH_FILES.items():
            kept = name.split("_", 1)[0] not in families
            if kept and (name not in OPTIONAL_GRAPHS or name in previous["graphs"]):
                _link_or_copy(out / file_name, staging / file_name)
                if previous["graphs"][name].get("data"):
                    weights = data_file_name(file_name)
                    _link_or_copy(out / weights, staging / weights)
                graphs[name] = previous["graphs"][name]
        manifest = {
            "format_version": FORMAT_VERSION,
            "code": graph_code_fingerprint(),
            "exporter": code_fingerprint(),
            "opset": opset,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "max_len": max_len,
            "gpt_version": voice.gpt_version,
            "sovits_version": voice.sovits_version,
            "gpt_config": manifest_gpt_config(voice.gpt.config),
            "sovits_config": {
                "gin_channels": voice.sovits.cfg.gin_channels,
                "hidden_channels": voice.sovits.cfg.hidden_channels,
                "inter_channels": voice.sovits.cfg.inter_channels,
                "samples_per_frame": voice.sovits.cfg.samples_per_code // 2,
            },
            "sources": {k: dict(v) for k, v in sources.items()},
            "graphs": {name: graphs[name] for name in GRAPH_FILES if name in graphs},
            # every weights file, for readers that hash the whole export (the TensorRT build)
            "data_files": [g["data"]["file"] for g in graphs.values() if g.get("data")],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported voice to %s in %.1f s", out, time.monotonic() - started)
    return manifest


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (instant, no extra space) where possible, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_voice_files(
    gpt_path: str | Path,
    sovits_path: str | Path,
    out_dir: str | Path,
    *,
    max_len: int | None = None,
    opset: int = OPSET,
) -> dict[str, Any]:
    """Load the official `.ckpt`/`.pth` pair and export it, keyed by the files' SHA-256."""
    log.info("loading %s and %s", gpt_path, sovits_path)
    voice = load_voice_models(gpt_path, sovits_path)
    sources = voice_sources(voice, gpt_path, sovits_path)
    return export_voice(voice, out_dir, sources=sources, max_len=max_len, opset=opset)


# ----------------------------------------------------------------------------- verification
def verify_export(
    folder: str | Path, sources: Sources | None = None, *, check_hashes: bool = True
) -> list[str]:
    """Problems that make `folder` stale for this exporter (empty list = up to date).

    The runtime's checks (`contract.verify_export`: format, graph code, source
    hashes, graph files and IO), plus this exporter's own fingerprint.
    """
    problems = contract.verify_export(folder, sources, check_hashes=check_hashes)
    manifest = read_manifest(folder)
    if manifest is not None and manifest.get("exporter") != code_fingerprint():
        problems.append("exported by another exporter or another torch/onnx version")
    return problems


def stale_families(folder: str | Path, sources: Sources | None = None) -> set[str]:
    """Which of "gpt"/"sovits" must be (re-)exported for `folder` to be up to date."""
    return families_of(verify_export(folder, sources))


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: export one voice's official files."""
    parser = argparse.ArgumentParser(prog="kiosk export-onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--gpt", required=True, help="official GPT .ckpt")
    parser.add_argument("--sovits", required=True, help="official SoVITS .pth")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-len", type=int, default=None, help="static KV-cache length")
    parser.add_argument("--opset", type=int, default=OPSET)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    export_voice_files(args.gpt, args.sovits, args.out, max_len=args.max_len, opset=args.opset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
