"""The fast boot path: graphs opened before torch loads, no torch in the CLI's imports,
long-lived tables built without the cyclic collector."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from engines.backends import ort_sessions
from engines.gc_tables import permanent
from engines.onnx_graphs.files import GRAPH_FILES, MANIFEST

IDENTITY_IO = (("x",), ("y",))


def _identity_graph(path: Path, output: str = "y") -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [output])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _export_folder(root: Path, int8_passed: bool = False) -> Path:
    folder = root / "graphs"
    folder.mkdir()
    for name in GRAPH_FILES.values():
        _identity_graph(folder / name)
    validation = {"passed": int8_passed, "detail": "test"}
    manifest = {"graphs": {"gpt_decode_int8": {"validation": validation}}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.fixture(autouse=True)
def _no_leftovers():
    yield
    ort_sessions.drop_early()


def _cpu() -> list[str]:
    return ort_sessions.choose_providers([ort_sessions.CPU_EP])


def test_sessions_opened_early_are_handed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _export_folder(tmp_path)
    opened: list[str] = []
    real = ort_sessions._new_session

    def counting(path: Path, *args: object) -> object:
        opened.append(path.name)
        return real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ort_sessions, "_new_session", counting)
    assert ort_sessions.open_early(folder, providers=[ort_sessions.CPU_EP]) == 4
    # The 8-bit graph failed its check: the FP32 decode graph is the one opened.
    for name in ("gpt_prefill", "gpt_decode", "sovits_encoder", "sovits_flow_vocoder"):
        session = ort_sessions.open_session(folder / GRAPH_FILES[name], IDENTITY_IO, _cpu(), None)
        assert [o.name for o in session.get_outputs()] == ["y"]
    assert sorted(opened) == sorted(
        GRAPH_FILES[n] for n in ("gpt_prefill", "gpt_decode", "sovits_encoder",
                                 "sovits_flow_vocoder")
    )  # fmt: skip
    assert ort_sessions._early == {}  # every early session was taken, none opened twice


def test_early_sessions_follow_the_int8_verdict(tmp_path: Path) -> None:
    folder = _export_folder(tmp_path, int8_passed=True)
    assert ort_sessions.open_early(folder, providers=[ort_sessions.CPU_EP]) == 4
    names = {Path(key[0]).name for key in ort_sessions._early}
    assert "gpt_decode_int8.onnx" in names and "gpt_decode.onnx" not in names


def test_other_settings_or_a_changed_file_open_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _export_folder(tmp_path)
    ort_sessions.open_early(folder, providers=[ort_sessions.CPU_EP])
    for future in list(ort_sessions._early.values()):
        future.result(timeout=60)
    prefill = folder / GRAPH_FILES["gpt_prefill"]
    _identity_graph(prefill, output="z")  # re-exported after the early open
    session = ort_sessions.open_session(prefill, (("x",), ("z",)), _cpu(), None)
    assert [o.name for o in session.get_outputs()] == ["z"]  # not the stale early session
    # Another thread count is another session: the early one stays unclaimed ...
    decode = folder / GRAPH_FILES["gpt_decode"]
    ort_sessions.open_session(decode, IDENTITY_IO, _cpu(), 1)
    assert any(Path(k[0]).name == "gpt_decode.onnx" for k in ort_sessions._early)
    ort_sessions.drop_early()  # ... until it is dropped
    assert ort_sessions._early == {}


def test_a_graph_that_fails_early_fails_clearly_when_asked_for(tmp_path: Path) -> None:
    folder = _export_folder(tmp_path)
    broken = folder / GRAPH_FILES["sovits_encoder"]
    broken.write_bytes(b"not a graph")
    ort_sessions.open_early(folder, providers=[ort_sessions.CPU_EP])
    with pytest.raises(Exception, match=r"(?i)protobuf|invalid|load"):
        ort_sessions.open_session(broken, IDENTITY_IO, _cpu(), None)
    with pytest.raises(ort_sessions.GraphMismatchError, match="not the expected"):
        ort_sessions.open_session(
            folder / GRAPH_FILES["sovits_flow_vocoder"], (("x",), ("w",)), _cpu(), None
        )


def test_no_manifest_opens_nothing(tmp_path: Path) -> None:
    assert ort_sessions.open_early(tmp_path) == 0
    assert ort_sessions._early == {}


def test_decode_choice() -> None:
    passed = {"graphs": {"gpt_decode_int8": {"validation": {"passed": True, "detail": "ok"}}}}
    failed = {"graphs": {"gpt_decode_int8": {"validation": {"passed": False}}}}
    cpu, cuda = ort_sessions.CPU_EP, ort_sessions.CUDA_EP
    assert ort_sessions.decode_choice(passed, "auto", cpu)[0] == "int8"
    assert ort_sessions.decode_choice(failed, "auto", cpu)[0] == "fp32"
    assert ort_sessions.decode_choice({}, "auto", cpu)[0] == "fp32"
    assert ort_sessions.decode_choice(passed, "fp32", cpu)[0] == "fp32"
    assert ort_sessions.decode_choice(failed, "int8", cpu)[0] == "int8"
    assert ort_sessions.decode_choice(passed, "auto", cuda)[0] == "fp32"


def test_the_cli_imports_no_torch_before_it_opens_the_graphs() -> None:
    """`kiosk` must reach `open_early` before torch (1-2 s) has loaded."""
    code = (
        "import sys\n"
        "import appliance.cli, engines.backends.ort_sessions, engines.voice_layout\n"
        "import engines.onnx_graphs.files\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_cli_opens_graphs_early_only_for_say_on_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance import cli

    asked: list[Path] = []

    def fake_open_early(folder: Path, **kw: object) -> int:
        asked.append(folder)
        return 4

    monkeypatch.setattr(ort_sessions, "open_early", fake_open_early)
    monkeypatch.setattr(ort_sessions, "gpu_present", lambda: False)
    voice = str(tmp_path / "v")
    cli._open_graphs_early(["say", "--voice-folder", voice, "--text", "你好", "-o", "x.wav"])
    cli._open_graphs_early(["-v", "say", "--backend", "onnxruntime", "--voice-folder", voice])
    assert asked == [tmp_path / "v" / "graphs"] * 2
    cli._open_graphs_early(["say", "--voice-folder", voice, "--backend", "torch-eager"])
    cli._open_graphs_early(["say", "--gpt", "g.ckpt", "--text", "x"])
    cli._open_graphs_early(["provision", "--voice-folder", voice])
    monkeypatch.setattr(ort_sessions, "gpu_present", lambda: True)
    cli._open_graphs_early(["say", "--voice-folder", voice])  # auto picks the GPU there
    assert len(asked) == 2


def test_an_exit_waits_for_one_session_not_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that stops early (a usage error) must not kill ONNX Runtime mid-way (that
    aborts it, exit 134): the opener is not a daemon thread, and `drop_early` leaves it only
    the session it is opening."""
    import threading
    import time

    folder = _export_folder(tmp_path)
    opened: list[str] = []
    real = ort_sessions._new_session

    def slow(path: Path, *args: object) -> object:
        time.sleep(0.3)
        opened.append(path.name)
        return real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ort_sessions, "_new_session", slow)
    ort_sessions.open_early(folder, providers=[ort_sessions.CPU_EP])
    (opener,) = [t for t in threading.enumerate() if t.name == "ort-open-early"]
    assert not opener.daemon
    time.sleep(0.1)
    ort_sessions.drop_early()
    opener.join(5)
    assert not opener.is_alive() and len(opened) == 1


def test_the_cli_drops_early_sessions_on_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance import cli

    dropped: list[bool] = []
    monkeypatch.setattr(ort_sessions, "gpu_present", lambda: False)
    monkeypatch.setattr(ort_sessions, "open_early", lambda folder, **kw: 4)
    monkeypatch.setattr(ort_sessions, "drop_early", lambda: dropped.append(True))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["say", "--voice-folder", str(tmp_path), "--seed", "not a number"])
    assert exit_.value.code == 2 and dropped == [True]


def test_permanent_freezes_and_restores_the_collector() -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()
    with permanent():
        assert not gc.isenabled()
        tables = [[i] for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= before + len(tables)
    gc.disable()
    try:
        with permanent():
            pass
        assert not gc.isenabled()  # an outer "off" stays off
    finally:
        gc.enable()
        gc.unfreeze()
