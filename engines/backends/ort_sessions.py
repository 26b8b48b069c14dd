"""ONNX Runtime sessions: options, providers, and opening a voice's graphs early.

Opening the four graphs of a full-size voice takes ONNX Runtime over a second
of native work that does not hold Python's lock.  A process that knows which
voice it will speak with (`kiosk say --voice-folder`) can start that work
first, on a second core, and load torch, the text frontend and BERT meanwhile:
`open_early` starts it, and `open_session` hands out a session opened early
when the file, providers and threads are the ones asked for (and opens one
itself otherwise).  Sessions nobody asked for are dropped by `drop_early`.
This module imports neither torch nor the graph definitions, so it can run
before they load.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engines.onnx_graphs.files import GRAPH_FILES, read_manifest
from engines.threads import configure_onnxruntime

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
#: `gpt_precision` values: "auto" = 8-bit weights where the build validated them,
#: else FP32; "int8" = 8-bit weights even without a passing check (benchmarks,
#: listening tests); "fp32" = never 8-bit.
GPT_PRECISIONS = ("auto", "fp32", "int8")
#: Device nodes of an NVIDIA GPU (desktop driver, Jetson): there "auto" picks a GPU backend.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvhost-ctrl-gpu")


class GraphMismatchError(RuntimeError):
    """A graph file loads but is not the graph we expect (foreign or outdated)."""


def onnxruntime_module() -> Any:
    """onnxruntime, imported on first use (a box without it still runs torch eager)."""
    import onnxruntime

    return onnxruntime


def session_options(intra_op_threads: int | None = None) -> Any:
    """Sequential execution, full graph optimisation, `intra_op_threads` (default: cores)."""
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Intra-op workers sized to our cores and blocking, not spinning: on a shared CPU
    # spinning workers cost more than the core they wait for (see `engines.threads`).
    configure_onnxruntime(options, intra_op_threads)
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    return options


def choose_providers(preferred: Sequence[str] | None = None) -> list[str]:
    """CUDA EP first when this onnxruntime build has it, CPU always last."""
    available = onnxruntime_module().get_available_providers()
    wanted = list(preferred) if preferred is not None else [CUDA_EP, CPU_EP]
    chosen = [p for p in wanted if p in available]
    return chosen if CPU_EP in chosen else [*chosen, CPU_EP]


def decode_choice(
    manifest: Mapping[str, Any], gpt_precision: str, first_provider: str
) -> tuple[str, int, str]:
    """(precision, log level, why) of the GPT decode weights an export folder runs with.

    8-bit weights where asked for or validated by the build step, on the CPU EP
    only; the level says how loudly to report the choice.
    """
    if gpt_precision == "fp32":
        return "fp32", logging.DEBUG, "FP32 as configured"
    if first_provider != CPU_EP:
        return "fp32", logging.INFO, "the 8-bit graph is only validated for the CPU EP"
    graphs = manifest.get("graphs") or {}
    verdict = (graphs.get("gpt_decode_int8") or {}).get("validation") or {}
    if gpt_precision == "int8":
        if verdict.get("passed") is not True:
            detail = verdict.get("detail")
            why = f"as asked, although its greedy-token check did not pass ({detail})"
            return "int8", logging.WARNING, why
        return "int8", logging.INFO, "as asked"
    if verdict.get("passed") is True:
        return "int8", logging.INFO, str(verdict.get("detail", "validated"))
    detail = verdict.get("detail", "no verdict recorded")
    return "fp32", logging.WARNING, f"the 8-bit graph failed its greedy-token check ({detail})"


def graph_files(folder: Path, manifest: Mapping[str, Any], precision: str) -> list[Path]:
    """The four graphs a voice runs, for a decode in `precision`."""
    decode = "gpt_decode_int8" if precision == "int8" else "gpt_decode"
    names = ("gpt_prefill", decode, "sovits_encoder", "sovits_flow_vocoder")
    return [folder / GRAPH_FILES[name] for name in names]


# ----------------------------------------------------------------------- opened early

_early: dict[tuple[object, ...], Future[Any]] = {}
_early_lock = threading.Lock()


def _key(path: Path, providers: Sequence[str], intra_op_threads: int | None) -> tuple[object, ...]:
    """What makes two sessions interchangeable: the very file, providers and threads."""
    stat = path.stat()
    resolved = str(path.resolve())
    return (resolved, stat.st_size, stat.st_mtime_ns, tuple(providers), intra_op_threads)


def _new_session(path: Path, providers: Sequence[str], intra_op_threads: int | None) -> Any:
    return onnxruntime_module().InferenceSession(
        str(path), sess_options=session_options(intra_op_threads), providers=list(providers)
    )


def open_early(
    folder: str | Path,
    *,
    gpt_precision: str = "auto",
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
) -> int:
    """Start opening the graphs of export folder `folder` in a background thread.

    Returns how many graphs were queued (0 when the folder has no manifest).
    Nothing is checked here: the backend still verifies the folder, and a
    session opened early is used only for the very file it was opened from.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return 0
    chosen = choose_providers(providers)
    precision, _, _ = decode_choice(manifest, gpt_precision, chosen[0])
    jobs: list[tuple[Path, Future[Any]]] = []
    with _early_lock:
        for path in graph_files(folder, manifest, precision):
            try:
                key = _key(path, chosen, intra_op_threads)
            except OSError:
                continue  # a missing graph: the backend reports it
            if key not in _early:
                _early[key] = Future()
                jobs.append((path, _early[key]))

    def work() -> None:
        for path, future in jobs:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(_new_session(path, chosen, intra_op_threads))
            except BaseException as exc:  # handed to whoever asks for this session
                future.set_exception(exc)

    if jobs:
        # Not a daemon thread: a process that exits (even on a usage error) waits for the
        # session being opened instead of killing ONNX Runtime mid-way, which aborts the
        # process.  `drop_early` cancels the ones not begun, so the wait is one session.
        threading.Thread(target=work, name="ort-open-early").start()
        log.debug("opening %d graphs of %s early", len(jobs), folder)
    return len(jobs)


