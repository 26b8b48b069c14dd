"""Build FP16 TensorRT engines from the exported ONNX graphs, validate them, cache them.

Input contract (what the ONNX export leaves in `export_dir`: `engines.onnx_graphs.contract`)
----------------------------------------------------------------------------------------
`export_dir/manifest.json` with, per graph, its file and its IO shapes, where a
string dimension names a dynamic axis::

    {
      "graphs": {
        "gpt_prefill": {"file": "gpt_prefill.onnx",
                        "inputs": [{"name": "phone_ids", "shape": [1, "num_phones"]}, ...]},
        ...
      },
      "sources": {"gpt": {"sha256": ...}, "sovits": {"sha256": ...}},   # optional
      "profiles": {"num_phones": [min, opt, max]}                          # optional
    }

Optional per-graph keys: "group" (validation unit; default: the text before
the first "_", so "gpt_decode" -> "gpt"), "dynamic_axes" (torch.onnx.export
style, instead of named dims) and "fp32_layers" (extra regexes).  The model
hash of the cache key is the combined sha256 of the sources (GPT then
SoVITS), or, without sources, of the ONNX files.  The export's voice record
(`gpt_config`, `gpt_version`, `sovits_version`, `sovits_config`) is copied into
the engine manifest under "voice", so the runtime loads engines without the
torch models (`engines.backends.tensorrt_engines` is its read side).

What is built
-------------
One engine per graph: FP16 (`BuilderFlag.FP16`), with LayerNorm, softmax and
the logits projection pinned to FP32 (`OBEY_PRECISION_CONSTRAINTS` + per-layer
precision/output types; see `FP32_LAYER_PATTERNS`), one optimisation profile
covering the dynamic lengths, a workspace limit sized for an 8 GB Jetson
(`WORKSPACE_BYTES`) and a persisted timing cache that makes rebuilds fast.

Then each group is validated against the FP32 torch reference (greedy GPT
tokens must be identical).  A failing group is rebuilt in FP32 rather than
installing a voice that stops after a few tokens; the decision is written to
the engine manifest.  `tensorrt` is imported only when a build actually runs.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from engines.backends import tensorrt_engines
from engines.backends.tensorrt_engines import GpuInfo, ValidationOutcome

from .engine_cache import (
    EngineCache,
    EngineKey,
    LookupResult,
    atomic_write_bytes,
    combine_hashes,
    hash_model_files,
)

log = logging.getLogger(__name__)

EXPORT_MANIFEST = "manifest.json"
#: Export-manifest entries copied into the engine manifest's "voice" record.
VOICE_KEYS = ("gpt_config", "gpt_version", "sovits_version", "sovits_config")

#: Builder scratch memory.  The Orin Nano/NX 8 GB shares that memory with the
#: CPU, the kiosk UI and the loaded engines; 1 GiB leaves room for all of them
#: (another port used 2 GB on a discrete card).  `--workspace-mib` overrides.
WORKSPACE_BYTES = 1 << 30

#: Layers kept in FP32 even in an FP16 engine: regexes over TensorRT layer
#: names (which carry the ONNX node names, i.e. the torch module paths).
#: LayerNorm (fused NORMALIZATION or decomposed under ".../norm1/..."), softmax,
#: and the logits projection (`ar_predict_layer`) decide the GPT tokens; the
#: reference encoder's pooling overflowed in FP16 in the reference repo.
FP32_LAYER_PATTERNS: tuple[str, ...] = (
    r"(^|/)norm\d*(/|$)",
    r"[Ll]ayer[Nn]orm",
    r"[Ss]oftmax",
    r"ar_predict_layer",
)

#: Layer types always kept in FP32 (names of `trt.LayerType` members).
FP32_LAYER_TYPES: tuple[str, ...] = ("NORMALIZATION", "SOFTMAX")

#: Default min/opt/max per dynamic axis name (the export's names); the export
#: manifest or `BuildSettings.profiles` may override them.  TensorRT sizes
#: activation memory for the max, so the max are kept to what a kiosk needs.
DEFAULT_PROFILES: dict[str, tuple[int, int, int]] = {
    "num_phones": (1, 96, 512),  # prompt + target phones of one segment
    "num_prompt": (1, 150, 500),  # prompt semantic tokens (25 per second, <= 20 s)
    "max_len": (16, 600, 2600),  # decode cache: phones + prompt + up to 1500 tokens
    "num_codes": (1, 150, 1500),  # semantic tokens into SoVITS (<= 60 s)
    "frames": (2, 300, 3000),  # 50 Hz frames into flow + vocoder (<= 60 s at speed 1)
}
#: Used (with a warning) for an axis name nobody told us about.
FALLBACK_PROFILE = (1, 128, 1024)


class BuildError(RuntimeError):
    """A graph could not be built or validated; nothing was installed."""


# ------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class GraphSpec:
    """One exported graph, as the export manifest describes it."""

    name: str
    onnx_path: Path
    group: str
    dynamic_axes: dict[str, dict[int, str]]
    fp32_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportInfo:
    """The parsed export manifest."""

    directory: Path
    graphs: dict[str, GraphSpec]
    profiles: dict[str, tuple[int, int, int]]
    model_hash: str | None
    data_files: tuple[Path, ...] = ()
    #: GPT config and model versions, for a runtime that loads without torch models.
    voice: dict[str, Any] = field(default_factory=dict)


def _axes(raw: Any, input_name: str) -> dict[int, str]:
    if isinstance(raw, Mapping):
        return {int(axis): str(name) for axis, name in raw.items()}
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        return {int(axis): f"{input_name}_{int(axis)}" for axis in raw}
    raise BuildError(f"dynamic_axes of {input_name!r} must be a mapping or a list")


def _named_dims(inputs: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, str]]:
    """{input: {axis: name}} from IO records whose string dimensions are axis names."""
    axes: dict[str, dict[int, str]] = {}
    for record in inputs:
        named = {i: d for i, d in enumerate(record.get("shape") or []) if isinstance(d, str) and d}
        if named:
            axes[str(record["name"])] = named
    return axes


def read_export(export_dir: str | Path) -> ExportInfo:
    """Parse `export_dir/manifest.json` (see the module docstring for the contract)."""
    directory = Path(export_dir)
    path = directory / EXPORT_MANIFEST
    try:
        data = json.loads(path.read_text())
        raw_graphs = data["graphs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{path}: not a usable export manifest ({exc})") from exc
    graphs: dict[str, GraphSpec] = {}
    for name, info in raw_graphs.items():
        if info.get("cpu_only"):
            log.info("graph %s is for ONNX Runtime on the CPU only; no engine built", name)
            continue
        onnx_path = directory / info.get("file", f"{name}.onnx")
        if not onnx_path.is_file():
            raise BuildError(f"graph {name!r}: {onnx_path} is missing; re-run the ONNX export")
        axes = _named_dims(info.get("inputs") or [])
        for tensor, raw in (info.get("dynamic_axes") or {}).items():
            axes.setdefault(tensor, {}).update(_axes(raw, tensor))
        graphs[name] = GraphSpec(
            name=name,
            onnx_path=onnx_path,
            group=str(info.get("group") or name.split("_", 1)[0]),
            dynamic_axes=axes,
            fp32_layers=tuple(info.get("fp32_layers") or ()),
        )
    if not graphs:
        raise BuildError(f"{path}: lists no graphs")
    profiles = {k: tuple(int(x) for x in v) for k, v in (data.get("profiles") or {}).items()}
    for axis, rng in profiles.items():
        if len(rng) != 3 or not 0 <= rng[0] <= rng[1] <= rng[2]:
            raise BuildError(f"profile {axis!r} must be [min, opt, max] ascending, got {rng}")
    sources = data.get("sources") or {}
    source_hashes = [str(sources[k]["sha256"]) for k in ("gpt", "sovits") if k in sources]
    return ExportInfo(
        directory=directory,
        graphs=graphs,
        profiles=profiles,  # type: ignore[arg-type]
        model_hash=data.get("model_hash")
        or (combine_hashes(source_hashes) if source_hashes else None),
        data_files=tuple(directory / f for f in data.get("data_files") or ()),
        voice={k: data[k] for k in VOICE_KEYS if k in data},
    )


# ---------------------------------------------------------------- settings
def detect_gpu_info() -> GpuInfo:
    """The GPU to build for (`tensorrt_engines.detect_gpu_info`; no GPU is a BuildError)."""
    try:
        return tensorrt_engines.detect_gpu_info()
    except RuntimeError as exc:
        raise BuildError(f"{exc}: engines can only be built on the target GPU") from exc


@dataclass(frozen=True)
class BuildSettings:
    """Knobs of one build; recorded in the engine manifest."""

    fp16: bool = True
    workspace_bytes: int = WORKSPACE_BYTES
    fp32_layer_patterns: tuple[str, ...] = FP32_LAYER_PATTERNS
    profiles: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    builder_optimization_level: int | None = None  # TRT default (3) when None
    timing_cache: bool = True
    #: Network I/O tensors (shell-style patterns) stored as FP16 in FP16 engines:
    #: the KV cache, which the decode step reads whole every token (half the traffic).
    half_io_tensors: tuple[str, ...] = (
        "keys", "values", "k_cache_*", "v_cache_*", "new_k", "new_v",
    )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = {k: list(v) for k, v in self.profiles.items()}
        data["fp32_layer_patterns"] = list(self.fp32_layer_patterns)
        data["half_io_tensors"] = list(self.half_io_tensors)
        return data


# ---------------------------------------------------------------- profiles
def profile_shapes(
    input_shapes: Mapping[str, Sequence[int]],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    ranges: Mapping[str, tuple[int, int, int]],
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """min/opt/max shapes for every network input that has a dynamic (-1) dimension.

    `input_shapes` are the network's own shapes (-1 = dynamic); `dynamic_axes`
    names each dynamic axis; `ranges` maps names to (min, opt, max).  Inputs
    without dynamic dimensions need no entry: they are built for their fixed shape.
    """
    result = {}
    for name, shape in input_shapes.items():
        if all(int(d) >= 0 for d in shape):
            continue
        named = dynamic_axes.get(name, {})
        lo, opt, hi = [], [], []
        for axis, dim in enumerate(shape):
            if int(dim) >= 0:
                lo.append(int(dim))
                opt.append(int(dim))
                hi.append(int(dim))
                continue
            axis_name = named.get(axis)
            if axis_name is None:
                raise BuildError(
                    f"input {name!r} axis {axis} is dynamic but the export manifest does not "
                    "name it in dynamic_axes"
                )
            rng = ranges.get(axis_name)
            if rng is None:
                log.warning("no profile for axis %r; using %s", axis_name, FALLBACK_PROFILE)
                rng = FALLBACK_PROFILE
            lo.append(rng[0])
            opt.append(rng[1])
            hi.append(rng[2])
        result[name] = (tuple(lo), tuple(opt), tuple(hi))
    return result


# ----------------------------------------------------------- FP32 islands
def mark_fp32_layers(network: Any, trt: ModuleType, patterns: Sequence[str]) -> list[str]:
    """Pin the layers that must stay FP32; returns their names (for the manifest).

    Only float outputs are retyped: the shape/index tensors inside a
    decomposed LayerNorm are integers and must keep their type.
    """
    compiled = [re.compile(p) for p in patterns]
    forced_types = {
        getattr(trt.LayerType, t) for t in FP32_LAYER_TYPES if hasattr(trt.LayerType, t)
    }
    float_types = {trt.DataType.FLOAT, trt.DataType.HALF}
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type not in forced_types and not any(p.search(layer.name) for p in compiled):
            continue
        outputs = [i for i in range(layer.num_outputs) if layer.get_output(i).dtype in float_types]
        if not outputs:
            continue
        layer.precision = trt.DataType.FLOAT
        for i in outputs:
            layer.set_output_type(i, trt.DataType.FLOAT)
        pinned.append(layer.name)
    return pinned


# ------------------------------------------------------------ timing cache
class TimingCacheFile:
    """The builder's kernel timings, persisted so a rebuild skips re-timing.

    Timings are device specific, so the file name carries the GPU; an
    unreadable or mismatching file is ignored (TensorRT then starts afresh).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError:
            return b""

    def attach(self, config: Any) -> Any:
        data = self.read()
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("timing cache %s does not match this device; starting afresh", self.path)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
        else:
            log.info("timing cache: %s (%d bytes)", self.path, len(data))
        return cache

    def save(self, config: Any) -> None:
        cache = config.get_timing_cache()
        if cache is not None:
            atomic_write_bytes(self.path, bytes(cache.serialize()))


