"""The graph contract: what an ONNX export folder holds and how a runtime trusts it.

The runtime (`engines.backends.onnxruntime_backend`, the TensorRT build input)
and the build step (`kiosk_build.export_onnx`, which writes the folders) share
this module, so the runtime can find, verify and load graphs without importing
the exporter (or torch's ONNX machinery).  Folder layout::

    manifest.json            what was exported, from what, and how (written last)
    gpt_prefill.onnx         GPTPrefillGraph
    gpt_decode.onnx          GPTDecodeGraph (static KV cache, one cache input per layer)
    gpt_decode_int8.onnx     optional: the same step with 8-bit weights for CPUs
    sovits_encoder.onnx      SoVITSEncoderGraph
    sovits_flow_vocoder.onnx SoVITSFlowVocoderGraph
    <graph>.onnx.data        the graph's weights (ONNX external data), beside each graph
                             the exporter writes; the manifest records it and its SHA-256

Weights apart from the graph open 0.2-0.3 s faster per 300 MB GPT graph (the
protobuf no longer carries them); folders with inline weights stay valid.

The manifest is the commit marker.  Besides each graph's SHA-256 and IO it
records the full GPT config and both model versions, so a verified folder is
enough to run a voice: the torch models are needed only to export.  Graphs are
identified by `sources`, the official model files' SHA-256 (or, for a voice
built in memory, a fingerprint of its weights), which the caller supplies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from engines.durable_files import atomic_write_bytes
from engines.gpt.config import GPTConfig
from engines.voice_models import VoiceModels

from .files import GRAPH_FILES, MANIFEST, OPTIONAL_GRAPHS, data_file_name, read_manifest
from .gpt import GPTDecodeGraph, GPTPrefillGraph, cache_input_names
from .sovits import SoVITSEncoderGraph, SoVITSFlowVocoderGraph

#: Bump when a graph's definition, its IO or the manifest layout changes: older
#: exports are then stale (3: the manifest carries the full GPT config).
FORMAT_VERSION = 3
FAMILIES = ("gpt", "sovits")
#: Expected IO names of the graphs whose IO does not depend on the model size.
_FIXED_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gpt_prefill": (GPTPrefillGraph.input_names, GPTPrefillGraph.output_names),
    "sovits_encoder": (SoVITSEncoderGraph.input_names, SoVITSEncoderGraph.output_names),
    "sovits_flow_vocoder": (
        SoVITSFlowVocoderGraph.input_names,
        SoVITSFlowVocoderGraph.output_names,
    ),
}
#: What to run when a folder is missing or stale and nobody passed an exporter.
EXPORT_COMMAND = "kiosk export-onnx --gpt GPT.ckpt --sovits SOVITS.pth --out DIR"

Sources = Mapping[str, Mapping[str, str]]


class GraphsUnavailableError(RuntimeError):
    """No usable graphs for a voice and no way (exporter, models) to make them here."""


class GraphExporter(Protocol):
    """Writes the graphs of `voice` into `folder` (`kiosk_build.export_onnx.export_voice`).

    The runtime never imports the build step: whoever wants export on demand
    passes this callable in.  `families` limits the export to "gpt"/"sovits";
    returns the manifest written.
    """

    def __call__(
        self,
        voice: VoiceModels,
        folder: str | Path,
        *,
        sources: Sources | None = None,
        max_len: int | None = None,
        families: Collection[str] = FAMILIES,
    ) -> Mapping[str, Any]: ...


def graph_io(name: str, num_layers: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Expected IO names of graph `name`; a file whose names differ is treated as foreign.

    The decode graphs take one key and one value cache per layer, so their
    names depend on the GPT's layer count.
    """
    if name in ("gpt_decode", "gpt_decode_int8"):
        inputs = (*GPTDecodeGraph.scalar_inputs, *cache_input_names(num_layers))
        return inputs, GPTDecodeGraph.output_names
    return _FIXED_IO[name]


