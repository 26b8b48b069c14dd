"""Backend selection: forced by config, automatic order, reasons logged, fallbacks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from engines.backends import selection
from engines.backends.selection import (
    BACKEND_ORDER,
    BackendUnavailableError,
    load_voice_runtime,
    select_backend,
)


class FakeBackend:
    def __init__(self, name: str, ok: bool, why: str, load_error: Exception | None = None) -> None:
        self.name = name
        self._ok, self._why, self._load_error = ok, why, load_error

    def availability(self) -> tuple[bool, str]:
        return self._ok, self._why

    def load(self, voice: Any) -> str:
        if self._load_error is not None:
            raise self._load_error
        return f"runtime of {self.name}"


def factories(**states: Any) -> dict[str, Any]:
    """name -> (ok, why[, load error]) or an exception to raise when constructed."""
    out = {}
    for key, state in states.items():
        name = key.replace("_", "-")

        def make(options: Mapping[str, Any], name: str = name, state: Any = state) -> Any:
            if isinstance(state, Exception):
                raise state
            return FakeBackend(name, *state)

        out[name] = make
    return out


def test_order_is_fastest_first() -> None:
    assert BACKEND_ORDER == ("tensorrt", "torch-cuda", "onnxruntime", "torch-eager")


def test_auto_takes_the_first_available_and_logs_each_skip(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fakes = factories(
        tensorrt=ImportError("No module named 'tensorrt'"),
        torch_cuda=(False, "no CUDA device"),
        onnxruntime=(True, "CPUExecutionProvider"),
        torch_eager=(True, "always"),
    )
    with caplog.at_level(logging.INFO, logger=selection.__name__):
        chosen = select_backend("auto", factories=fakes)
    assert chosen.name == "onnxruntime"
    assert [name for name, _ in chosen.skipped] == ["tensorrt", "torch-cuda"]
    assert "not installed" in chosen.skipped[0][1]
    assert chosen.skipped[1][1] == "no CUDA device"
    text = caplog.text
    assert "tensorrt skipped: not installed" in text
    assert "torch-cuda skipped: no CUDA device" in text
    assert "onnxruntime chosen automatically: CPUExecutionProvider" in text


def test_broken_backend_constructor_is_a_reason_not_a_crash() -> None:
    fakes = factories(tensorrt=RuntimeError("boom"), torch_eager=(True, "always"))
    chosen = select_backend(None, factories=fakes, order=("tensorrt", "torch-eager"))
    assert chosen.name == "torch-eager"
    assert "failed to initialise (RuntimeError: boom)" in chosen.skipped[0][1]


def test_forced_backend_is_used_even_if_a_faster_one_exists(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fakes = factories(tensorrt=(True, "engines ok"), torch_eager=(True, "always"))
    with caplog.at_level(logging.INFO, logger=selection.__name__):
        chosen = select_backend("Torch-Eager", factories=fakes)
    assert chosen.name == "torch-eager" and chosen.reason.startswith("set in config")
    assert "backend torch-eager (set in config)" in caplog.text


def test_forced_backend_that_cannot_run_raises_with_reason() -> None:
    fakes = factories(torch_cuda=(False, "no CUDA device"), torch_eager=(True, "always"))
    with pytest.raises(BackendUnavailableError, match=r"torch-cuda.*no CUDA device"):
        select_backend("torch-cuda", factories=fakes)
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        select_backend("cuda-magic", factories=fakes)


def test_nothing_available_lists_every_reason() -> None:
    fakes = factories(torch_cuda=(False, "no CUDA device"), torch_eager=(False, "disabled"))
    with pytest.raises(BackendUnavailableError, match="torch-cuda: no CUDA device; torch-eager"):
        select_backend("auto", factories=fakes, order=("torch-cuda", "torch-eager"))


def test_load_failure_in_auto_mode_moves_to_the_next_backend(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fakes = factories(
        tensorrt=(True, "TensorRT 10.3", RuntimeError("no valid engines: key changed")),
        torch_cuda=(True, "Orin"),
    )
    with caplog.at_level(logging.INFO, logger=selection.__name__):
        runtime, chosen = load_voice_runtime(object(), factories=fakes)  # type: ignore[arg-type]
    assert runtime == "runtime of torch-cuda"
    assert chosen.skipped[0][0] == "tensorrt" and "key changed" in chosen.skipped[0][1]
    assert "tensorrt skipped: load failed" in caplog.text


def test_load_failure_of_a_forced_backend_raises() -> None:
    fakes = factories(tensorrt=(True, "ok", RuntimeError("no engines")))
    with pytest.raises(BackendUnavailableError, match="failed to load: no engines"):
        load_voice_runtime(object(), "tensorrt", factories=fakes)  # type: ignore[arg-type]


def test_real_factories_on_this_machine() -> None:
    """Whatever the host: the CPU reference is always reachable, and GPU skips say why."""
    chosen = select_backend("auto", {"engine_dir": "/nonexistent/engines"})
    reasons = dict(chosen.skipped)
    assert chosen.name in BACKEND_ORDER
    if "torch-cuda" in reasons:
        assert "CUDA" in reasons["torch-cuda"]
    if "tensorrt" in reasons:
        assert reasons["tensorrt"]
    eager = select_backend("torch-eager")
    assert eager.name == "torch-eager"


# ------------------------------------------------------------------ lazy models, graph folders
class GraphBackend(FakeBackend):
    """A backend that can load without the torch models (like ONNX Runtime, TensorRT)."""

    def __init__(self, name: str, options: Mapping[str, Any], fail: bool = False) -> None:
        super().__init__(name, True, "ok")
        self.options, self.fail = options, fail
        self.calls: list[dict[str, Any]] = []

    def load_graphs(self, *, models: Any = None, sources: Any = None) -> str:
        self.calls.append({"models": models, "sources": sources})
        if self.fail:
            models()  # like an export on demand: needs the models, then fails anyway
            raise RuntimeError("graphs unusable")
        return f"graphs of {self.name}"


def _counting_loader() -> tuple[Any, list[int]]:
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        return "models"

    return load, calls


def test_lazy_models_are_not_loaded_when_graphs_suffice() -> None:
    seen: list[GraphBackend] = []

    def onnx(options: Mapping[str, Any]) -> GraphBackend:
        seen.append(GraphBackend("onnxruntime", options))
        return seen[-1]

    load, calls = _counting_loader()
    exporter = object()
    runtime, _ = load_voice_runtime(
        None, "onnxruntime", {"onnxruntime": {"gpt_precision": "fp32"}},
        factories={"onnxruntime": onnx}, models=load, sources={"gpt": {"sha256": "x"}},
        graphs_dir="graphs", export=exporter,  # type: ignore[arg-type]
    )  # fmt: skip
    assert runtime == "graphs of onnxruntime" and calls == []
    assert seen[0].options["onnxruntime"] == {
        "gpt_precision": "fp32", "graphs_dir": "graphs", "export": exporter,
    }  # fmt: skip
    assert seen[0].calls[0]["sources"] == {"gpt": {"sha256": "x"}}


def test_lazy_models_load_once_for_a_torch_fallback() -> None:
    load, calls = _counting_loader()
    fakes = {
        "tensorrt": lambda options: GraphBackend("tensorrt", options, fail=True),
        "torch-eager": lambda options: FakeBackend("torch-eager", True, "reference"),
    }
    runtime, chosen = load_voice_runtime(
        models=load, factories=fakes, order=("tensorrt", "torch-eager")
    )
    assert runtime == "runtime of torch-eager" and chosen.skipped[0][0] == "tensorrt"
    assert calls == [1]  # loaded by the failed backend, reused by the fallback
    with pytest.raises(ValueError, match="needs `voice` or `models`"):
        load_voice_runtime(factories=fakes)


def test_loader_kept_by_a_runtime_holds_no_models_after_loading() -> None:
    kept: list[Any] = []

    class Keeper(FakeBackend):
        def load_graphs(self, *, models: Any = None, sources: Any = None) -> str:
            kept.append(models)
            models()
            return "kept"

    load, calls = _counting_loader()
    load_voice_runtime(models=load, factories={"tensorrt": lambda o: Keeper("tensorrt", True, "")},
                       order=("tensorrt",))  # fmt: skip
    kept[0]()
    kept[0]()
    assert calls == [1, 1, 1]  # after the selection each call loads afresh: nothing cached