def gpu_present() -> bool:
    """Whether an NVIDIA GPU's device node exists (then "auto" would not pick ONNX Runtime)."""
    return any(os.path.exists(node) for node in GPU_DEVICE_NODES)


def drop_early() -> None:
    """Forget sessions opened early that nobody asked for (their memory is freed)."""
    with _early_lock:
        pending = list(_early.values())
        _early.clear()
    for future in pending:
        future.cancel()  # not yet started: never opened


def open_session(
    path: Path,
    expected_io: tuple[Sequence[str], Sequence[str]],
    providers: Sequence[str],
    intra_op_threads: int | None,
) -> Any:
    """An `InferenceSession` for `path` (one opened early if there is), after checking its IO."""
    session = None
    try:
        key = _key(path, providers, intra_op_threads)
    except OSError:
        key = None
    with _early_lock:
        future = _early.pop(key, None) if key is not None else None
    if future is not None and not future.cancelled():
        try:
            session = future.result()
        except Exception as exc:  # opened again below, where the error is raised properly
            log.debug("early session for %s failed (%s); opening it again", path.name, exc)
    if session is None:
        session = _new_session(path, providers, intra_op_threads)
    got = (
        tuple(i.name for i in session.get_inputs()),
        tuple(o.name for o in session.get_outputs()),
    )
    if got != (tuple(expected_io[0]), tuple(expected_io[1])):
        raise GraphMismatchError(f"{path.name}: IO {got} is not the expected {expected_io}")
    return session


__all__ = [
    "CPU_EP",
    "CUDA_EP",
    "GPT_PRECISIONS",
    "GraphMismatchError",
    "choose_providers",
    "decode_choice",
    "drop_early",
    "gpu_present",
    "onnxruntime_module",
    "open_early",
    "open_session",
    "session_options",
]