# ----------------------------------------------------------------------------- identity
def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """Fingerprint of a loaded model: names, dtypes, shapes and bytes of its state dict.

    Only for a `VoiceModels` built in memory (no files to hash): it reads every
    weight, so a kiosk that knows its files passes their hashes instead.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_sources(
    gpt_version: str,
    sovits_version: str,
    gpt_sha256: str,
    sovits_sha256: str,
    *,
    gpt_file: str | None = None,
    sovits_file: str | None = None,
) -> dict[str, dict[str, str]]:
    """The `sources` block from hashes already known (e.g. a voice folder's `voice.json`)."""
    out: dict[str, dict[str, str]] = {}
    for family, version, sha, name in (
        ("gpt", gpt_version, gpt_sha256, gpt_file),
        ("sovits", sovits_version, sovits_sha256, sovits_file),
    ):
        entry = {"version": version}
        if name is not None:
            entry["file"] = name
        entry["sha256"] = sha
        out[family] = entry
    return out


def file_sources(
    gpt_path: str | Path, sovits_path: str | Path, gpt_version: str, sovits_version: str
) -> dict[str, dict[str, str]]:
    """The `sources` block of the official files (hashes their bytes, no torch)."""
    return model_sources(
        gpt_version,
        sovits_version,
        file_sha256(gpt_path),
        file_sha256(sovits_path),
        gpt_file=Path(gpt_path).name,
        sovits_file=Path(sovits_path).name,
    )


def voice_sources(
    voice: VoiceModels,
    gpt_path: str | Path | None = None,
    sovits_path: str | Path | None = None,
) -> dict[str, dict[str, str]]:
    """The `sources` block of a manifest: versions and the hashes that key the export.

    With official files, their SHA-256 is the key (what provisioning tracks);
    without, the weights fingerprint is.
    """
    out: dict[str, dict[str, str]] = {}
    for family, model, version, path in (
        ("gpt", voice.gpt, voice.gpt_version, gpt_path),
        ("sovits", voice.sovits, voice.sovits_version, sovits_path),
    ):
        entry = {"version": version}
        if path is not None:
            entry["file"] = Path(path).name
            entry["sha256"] = file_sha256(path)
        else:
            entry["sha256"] = "weights:" + weights_sha256(model)
        out[family] = entry
    return out


#: The modules that define what the graphs compute (not this one: how a folder is
#: checked does not change what its graphs hold).
GRAPH_DEFINITIONS = ("gpt.py", "sovits.py")


def graph_code_fingerprint() -> str:
    """Digest of the graph definitions and `FORMAT_VERSION`.

    Recorded by the exporter and checked here, so a folder exported by other
    graph code is stale for every runtime.  (The exporter records its own code
    and tool versions separately; `kiosk export-onnx` re-exports when they change.)
    """
    digest = hashlib.sha256(f"format {FORMAT_VERSION}".encode())
    for name in GRAPH_DEFINITIONS:
        path = Path(__file__).parent / name
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- manifest
def manifest_gpt_config(config: GPTConfig) -> dict[str, Any]:
    """The `gpt_config` block: every config field, plus `head_dim` for readers."""
    return {**dataclasses.asdict(config), "head_dim": config.head_dim}


def gpt_config_from_manifest(manifest: Mapping[str, Any]) -> GPTConfig:
    """The GPT config a manifest records (raises ValueError if it lacks one)."""
    raw = manifest.get("gpt_config")
    names = {f.name for f in dataclasses.fields(GPTConfig)}
    if not isinstance(raw, Mapping) or not names <= set(raw):
        raise ValueError("the manifest does not record the full GPT config; export again")
    return GPTConfig(**{name: raw[name] for name in names})


def verify_export(
    folder: str | Path, sources: Sources | None = None, *, check_hashes: bool = True
) -> list[str]:
    """Problems that make `folder` unusable for a runtime (empty list = usable).

    Checks the manifest format and graph code, that its source hashes equal
    `sources` (when given: without, the folder is trusted to be the voice's),
    that every graph file exists with the recorded SHA-256, and its IO names.
    A problem naming one family ("gpt_decode: ...") starts with that family.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"{folder / MANIFEST}: missing or unreadable"]
    problems = []
    if manifest.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version {manifest.get('format_version')} != {FORMAT_VERSION}")
    if manifest.get("code") != graph_code_fingerprint():
        problems.append("exported by other graph code")
    if sources is not None:
        recorded = manifest.get("sources") or {}
        for family, entry in sources.items():
            got = (recorded.get(family) or {}).get("sha256")
            if got != entry.get("sha256"):
                problems.append(f"{family} source hash {got} != {entry.get('sha256')}")
    graphs = manifest.get("graphs")
    if not isinstance(graphs, dict):
        return [*problems, "manifest lists no graphs"]
    num_layers = (manifest.get("gpt_config") or {}).get("num_layers")
    if not isinstance(num_layers, int) or num_layers < 1:
        return [*problems, "manifest gives no GPT layer count"]
    for name, file_name in GRAPH_FILES.items():
        info = graphs.get(name)
        path = folder / file_name
        if info is None and name in OPTIONAL_GRAPHS:
            continue
        if not isinstance(info, dict) or not path.is_file():
            problems.append(f"{name}: missing")
            continue
        names_in = tuple(v.get("name") for v in info.get("inputs", []))
        names_out = tuple(v.get("name") for v in info.get("outputs", []))
        if (names_in, names_out) != graph_io(name, num_layers):
            problems.append(
                f"{name}: manifest IO {names_in} -> {names_out} is not the expected one"
            )
        if check_hashes and not _has_sha256(path, info.get("sha256")):
            problems.append(f"{name}: {file_name} does not match its recorded SHA-256")
        data = info.get("data")
        if data is not None:
            problems += _data_problems(name, folder, file_name, data, check_hashes)
    return problems


def _data_problems(
    name: str, folder: Path, file_name: str, data: object, check_hashes: bool
) -> list[str]:
    """What is wrong with a graph's weights file (its manifest record `data`)."""
    expected = data_file_name(file_name)
    if not isinstance(data, dict) or data.get("file") != expected:
        return [f"{name}: manifest names weights file {data!r}, expected {expected}"]
    path = folder / expected
    if not path.is_file():
        return [f"{name}: weights file {expected} missing"]
    if check_hashes and not _has_sha256(path, data.get("sha256")):
        return [f"{name}: {expected} does not match its recorded SHA-256"]
    return []


#: Beside the graphs: the size, mtime and SHA-256 of each file when it last matched.
VERIFIED_STAMP = ".verified.json"


def _has_sha256(path: Path, expected: object) -> bool:
    """Whether `path` has the SHA-256 `expected`, hashing it only if it changed since the
    last time it matched (a box boots in seconds, not after reading 800 MB of graphs).

    The stamp records (size, mtime_ns) of a file that was hashed and matched; any
    write to the file changes them, so a changed file is hashed again.
    """
    if not isinstance(expected, str):
        return False
    stamp_path = path.parent / VERIFIED_STAMP
    try:
        stamps = json.loads(stamp_path.read_text())
        if not isinstance(stamps, dict):
            stamps = {}
    except (OSError, ValueError):
        stamps = {}
    try:
        stat = path.stat()
    except OSError:
        return False
    seen = [stat.st_size, stat.st_mtime_ns, expected]
    if stamps.get(path.name) == seen:
        return True
    if file_sha256(path) != expected:
        return False
    stamps[path.name] = seen
    with contextlib.suppress(OSError):  # a read-only folder: hash again next time
        atomic_write_bytes(stamp_path, json.dumps(stamps, indent=1).encode())
    return True


def families_of(problems: Collection[str]) -> set[str]:
    """Which of "gpt"/"sovits" `problems` make stale (one not naming a family: both)."""
    stale = set()
    for problem in problems:
        family = problem.split(" ", 1)[0].split("_", 1)[0]
        stale.update([family] if family in FAMILIES else FAMILIES)
    return stale


def stale_families(folder: str | Path, sources: Sources | None = None) -> set[str]:
    """Which of "gpt"/"sovits" must be (re-)exported for `folder` to be usable."""
    return families_of(verify_export(folder, sources))


def unavailable(folder: Path, why: str) -> GraphsUnavailableError:
    """The error for a folder nobody here can (re-)export: names the command that can."""
    return GraphsUnavailableError(
        f"ONNX graphs in {folder} are {why} and no exporter was given; build them with "
        f"`{EXPORT_COMMAND}` (DIR: {folder}), or pass `export=` to export on demand"
    )