def _progress_monitor(trt: ModuleType) -> Any | None:
    """A `trt.IProgressMonitor` that logs build phases (TensorRT >= 10), else None."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            log.info("  %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            log.debug("  %s done", phase_name)

    return _Monitor()


# --------------------------------------------------------------- one engine
@dataclass
class EngineBuild:
    """A serialized engine and how it was made."""

    graph: str
    data: bytes
    precision: str  # "fp16" or "fp32"
    fp32_layers: list[str]
    profile: dict[str, list[list[int]]]
    seconds: float


class _TrtLogger:
    """Returns a `trt.Logger` (created once per module object)."""

    _cache: dict[int, Any] = {}  # noqa: RUF012 - one logger per trt module

    @classmethod
    def get(cls, trt: ModuleType) -> Any:
        key = id(trt)
        if key not in cls._cache:
            cls._cache[key] = trt.Logger(trt.Logger.WARNING)
        return cls._cache[key]


def _network_flags(trt: ModuleType) -> int:
    """Explicit batch: implicit in TensorRT 10, a flag before (JetPack 5 ships 8.5/8.6)."""
    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    return 1 << int(flag) if major < 10 and flag is not None else 0


def _io_tensors(network: Any) -> list[Any]:
    return [network.get_input(i) for i in range(network.num_inputs)] + [
        network.get_output(i) for i in range(network.num_outputs)
    ]


def build_engine(
    trt: ModuleType,
    graph: GraphSpec,
    settings: BuildSettings,
    ranges: Mapping[str, tuple[int, int, int]],
    *,
    fp16: bool,
    timing_cache: TimingCacheFile | None,
) -> EngineBuild:
    """Parse one ONNX graph and build a serialized engine."""
    started = time.monotonic()
    logger = _TrtLogger.get(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"{graph.onnx_path}: ONNX parser failed: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    if settings.builder_optimization_level is not None:
        config.builder_optimization_level = settings.builder_optimization_level
    pinned: list[str] = []
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = mark_fp32_layers(network, trt, (*settings.fp32_layer_patterns, *graph.fp32_layers))
        log.info("%s: %d layers pinned to FP32", graph.name, len(pinned))
        for tensor in _io_tensors(network):
            half = any(fnmatch.fnmatchcase(tensor.name, p) for p in settings.half_io_tensors)
            if half and tensor.dtype == trt.DataType.FLOAT:
                tensor.dtype = trt.DataType.HALF

    inputs = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        inputs[tensor.name] = [int(d) for d in tensor.shape]
    shapes = profile_shapes(inputs, graph.dynamic_axes, ranges)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)

    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    if timing_cache is not None:
        timing_cache.attach(config)

    log.info("building %s (%s) from %s", graph.name, "fp16" if fp16 else "fp32", graph.onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"{graph.name}: TensorRT could not build an engine (see its log above)")
    if timing_cache is not None:
        timing_cache.save(config)
    seconds = time.monotonic() - started
    log.info("built %s in %.1f s", graph.name, seconds)
    return EngineBuild(
        graph=graph.name,
        data=bytes(serialized),
        precision="fp16" if fp16 else "fp32",
        fp32_layers=pinned,
        profile={k: [list(s) for s in v] for k, v in shapes.items()},
        seconds=seconds,
    )


# ---------------------------------------------------------------- the build
#: Gets {graph name: serialized engine} of one group, compares it to the FP32 reference.
Validator = Callable[[Mapping[str, bytes]], ValidationOutcome]


@dataclass
class BuildReport:
    """Result of `build_engines`: the cache entry and whether anything was built."""

    entry_dir: Path
    built: bool
    reason: str
    precision: dict[str, Any]


def _import_trt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise BuildError(
            "the TensorRT Python bindings are not installed (Jetson: they come with JetPack, "
            "`python3-libnvinfer`; x86: `pip install tensorrt`)"
        ) from exc
    return tensorrt


def engine_key(
    export: ExportInfo, gpu: GpuInfo, trt_version: str, model_hash: str | None = None
) -> EngineKey:
    """Cache key: weights (given, recorded by the export, or the ONNX files) + device + TRT."""
    digest = model_hash or export.model_hash
    if not digest:
        files = [g.onnx_path for g in export.graphs.values()] + list(export.data_files)
        digest = hash_model_files(files)
    return EngineKey(digest, trt_version, gpu.name, gpu.compute_capability, gpu.cuda_version)


def build_engines(
    export_dir: str | Path,
    out_dir: str | Path,
    gpu_info: GpuInfo | None = None,
    *,
    voice: str = "voice",
    settings: BuildSettings | None = None,
    validators: Mapping[str, Validator] | None = None,
    model_hash: str | None = None,
    force: bool = False,
    trt_module: ModuleType | None = None,
    cache: EngineCache | None = None,
) -> BuildReport:
    """Build (or reuse) the engines of one voice's export into the cache at `out_dir`.

    `validators` maps a group ("gpt", "sovits") to a check against the FP32
    reference; a group whose FP16 engines fail is rebuilt in FP32 and checked
    again; if that fails too, nothing is installed (`BuildError`).
    """
    trt = trt_module or _import_trt()
    settings = settings or BuildSettings()
    gpu = gpu_info or detect_gpu_info()
    export = read_export(export_dir)
    cache = cache or EngineCache(Path(out_dir))
    key = engine_key(export, gpu, str(trt.__version__), model_hash)

    found: LookupResult = cache.lookup(voice, key)
    if found.entry is not None and not force:
        log.info("engines for %s are up to date (%s)", voice, found.entry.directory)
        return BuildReport(found.entry.directory, False, found.reason, found.entry.precision)
    reason = "forced rebuild" if found.entry is not None else found.reason
    log.info("building engines for %s: %s", voice, reason)

    ranges = {**DEFAULT_PROFILES, **export.profiles, **settings.profiles}
    timing = None
    if settings.timing_cache:
        label = re.sub(
            r"[^A-Za-z0-9]+", "-", f"{gpu.name}-sm{gpu.compute_capability}-trt{trt.__version__}"
        )
        timing = TimingCacheFile(Path(out_dir) / f"timing-{label.strip('-')}.cache")

    builds: dict[str, EngineBuild] = {}
    for name, graph in export.graphs.items():
        builds[name] = build_engine(
            trt, graph, settings, ranges, fp16=settings.fp16, timing_cache=timing
        )

    groups: dict[str, list[str]] = {}
    for name, graph in export.graphs.items():
        groups.setdefault(graph.group, []).append(name)
    decisions: dict[str, Any] = {"groups": {}, "graphs": {}}
    for group, names in groups.items():
        record: dict[str, Any] = {"graphs": names}
        validator = (validators or {}).get(group)
        if validator is None:
            record["validation"] = "not run (no FP32 reference given)"
        else:
            outcome = validator({n: builds[n].data for n in names})
            precision = "fp16" if settings.fp16 else "fp32"
            record[f"{precision}_validation"] = {
                "passed": outcome.passed,
                "detail": outcome.detail,
                **outcome.data,
            }
            if not outcome.passed and settings.fp16:
                log.warning(
                    "%s: FP16 engines differ from the FP32 reference (%s); rebuilding in FP32",
                    group,
                    outcome.detail,
                )
                for n in names:
                    builds[n] = build_engine(
                        trt, export.graphs[n], settings, ranges, fp16=False, timing_cache=timing
                    )
                outcome = validator({n: builds[n].data for n in names})
                record["fp32_validation"] = {
                    "passed": outcome.passed,
                    "detail": outcome.detail,
                    **outcome.data,
                }
                record["fallback"] = "fp32"
            if not outcome.passed:
                raise BuildError(
                    f"{group}: engines do not reproduce the FP32 reference even in FP32 "
                    f"({outcome.detail}); keeping the previous backend"
                )
        decisions["groups"][group] = record
    for name, item in builds.items():
        decisions["graphs"][name] = {
            "precision": item.precision,
            "fp32_layers": len(item.fp32_layers),
            "profile": item.profile,
            "build_seconds": round(item.seconds, 1),
        }

    entry = cache.store(
        voice,
        key,
        {name: item.data for name, item in builds.items()},
        settings=settings.as_dict(),
        precision=decisions,
        extra={"export": str(export.directory), "voice": export.voice},
    )
    return BuildReport(entry.directory, True, reason, decisions)


# --------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk build-engines",
        description="Build TensorRT engines for one voice from its ONNX export.",
    )
    parser.add_argument("export_dir", type=Path, help="folder written by the ONNX export")
    parser.add_argument("out_dir", type=Path, help="engine cache root, e.g. /var/lib/kiosk/engines")
    parser.add_argument("--voice", default="voice", help="voice name (cache sub-folder)")
    parser.add_argument("--gpt", type=Path, help="GPT .ckpt: enables FP16-vs-FP32 validation")
    parser.add_argument("--sovits", type=Path, help="SoVITS .pth (with --gpt)")
    parser.add_argument("--fp32", action="store_true", help="build FP32 engines only")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    parser.add_argument(
        "--workspace-mib",
        type=int,
        default=WORKSPACE_BYTES >> 20,
        help=f"builder workspace limit (default {WORKSPACE_BYTES >> 20} MiB, for 8 GB Jetsons)",
    )
    parser.add_argument("--opt-level", type=int, default=None, help="builder optimization level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`kiosk build-engines EXPORT OUT [--gpt X --sovits Y]`; returns a process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = BuildSettings(
        fp16=not args.fp32,
        workspace_bytes=args.workspace_mib << 20,
        builder_optimization_level=args.opt_level,
    )
    validators: dict[str, Validator] = {}
    model_hash = None
    try:
        if args.gpt is not None:
            if args.sovits is None:
                raise BuildError("--gpt needs --sovits (the pair identifies the voice)")
            from engines.backends.tensorrt_backend import make_gpt_validator
            from engines.voice_models import load_voice_models

            voice = load_voice_models(args.gpt, args.sovits)
            validators["gpt"] = make_gpt_validator(voice.gpt)
            model_hash = hash_model_files([args.gpt, args.sovits])
        report = build_engines(
            args.export_dir,
            args.out_dir,
            voice=args.voice,
            settings=settings,
            validators=validators,
            model_hash=model_hash,
            force=args.force,
        )
    except BuildError as exc:
        log.error("%s", exc)
        return 1
    state = "built" if report.built else "up to date"
    print(f"{args.voice}: engines {state} in {report.entry_dir} ({report.reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
